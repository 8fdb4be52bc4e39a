#!/bin/bash
# Quantized GEMV/GEMM figures (issue 6: ≥ 80 % of copy bandwidth on the quantized bytes for q8_0, q4_0, q4_k
# and q6_k at 4096 × 14336 and 14336 × 4096). On the GPU machine, from the repo root, with .gl/ and
# target/release/torchless beside it: OUT=/some/dir bash benchmarks/device_quant.sh
# Each run prints the device copy bandwidth it compares with; `bytes` of a gemv_q case are the quantized
# weight bytes only. Rows are rounded down to a multiple of 512, so these --mib values give exactly
# 14336 rows of 4096 (default) and 4096 rows of 14336 (TORCHLESS_BENCH_QGEMV_COLS=14336).
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; B="${B:-./target/release/torchless}"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; } \
  > "$OUT/env_quant.txt" 2>&1
{
  for spec in "gemv_q4_0 32" "gemv_q4_k 32" "gemv_q8_0 60" "gemv_q6_k 46"; do
    set -- $spec
    for cols in 4096 14336; do
      TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 60 $B bench --backend gpu --mib "$2" --json --ops "$1"
    done
  done
  timeout 120 $B bench --backend gpu --mib 32 --json --ops gemv_q4_1,gemv_q5_0,gemv_q5_1,gemv_q5_k
  timeout 120 $B bench --backend gpu --mib 256 --json --ops gemm_q4_k,gemm_q8_0
} > "$OUT/bench_quant.json" 2> "$OUT/bench_quant.err"
echo done >> "$OUT/env_quant.txt"
