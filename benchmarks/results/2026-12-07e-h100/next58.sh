#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n58"] (~4 min). m5 = 2c1f3c8; x6 = m5 + x6.patch: 256
# threads also for the normed GEMV of more than 8192 rows (xLSTM's six projections) and for plain
# GEMVs of at most 4096 rows of 4096+ 16-bit values (the O / out projections), as next57's forced
# 256-thread profiles favoured on xLSTM-7B.
# 1. xLSTM-7B decode m5 / x6 alternating twice. 2. Llama-3-8B bf16 decode m5 / x6 alternating twice.
source .gl/setup.sh
D=target/exp/n58
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
P="bench-model --backend gpu --context 512 --decode-tokens 128 --prefill-tokens 0"
X=/tmp/xlstm-7b-random
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1
for b in m5 x6 m5 x6; do
  echo "=== $b" >> $OUT/decode.txt
  timeout 60 $D/$b $P --model $X 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
for b in m5 x6 m5 x6; do
  echo "=== llama $b" >> $OUT/decode.txt
  timeout 60 $D/$b $P --model $M 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
done
