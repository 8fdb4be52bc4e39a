#!/bin/bash
# GPU machine, after prepare_next.sh: run with carry [".gl", "target/exp"]. Top-k's counted-rank merge
# (topk9.sh's runs), then issue 3's GEMMs and attention on the H100 for the first time (device_kernels.sh's
# matmul part, main) with cuBLAS in the same call. $OUT/topk.txt, bench_matmul.json, torch_matmul.json. ~4 min.
source .gl/setup.sh
for b in main topk-rank; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt; R=./target/exp/topk-rank; M=./target/exp/main
one() { echo "=== $* --mib $mib" >> $A; env "$@" timeout 40 $R bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
E=TORCHLESS_EXP_TOPK
for mib in 256 1024; do
  one X=0; one ${E}_RANK=1; one ${E}_RANK=1 ${E}_RANKMAX=128; one ${E}_RANK=1 ${E}_RANKMAX=64; one X=0; one ${E}_RANK=1
done
{
  for mib in 32 112 1002; do timeout 60 $M bench --backend gpu --mib $mib --json --ops gemv_f16,gemv_bf16; done
  timeout 120 $M bench --backend gpu --mib 256 --json --ops gemv_f32,gemm_f32,gemm_f16,gemm_bf16,gemm_at_b,gemm_a_bt
  for mib in 16 128; do timeout 60 $M bench --backend gpu --mib $mib --json --ops sdpa_decode; done
  timeout 120 $M bench --backend gpu --mib 160 --json --ops flash_attention
} > $OUT/bench_matmul.json 2> $OUT/bench_matmul.err
timeout 80 python3 benchmarks/torch_matmul.py --json > $OUT/torch_matmul.json 2> $OUT/torch_matmul.err
