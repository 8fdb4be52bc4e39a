#!/bin/bash
# GPU machine, carry [".gl", "target/exp/g3", "target/release/torchless"] (~7 min):
# 1. 2026-12-07g's next64.sh (branch emit-split, one team of the plain GEMV's shape per split
#    workgroup) into $OUT/g3/;
# 2. next65.sh (main's q6_k GEMV, one row a workgroup against auto at three sizes) into $OUT/q6k/;
# 3. main, Llama-3-8B q4_k decode at context 512 with zero-code switches ($OUT/sw/): the quantized GEMVs'
#    weight prefetch everywhere (TORCHLESS_QGEMV_PREFETCH=1; the emitting down projection runs 128
#    workgroups of 32 one-warp teams, half the warps of the GEMV alone, so more loads in flight per warp
#    may pay there even if the other launches lose: the profile says which), and attention in one launch
#    of one split (TORCHLESS_DECODE_TUNE=0,256,0,1) instead of 9 splits and a merge launch.
D=benchmarks/results/2026-12-07g-h100
mkdir -p $OUT/g3 $OUT/q6k $OUT/sw
OUT=$OUT/g3 bash $D/next64.sh
OUT=$OUT/q6k bash $D/next65.sh
source .gl/setup.sh
T=./target/release/torchless
M=/tmp/llama3-8b-random
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --quantize q4_k"
for v in "" TORCHLESS_QGEMV_PREFETCH=1 TORCHLESS_DECODE_TUNE=0,256,0,1 "" TORCHLESS_QGEMV_PREFETCH=1 TORCHLESS_DECODE_TUNE=0,256,0,1; do
  echo "=== ${v:-main}" >> $OUT/sw/decode.txt
  env $v timeout 60 $T $P --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/sw/decode.txt
done
env TORCHLESS_QGEMV_PREFETCH=1 timeout 60 $T $P --decode-tokens 32 --profile > $OUT/sw/prof_pf.txt 2>&1
# The same attention switch in bf16 decode (a launch saved is a larger share of a q4_k token, but bf16's
# target, 85 %, is nearer).
for v in "" TORCHLESS_DECODE_TUNE=0,256,0,1 "" TORCHLESS_DECODE_TUNE=0,256,0,1; do
  echo "=== bf16 ${v:-main}" >> $OUT/sw/decode.txt
  env $v timeout 60 $T bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/sw/decode.txt
done
