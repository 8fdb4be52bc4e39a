#!/bin/bash
# GPU machine, after prepare29.sh, carry [".gl", "target/exp/i"]; in order of priority, ~7 min.
# base: 9f8a8d8 (12-06h's last commit); main: this session's; half: main with the tiled GEMM's depth loop
# in two written-out halves of 4 where an operand is transposed into workgroup memory (A·B, A·Bᵀ).
# 1. main's kernel unit tests: 9f8a8d8 still failed rmsnorm_of_huge_and_tiny_rows_stays_finite (NaN for
#    a row near 1e-30, eps = 0: eps·r·r with r·r = inf); main forms eps / p² through the exponent.
# 2. Tiled f32 GEMM, base / main / half alternating: main writes the depth loop out for Aᵀ·B only.
# 3. Q4_K GEMV alone at both shapes and Llama-3-8B q4_k decode, base / main: main takes 64 threads for
#    rows of 8192 or more in under 8192 rows (4096 × 14336), one-warp teams in the emitting launches.
# 4. The norms, base / main (row_norm's exponent arithmetic).
source .gl/setup.sh
D=target/exp/i
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
env TORCHLESS_REQUIRE_GPU=1 timeout 150 $D/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
A=$OUT/tiled.txt
for i in 1 2; do
  for b in base main half; do
    echo "=== $b tiled" >> $A
    timeout 40 $D/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
  done
done
A=$OUT/q4k.txt
for i in 1 2; do
  for cols in 4096 14336; do
    for b in base main; do
      echo "=== $b cols $cols" >> $A
      TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 40 $D/$b bench --backend gpu --mib 32 --ops gemv_q4_k_xq,gemv_q4_k 2>&1 | grep -E "^gemv|rror" >> $A
    done
  done
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for i in 1 2; do
  for b in base main; do
    echo "=== $b decode q4_k" >> $A
    timeout 60 $D/$b bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 --quantize q4_k 2>&1 | grep -E "^decode|rror" >> $A
  done
done
for i in 1 2; do
  for b in base main; do
    echo "=== $b" >> $OUT/norm.txt
    timeout 60 $D/$b bench --backend gpu --mib 256 --ops rmsnorm,add_rmsnorm,layernorm 2>&1 | grep -E "^(rms|add|layer)|rror" >> $OUT/norm.txt
  done
done
