#!/bin/bash
# GPU machine (H100 or H200), carry [".gl", "target/exp/n61"]; most important first (the device budget
# left, ~400 s, may cut the tail). Builds in target/exp/n61 (not in git): m6 = 3a3c042 (as in
# next59/next60), m7 = b386ca3 (main: flash attention with subgroup barriers on NVIDIA, the normed GEMVs'
# 16-byte norm-weight loads); m7ktest, m7etest: main's kernel and engine unit tests.
# 1. Every kernel and engine unit test of main on NVIDIA (the flash tests run both synchronisations). $OUT/tests.txt
# 2. flash_attention 4k causal, m6 / m7 alternating twice. $OUT/ab.txt
# 3. The quantized GEMVs alone (m7), q8_0 / q4_0 / q4_k / q6_k, 14336 × 4096 and 4096 × 14336, with x's
#    quantization launch timed and without (_xq). $OUT/qgemv.txt
# (The decode gains of m7's GEMV change were measured in next59; with ~400 s of device time left, no model
# runs here.)
source .gl/setup.sh
D=target/exp/n61
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
# The engine tests find the built-in models where the build put them.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt > $OUT/tests.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 150 $D/m7ktest --test-threads 16 2>&1 | grep -E "test result|FAILED|panicked|SKIPPED" >> $OUT/tests.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 100 $D/m7etest --test-threads 8 2>&1 | grep -E "test result|FAILED|panicked|SKIPPED" >> $OUT/tests.txt
for b in m6 m7 m6 m7; do
  echo "=== $b" >> $OUT/ab.txt
  timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $OUT/ab.txt
done
for cols in 4096 14336; do
  for mq in "32 gemv_q4_0,gemv_q4_k,gemv_q4_0_xq,gemv_q4_k_xq" "60 gemv_q8_0,gemv_q8_0_xq" "46 gemv_q6_k,gemv_q6_k_xq"; do
    set -- $mq
    env TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 40 $D/m7 bench --backend gpu --mib $1 --ops $2 2>&1 | grep -E "^gemv|rror" >> $OUT/qgemv.txt
  done
done
