#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/i4"] (~1 min; the same binary as i4.sh, whose GEMVs are
# main's). Prepared, not run. q6_k at 4096 × 14336 is the one issue-6 shape no launch shape brings over
# 75.5 % of copy (12-07g sweep, PREFETCH on as for every plain Q6_K GEMV). Whether the prefetch, which
# took the H200 from 67.7 to 82.8 % there, also pays on the H100: PREFETCH 0 / 1 at the automatic shape
# (64 threads, four rows) and at 128 and 32 threads, twice. $OUT/q6k_pf.txt
# BIN=<binary> times another build (12-07k: main's).
source .gl/setup.sh
BIN=${BIN:-target/exp/i4/u}
[ -f $BIN ] || xz -dk $BIN.xz
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/q6k_pf.txt
for round in 1 2; do
  for t in auto 128,4 32,4; do
    for pf in 0 1; do
      E="TORCHLESS_QGEMV_PREFETCH=$pf"; [ $t = auto ] || E="$E TORCHLESS_QGEMV_TUNE=$t"
      echo "=== $t PREFETCH=$pf" >> $OUT/q6k_pf.txt
      env TORCHLESS_BENCH_QGEMV_COLS=14336 $E timeout 30 $BIN bench --backend gpu --mib 46 --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/q6k_pf.txt
    done
  done
done
