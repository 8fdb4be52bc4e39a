#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/a3", "target/exp/a4"] (~7 min). Prepared, not run.
# target/exp/a4/q: main at 132c0d2 plus qput-exp.patch: TORCHLESS_EXP_QPUT picks which quantized GEMV
# launches reduce by transposing shuffles (0 none, as main; 1 all; 2 those of one team, i.e. not the
# emitting ones of 32 teams × 32 threads; 3 the Q/K/V launch only). a2 found q4_k decode 336-338 ->
# 301-324 tok/s with 1 while the GEMVs alone were no slower; the guess: the 1024-thread emitting launches
# (64 registers a thread at most) spill with the longer reduction.
# 1. Llama-3-8B q4_k decode, QPUT 0 / 1 / 2 / 3 alternating twice. $OUT/decode.txt
# 2. Profiles with 0 and 2. $OUT/prof_q4k_{0,2}.txt
# 3. a3's question, the landed combination against main: bf16 decode q / b twice (a3/b: main f58da10).
source .gl/setup.sh
for f in target/exp/a3/*.xz target/exp/a4/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
Q=target/exp/a4/q
B=target/exp/a3/b
M=/tmp/llama3-8b-random
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/decode.txt
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0"
run() { echo "=== $*" >> $OUT/decode.txt; env "$@" 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt; }
for round in 1 2; do
  for v in 0 1 2 3; do
    run TORCHLESS_EXP_QPUT=$v timeout 60 $Q $P --decode-tokens 128 --model $M --quantize q4_k
  done
done
for v in 0 2; do
  TORCHLESS_EXP_QPUT=$v timeout 60 $Q $P --decode-tokens 32 --profile --model $M --quantize q4_k > $OUT/prof_q4k_$v.txt 2>&1
done
for round in 1 2; do
  run timeout 60 $Q $P --decode-tokens 128 --model $M
  run timeout 60 $B $P --decode-tokens 128 --model $M
done
