#!/bin/bash
# Top-k variants, alternating in one call: this build (a vector pre-test skips units with no key at the
# threshold, ROUND_TILES 8), torchless_r4 (the same, ROUND_TILES 4), torchless_nopre (no pre-test:
# topk.sh's build), torchless_old (3f6b09d, a barrier a tile). $OUT/all.txt. ~2.5 min.
source .gl/setup.sh
A=$OUT/all.txt; R=./target/release
tar xJf $R/variants.tar.xz -C $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
for mib in 256 1024; do
  for b in torchless_old torchless torchless_r4 torchless_nopre torchless; do
    echo "=== $b --mib $mib" >> $A
    timeout 60 $R/$b bench --backend gpu --mib $mib --ops topk >> $A 2>&1
  done
done
