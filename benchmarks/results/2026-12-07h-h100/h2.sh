#!/bin/bash
# GPU machine, carry [".gl", "target/exp/h2", "target/release/torchless"] (~3 min). Llama-3-8B decode at
# context 512 ($OUT/sw/):
# - q4_k, branch emit-prefetch (target/exp/h2/pe): weight prefetch in the emitting K-quant GEMVs,
#   TORCHLESS_EXP_EMIT_PF=1 for O and down, 2 for gate/up as well, 0 main's behaviour. The emitting down
#   projection runs 128 workgroups of 32 one-warp teams, half the warps of the GEMV alone (53 % of copy in
#   decode against 81 % alone), so more loads in flight per warp may pay there. A profile with 1.
# - q4_k and bf16 with attention in one launch of one split (TORCHLESS_DECODE_TUNE=0,256,0,1) instead of
#   9 splits and a merge launch.
mkdir -p $OUT/sw
source .gl/setup.sh
for f in target/exp/h2/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
T=./target/release/torchless
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 240 python3 scripts/make_random_llama.py --out $M > $OUT/make.txt 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --quantize q4_k"
for v in 0 1 2 0 1 2; do
  echo "=== q4_k pe EMIT_PF=$v" >> $OUT/sw/decode.txt
  env TORCHLESS_EXP_EMIT_PF=$v timeout 60 target/exp/h2/pe $P --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/sw/decode.txt
done
for round in 1 2; do
  echo "=== q4_k pe EMIT_PF=0 TORCHLESS_DECODE_TUNE=0,256,0,1 (round $round)" >> $OUT/sw/decode.txt
  env TORCHLESS_DECODE_TUNE=0,256,0,1 timeout 60 target/exp/h2/pe $P --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/sw/decode.txt
done
# The same attention switch in bf16 decode (a launch saved is a larger share of a q4_k token, but bf16's
# target, 85 %, is nearer).
for v in "" TORCHLESS_DECODE_TUNE=0,256,0,1 "" TORCHLESS_DECODE_TUNE=0,256,0,1; do
  echo "=== bf16 ${v:-main}" >> $OUT/sw/decode.txt
  env $v timeout 60 $T bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/sw/decode.txt
done
env TORCHLESS_EXP_EMIT_PF=1 timeout 60 target/exp/h2/pe $P --decode-tokens 32 --profile > $OUT/sw/prof_pf1.txt 2>&1
