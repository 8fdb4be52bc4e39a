#!/bin/bash
# The short form of k1.sh (~3 min; carry [".gl", "target/exp/k1"]), for a call with little device time
# left: the Q/K/V launch alone and Llama-3-8B bf16 decode, b / m alternating twice. $OUT/qkv.txt, decode.txt
source .gl/setup.sh
D=target/exp/k1
for f in $D/b.xz $D/m.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/decode.txt > $OUT/qkv.txt
for round in 1 2; do
  for v in b m; do
    echo "=== $v" >> $OUT/qkv.txt
    timeout 40 $D/$v bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
  done
done
timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
for round in 1 2; do
  for v in b m; do
    echo "=== bf16 $v" >> $OUT/decode.txt
    timeout 90 $D/$v bench-model --backend gpu --context 512 --prefill-tokens 0 --decode-tokens 128 --model $M 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
  done
done
