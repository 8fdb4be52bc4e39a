#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/a3"] (~2 min). target/exp/a3/b: main (f58da10);
# target/exp/a3/l: what lands from a2: the dense GEMV's transposing `put` (the quantized one keeps
# subgroupAdd), the norm's second slot only past four rows of x, 64 threads for the Q/K/V launch.
# Llama-3-8B decode: q4_k l, bf16 l, q4_k b, bf16 b. $OUT/decode.txt
source .gl/setup.sh
D=target/exp/a3
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/decode.txt
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --decode-tokens 128"
run() { echo "=== $*" >> $OUT/decode.txt; env "$@" 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt; }
run timeout 60 $D/l $P --model $M --quantize q4_k
run timeout 60 $D/l $P --model $M
run timeout 60 $D/b $P --model $M --quantize q4_k
run timeout 60 $D/b $P --model $M
