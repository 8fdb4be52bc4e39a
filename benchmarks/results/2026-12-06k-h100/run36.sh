#!/bin/bash
# GPU machine, carry [".gl", "target/exp/m"] (stripped, xz: base = 86dd0ca (main at the session's start),
# pack = branch gemm-pack (the tiled GEMM's operands rewritten depth-major first), prev = 4fc347d (before
# any NaN handling)), ~4 min:
# 1. gemm_f32 / gemm_a_bt / gemm_at_b at 4096³, base and pack alternating twice; gemm_f32 / gemm_a_bt
#    at 1024³ and 2048³. $OUT/gemm.txt; cuBLAS in the same call (after the 4096³ rounds).
#    $OUT/torch_matmul.json
# 2. softmax at 256 MiB and 1 GiB, prev and base (the H100's softmax target);
#    flash_attention on base. $OUT/cost.txt
source .gl/setup.sh
D=target/exp/m
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
G=$OUT/gemm.txt
for i in 1 2; do
  for b in base pack; do
    echo "=== $b" >> $G
    timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_a_bt,gemm_at_b 2>&1 | grep -E "^gemm|rror" >> $G
  done
done
timeout 120 python3 benchmarks/torch_matmul.py --json > $OUT/torch_matmul.json 2> $OUT/torch_matmul.err
# Smaller products (1024³ and 2048³), where the copy weighs more against the product.
for b in base pack; do
  echo "=== $b" >> $G
  for mib in 12 48; do
    timeout 60 $D/$b bench --backend gpu --mib $mib --ops gemm_f32,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $G
  done
done
A=$OUT/cost.txt
for i in 1; do
  for b in prev base; do
    echo "=== $b" >> $A
    for mib in 256 1024; do
      timeout 40 $D/$b bench --backend gpu --mib $mib --ops softmax 2>&1 | grep -E "^soft|rror" >> $A
    done
  done
done
echo "=== base" >> $A
timeout 40 $D/base bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $A
