#!/bin/bash
# GPU machine, after prepare28.sh, carry [".gl", "target/exp/h"]; in order of priority (what finishes
# before the call's limit comes back), ~9 min.
# 1. main's kernel unit tests (ktest). 12-06g's (a07728c) failed two norm tests on the H100:
#    rmsnorm_of_huge_and_tiny_rows_stays_finite (0 for a row near f32's largest: its 1/rms factor is
#    subnormal, which NVIDIA flushes) and layernorm_is_exact_on_constant_rows... (NaN). cf8ab06 keeps 1/p
#    and the row's scale apart in the output (lavapipe with subnormals flushed then passes both, and fails
#    both without it); 6e9e8d2 also scales values that are summed through the exponent (ldexp), in case
#    the NaN came from NVIDIA's compiler factoring the scale out of a sum (lavapipe gave 0, not NaN).
#    $OUT/ktest.txt.
# 2. The norms' speed, main against a07728c (old), alternating twice. $OUT/norm.txt.
# 3. Q4_K GEMV, 64 threads a workgroup under 8192 rows (q4k64, branch q4k-wg64): 12-06h's tests25 found
#    4096 x 14336 at 79.9 % of copy with 64,2 against 73.7 % automatic (32,2), 14336 x 4096 unchanged.
#    The GEMV alone at both shapes and Llama-3-8B q4_k decode (its Q/K/V launch changes), alternating;
#    also main's decode with TORCHLESS_QGEMV_TUNE=32,1 (one row a workgroup in the plain launches, Q/K/V
#    and the LM head; the emitting ones keep one-warp teams of one row): the Q/K/V + RoPE launch ran at
#    26 % of copy on 12-06g, with 3072 one-warp workgroups. $OUT/q4k.txt.
# 4. 12-06g's tiled f32 GEMM experiments (tk16, kreg) and the double-buffered cooperative core (cdb),
#    against main. Target: tiled A·B 36.3 TFLOP/s (70 % of cuBLAS; 33.6 on 12-06f). $OUT/ab.txt.
source .gl/setup.sh
D=target/exp/h
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
env TORCHLESS_REQUIRE_GPU=1 timeout 150 $D/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
for i in 1 2; do
  for b in old main; do
    echo "=== $b" >> $OUT/norm.txt
    timeout 60 $D/$b bench --backend gpu --mib 256 --ops rmsnorm,add_rmsnorm,layernorm 2>&1 | grep -E "^(rms|add|layer)|rror" >> $OUT/norm.txt
  done
done
A=$OUT/q4k.txt
for i in 1 2; do
  for cols in 4096 14336; do
    for b in main q4k64; do
      echo "=== $b cols $cols" >> $A
      TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 40 $D/$b bench --backend gpu --mib 32 --ops gemv_q4_k_xq 2>&1 | grep -E "^gemv|rror" >> $A
    done
  done
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for i in 1 2; do
  for b in main q4k64 main-32x1; do
    echo "=== $b decode q4_k" >> $A
    T=X=0; [ $b = main-32x1 ] && T=TORCHLESS_QGEMV_TUNE=32,1
    env $T timeout 60 $D/${b%-32x1} bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 --quantize q4_k 2>&1 | grep -E "^decode|rror" >> $A
  done
done
A=$OUT/ab.txt
for b in main tk16 kreg main tk16 kreg; do
  echo "=== $b tiled" >> $A
  timeout 40 $D/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
done
for b in main cdb main cdb; do
  echo "=== $b coop" >> $A
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $A
done
