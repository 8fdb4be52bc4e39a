#!/bin/bash
# j1.sh cut to what matters most, in order, for a call of ~4 min (the session's device time ran short):
# same binaries and carry. 1. gemv_qkv_bf16 / gemv_bf16, b / m twice; 2. Llama-3-8B bf16 decode b / m
# twice and m's profile; 3. xLSTM-7B decode b / m twice and m's profile; 4. q4_k decode b / q once.
source .gl/setup.sh
D=target/exp/j1
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
X=/tmp/xlstm-7b-random
( [ -f $X/config.json ] || timeout 300 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1 ) &
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/decode.txt > $OUT/qkv.txt
for round in 1 2; do
  for v in b m; do
    echo "=== $v" >> $OUT/qkv.txt
    timeout 40 $D/$v bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
  done
done
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0"
for round in 1 2; do
  for v in b m; do
    echo "=== bf16 $v" >> $OUT/decode.txt
    timeout 60 $D/$v $P --decode-tokens 128 --model $M 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
  done
done
timeout 60 $D/m $P --decode-tokens 32 --profile --model $M > $OUT/prof_bf16_m.txt 2>&1
wait
for round in 1 2; do
  for v in b m; do
    echo "=== xLSTM $v" >> $OUT/decode.txt
    timeout 90 $D/$v $P --decode-tokens 128 --model $X 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
  done
done
timeout 90 $D/m $P --decode-tokens 32 --profile --model $X > $OUT/prof_xlstm_m.txt 2>&1
for v in b q; do
  echo "=== q4_k $v" >> $OUT/decode.txt
  timeout 60 $D/$v $P --decode-tokens 128 --model $M --quantize q4_k 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
done
