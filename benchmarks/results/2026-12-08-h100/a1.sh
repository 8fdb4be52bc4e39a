#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/a1"] (~6 min). target/exp/a1/e: main (f58da10) plus
# qkv-ablate.patch: TORCHLESS_EXP_QKV bits make every RMS-normed multi-matrix dense GEMV (Llama's fused
# Q/K/V launch, xLSTM's six projections) skip its norm (1), its RoPE epilogue (2: plain outputs) or its
# norm weight's loads and products (4). Timing only: 1 and 2 give wrong results (the bench says NO); 4
# is exact on the random models, whose norm weights are ones. 0 is main's kernel.
# The question: what keeps the bf16 Q/K/V launch ~4 µs over a plain GEMV of its bytes (12-07k: 23.6 µs
# against 20.0 at 48 MiB) and xLSTM's six projections ~8 µs over theirs?
# 1. gemv_qkv_bf16 + gemv_bf16 at 48 MiB, EXP_QKV 0 1 2 3 4 5, then forced shapes (WG,ROWS) 64,4 256,4
#    128,2 with 0; twice. $OUT/qkv.txt
# 2. Llama-3-8B bf16 decode (128 tokens after 512), EXP_QKV 0 / 4 / 1 alternating twice. $OUT/decode.txt
# 3. xLSTM-7B decode, 0 / 4 twice. $OUT/decode.txt
source .gl/setup.sh
D=target/exp/a1
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
X=/tmp/xlstm-7b-random
( [ -f $X/config.json ] || timeout 300 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1 ) &
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/decode.txt > $OUT/qkv.txt
for round in 1 2; do
  for v in 0 1 2 3 4 5; do
    echo "=== EXP_QKV=$v" >> $OUT/qkv.txt
    TORCHLESS_EXP_QKV=$v timeout 40 $D/e bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
  done
  for t in 64,4 256,4 128,2; do
    echo "=== TUNE=$t" >> $OUT/qkv.txt
    TORCHLESS_GEMV_TUNE=$t timeout 40 $D/e bench --backend gpu --mib 48 --ops gemv_qkv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
  done
done
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0"
for round in 1 2; do
  for v in 0 4 1; do
    echo "=== bf16 EXP_QKV=$v" >> $OUT/decode.txt
    TORCHLESS_EXP_QKV=$v timeout 90 $D/e $P --decode-tokens 128 --model $M 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
  done
done
wait
for round in 1 2; do
  for v in 0 4; do
    echo "=== xLSTM EXP_QKV=$v" >> $OUT/decode.txt
    TORCHLESS_EXP_QKV=$v timeout 90 $D/e $P --decode-tokens 128 --model $X 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
  done
done
