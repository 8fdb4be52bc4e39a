#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n56"] (~6 min). m4 = 8c214ea; r2, r4 = m4 + g256.patch
# (dense 16-bit GEMVs at b = 1 with 256 threads a workgroup when gated or rows of 1024+ chunks; the gated
# form with GATED_ROWS rows of each matrix: 2 in r2, 4 in r4 as now). next55: every GEMV forced to 256
# threads, 2 rows made bf16 decode 160.9 tok/s against 159.0 (gate/up 91.0 against 92.9 µs profiled).
# 1. Llama-3-8B bf16 decode (context 512, 128 tokens, f16 cache) m4 / r2 / r4 alternating twice. $OUT/llama.txt
# 2. Profiles with every GEMV forced to 256,4 and 256,1 (m4). $OUT/prof.txt
# 3. xLSTM-7B decode m4 / r2 / r4 alternating twice. $OUT/xlstm.txt
source .gl/setup.sh
D=target/exp/n56
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
cat $M/*.safetensors > /dev/null
P="bench-model --backend gpu --context 512 --decode-tokens 128 --prefill-tokens 0"
for b in m4 r2 r4 m4 r2 r4; do
  echo "=== $b" >> $OUT/llama.txt
  timeout 60 $D/$b $P --model $M 2>&1 | grep -E "decode \(|rror" >> $OUT/llama.txt
done
for t in 256,4 256,1; do
  echo "=== TORCHLESS_GEMV_TUNE=$t" >> $OUT/prof.txt
  env TORCHLESS_GEMV_TUNE=$t timeout 60 $D/m4 $P --model $M --profile 2>&1 | grep -E "gemv_subgroup/main  .*x1x1|decode \(|rror" >> $OUT/prof.txt
done
X=/tmp/xlstm-7b-random
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1
cat $X/*.safetensors > /dev/null
for b in m4 r2 r4 m4 r2 r4; do
  echo "=== $b" >> $OUT/xlstm.txt
  timeout 90 $D/$b $P --model $X 2>&1 | grep -E "decode \(|rror" >> $OUT/xlstm.txt
done
