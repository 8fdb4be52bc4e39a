#!/bin/bash
# GPU machine, carry [".gl", "target/exp/g3", "target/release/torchless"] (~6 min):
# 1. 2026-12-07g's next64.sh (branch emit-split, one team of the plain GEMV's shape per split
#    workgroup) into $OUT/g3/;
# 2. next65.sh (main's q6_k GEMV, one row a workgroup against auto at three sizes) into $OUT/q6k/.
D=benchmarks/results/2026-12-07g-h100
mkdir -p $OUT/g3 $OUT/q6k
OUT=$OUT/g3 bash $D/next64.sh
OUT=$OUT/q6k bash $D/next65.sh
# main's decode, q4_k and bf16, so that h1 and h2 give the same build's figures on whichever cards they
# get (an H100 and an H200 apart: how much of a token scales with the bandwidth).
source .gl/setup.sh
M=/tmp/llama3-8b-random
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --decode-tokens 128"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/main_decode.txt
for q in "--quantize q4_k" "" "--quantize q4_k" ""; do
  timeout 60 ./target/release/torchless $P $q 2>&1 | grep -E "decode \(|rror" >> $OUT/main_decode.txt
done
