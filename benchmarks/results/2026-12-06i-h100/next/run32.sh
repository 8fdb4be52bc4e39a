#!/bin/bash
# GPU machine, after prepare32.sh, carry [".gl", "target/exp/j"]; in order of priority, ~8 min (what
# finishes before the call's limit comes back).
# 1. Tiled f32 GEMM: main / gather / gatherw, alternating. gather reads an operand whose runs go along K
#    (A of A·B, B of A·Bᵀ) as four scalars a thread (outer indices 4g..4g+3 at one depth), so that it is
#    stored into the [depth][outer] tile as one vec4 instead of four scalar stores; gatherw also writes the
#    depth loop out in every layout (which won 32.2 → 37.1 TFLOP/s for Aᵀ·B, whose operands are staged as
#    they lie, and lost for the others). Target: A·B 36.3 TFLOP/s (70 % of cuBLAS's 51.8). $OUT/tiled.txt
# 2. main's kernel unit tests on NVIDIA: the NaN / inf tests of the norms, softmax and attention are new,
#    and the cooperative flash kernel's NaN handling runs only there. $OUT/ktest.txt
# 3. The correctness changes' cost, against prev (4fc347d): softmax reads every score's bits for NaN /
#    +inf; the attention kernels' running max keeps a NaN (nan_max) and their gates read the bits.
#    sdpa_decode at 4k and 32k keys, flash_attention, softmax and the norms, alternating. $OUT/cost.txt
# 4. Q4_K GEMV launch shapes at both issue-6 shapes (x already quantized, 32 MiB): at 32 MiB a launch's
#    fixed ~2-3 µs is a fifth of the 12 µs; fewer, larger workgroups (4 rows) may start faster. Also q6_k,
#    q4_0, q8_0 with the automatic shape (last timed on the H100 on 12-06b). $OUT/qshape.txt
source .gl/setup.sh
D=target/exp/j
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
A=$OUT/tiled.txt
for i in 1 2; do
  for b in main gather gatherw; do
    echo "=== $b tiled" >> $A
    timeout 40 $D/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
  done
done
env TORCHLESS_REQUIRE_GPU=1 timeout 100 $D/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
A=$OUT/cost.txt
for i in 1 2; do
  for b in prev main; do
    echo "=== $b" >> $A
    for mib in 16 128; do
      timeout 30 $D/$b bench --backend gpu --mib $mib --ops sdpa_decode 2>&1 | grep -E "^sdpa|rror" >> $A
    done
    timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $A
    for mib in 256 1024; do
      timeout 60 $D/$b bench --backend gpu --mib $mib --ops softmax,rmsnorm,add_rmsnorm,layernorm 2>&1 | grep -E "^(soft|rms|add|layer)|rror" >> $A
    done
  done
done
A=$OUT/qshape.txt
for cols in 4096 14336; do
  for tune in auto 32,4 64,4 128,4 32,1 64,1; do
    echo "=== cols $cols tune $tune" >> $A
    T=X=0; [ $tune = auto ] || T=TORCHLESS_QGEMV_TUNE=$tune
    env $T TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 30 $D/main bench --backend gpu --mib 32 --ops gemv_q4_k_xq 2>&1 | grep -E "^gemv|rror" >> $A
  done
  echo "=== cols $cols others" >> $A
  TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 60 $D/main bench --backend gpu --mib 32 --ops gemv_q6_k_xq,gemv_q4_0_xq,gemv_q8_0_xq 2>&1 | grep -E "^gemv|rror" >> $A
done
