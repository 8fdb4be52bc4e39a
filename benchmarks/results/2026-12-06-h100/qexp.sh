#!/bin/bash
# Where the quantized GEMV's time goes (2026-12-06): the GEMV alone (`gemv_q*_xq`, x quantized outside the
# timed runs) at 14336 x 4096 and 4096 x 14336, Q4_K and Q4_0, with TORCHLESS_EXP_QGEMV (qexp_switches.diff):
# 0 as committed; 1 x's hi bytes only (half the integer dots: what a one-byte x would give); 2 the weights'
# loads only (no arithmetic, no x); 3 the weights' and x's loads only. The build is 02b722b + the diff
# (target/release/torchless); then kern.sh with the same build (switch unset). Writes $OUT/qexp/.
source .gl/setup.sh
R=$OUT/qexp; mkdir -p $R; B=./target/release/torchless
for e in 0 1 2 3 0; do
  for cols in 4096 14336; do
    TORCHLESS_EXP_QGEMV=$e TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 40 $B bench --backend gpu --mib 32 --json \
      --ops gemv_q4_k_xq,gemv_q4_0_xq >> $R/e${e}_c$cols.json 2>> $R/e${e}_c$cols.err
  done
done
bash benchmarks/results/2026-12-06-h100/kern.sh
