#!/bin/bash
# Top-k switches (topk_switches.diff on 60ef2c9: PAIRS an override, a vector pre-test, and the
# TORCHLESS_EXP_TOPK_* switches), against torchless_nopre (60ef2c9). $OUT/all.txt. ~2.5 min.
source .gl/setup.sh
A=$OUT/all.txt; R=./target/release
tar xJf $R/variants.tar.xz -C $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
one() { echo "=== $* --mib $mib" >> $A; env "$@" timeout 60 $R/torchless$SUF bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "topk|copy bandwidth:" | head -2 >> $A; }
for mib in 256 1024; do
  SUF=_nopre one X=1
  SUF= one TORCHLESS_EXP_TOPK_PRE=1
  SUF= one TORCHLESS_EXP_TOPK_PRE=0
  SUF= one TORCHLESS_EXP_TOPK_CEIL=1
  SUF= one TORCHLESS_EXP_TOPK_MA=1
  SUF= one TORCHLESS_EXP_TOPK_PRE=0 TORCHLESS_EXP_TOPK_MA=1 TORCHLESS_EXP_TOPK_R=16
  SUF= one TORCHLESS_EXP_TOPK_CHUNKS=2
  SUF= one TORCHLESS_EXP_TOPK_CEIL=1 TORCHLESS_EXP_TOPK_CHUNKS=2
  SUF=_nopre one X=2
done
