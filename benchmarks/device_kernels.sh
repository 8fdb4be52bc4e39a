#!/bin/bash
# Every kernel figure of BENCHMARKS.md, with PyTorch timed in the same run on the GPU machine. From the repo
# root, with .gl/ and target/release/torchless beside it: OUT=/some/dir bash benchmarks/device_kernels.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; B="${B:-./target/release/torchless}"
MEM=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,cast,copy,embedding,argmax,topk
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
$B backends > "$OUT/backends.txt" 2>&1
for mib in 256 1024; do
  timeout 170 $B bench --backend gpu --mib $mib --json --ops $MEM > "$OUT/bench_mem_$mib.json" 2> "$OUT/bench_mem_$mib.err"
done
timeout 80 python3 benchmarks/torch_reference.py 256 1024 --json > "$OUT/torch_mem.json" 2> "$OUT/torch_mem.err"
{
  for mib in 32 112 1002; do timeout 60 $B bench --backend gpu --mib $mib --json --ops gemv_f16,gemv_bf16; done
  # 4096 × 14336 (Llama-3-8B's down projection): the fourth GEMV shape.
  TORCHLESS_BENCH_GEMV_COLS=14336 timeout 60 $B bench --backend gpu --mib 112 --json --ops gemv_f16,gemv_bf16
  timeout 120 $B bench --backend gpu --mib 256 --json --ops gemv_f32,gemm_f32,gemm_f16,gemm_bf16,gemm_at_b,gemm_a_bt
  for mib in 16 128; do timeout 60 $B bench --backend gpu --mib $mib --json --ops sdpa_decode; done
  timeout 120 $B bench --backend gpu --mib 160 --json --ops flash_attention
} > "$OUT/bench_matmul.json" 2> "$OUT/bench_matmul.err"
timeout 80 python3 benchmarks/torch_matmul.py --json > "$OUT/torch_matmul.json" 2> "$OUT/torch_matmul.err"
echo done >> "$OUT/env.txt"
