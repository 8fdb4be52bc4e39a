#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] (main.xz from any prepare script): where a Llama-3-8B decode token
# goes on the H100, by launch (`bench-model --profile`, 32 tokens after 512; each launch timed alone adds
# the profiler's few µs), bf16 and q4_k, then the unprofiled rate of each in the same call. The last such
# profile is the H200's (BENCHMARKS, "Where a bf16 and a q4_k decode token go"). $OUT/prof_*.txt. ~4 min
# (making the model ~2).
source .gl/setup.sh
[ -f target/exp/main ] || xz -dk target/exp/main.xz
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
B="timeout 90 ./target/exp/main bench-model --backend gpu --model $M --context 512 --prefill-tokens 0"
$B --decode-tokens 32 --profile > $OUT/prof_bf16.txt 2>&1
$B --decode-tokens 32 --profile --quantize q4_k > $OUT/prof_q4k.txt 2>&1
$B --decode-tokens 128 > $OUT/rate_bf16.txt 2>&1
$B --decode-tokens 128 --quantize q4_k > $OUT/rate_q4k.txt 2>&1
