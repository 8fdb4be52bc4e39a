#!/bin/bash
# GPU machine (H100 or H200), carry [".gl", "target/exp/n61"]; most important first (the device budget
# left, ~600 s, may cut the tail). Builds in target/exp/n61 (not in git): m6 = 3a3c042 (as in
# next59/next60), m7 = b386ca3 (main: flash attention with subgroup barriers on NVIDIA, the normed GEMVs'
# 16-byte norm-weight loads); m7ktest, m7etest: main's kernel and engine unit tests.
# 1. Every kernel and engine unit test of main on NVIDIA (the flash tests run both synchronisations). $OUT/tests.txt
# 2. flash_attention 4k causal, m6 / m7 alternating twice. $OUT/ab.txt
# 3. The quantized GEMVs alone (m7), q8_0 / q4_0 / q4_k / q6_k, 14336 × 4096 and 4096 × 14336, with x's
#    quantization launch timed and without (_xq). $OUT/qgemv.txt
# 4. Llama-3-8B bf16 decode m6 / m7, then q4_k decode (m7), prefill of 2048 tokens bf16 (m7). $OUT/ab.txt
# 5. xLSTM-7B decode m6 / m7. $OUT/ab.txt
source .gl/setup.sh
D=target/exp/n61
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
# The engine tests find the built-in models where the build put them.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/ab.txt > $OUT/tests.txt
M=/tmp/llama3-8b-random
X=/tmp/xlstm-7b-random
# The random models are made on the CPU while the tests run.
( [ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1 ) &
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
wait
P="bench-model --backend gpu --context 512 --decode-tokens 128 --prefill-tokens 0"
for b in m6 m7; do
  timeout 60 $D/$b $P --model $M 2>&1 | grep -E "decode \(|rror" | sed "s/^/$b llama bf16 /" >> $OUT/ab.txt
done
( [ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1 ) &
timeout 90 $D/m7 $P --model $M --quantize q4_k 2>&1 | grep -E "decode \(|rror" | sed "s/^/m7 llama q4_k /" >> $OUT/ab.txt
timeout 60 $D/m7 bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 4 2>&1 | grep -E "prefill|rror" | sed "s/^/m7 llama bf16 /" >> $OUT/ab.txt
wait
for b in m6 m7; do
  timeout 60 $D/$b $P --model $X 2>&1 | grep -E "decode \(|rror" | sed "s/^/$b xlstm /" >> $OUT/ab.txt
done
