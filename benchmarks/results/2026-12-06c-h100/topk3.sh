#!/bin/bash
# Top-k with PAIRS an override (the scan's loops unroll), alternating in one call: this build (with the
# vector pre-test), torchless_np (no pre-test), torchless_ceil (pre-test against an unreachable threshold:
# the scan's loads and tests alone, wrong results), torchless_nopre (60ef2c9). $OUT/all.txt. ~2 min.
source .gl/setup.sh
A=$OUT/all.txt; R=./target/release
tar xJf $R/variants.tar.xz -C $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
for mib in 256 1024; do
  for b in torchless_nopre torchless torchless_np torchless_ceil torchless; do
    echo "=== $b --mib $mib" >> $A
    timeout 60 $R/$b bench --backend gpu --mib $mib --ops topk >> $A 2>&1
  done
done
