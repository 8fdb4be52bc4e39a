#!/bin/bash
# GPU machine, after prepare32.sh, carry [".gl", "target/exp/j"], ~5 min: Llama-3-8B decode (bf16, and
# q4_k) against prev (4fc347d), alternating, for the attention kernels' NaN handling (nan_max, bit
# tests) in a whole model. $OUT/decode.txt
source .gl/setup.sh
D=target/exp/j
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for i in 1 2; do
  for q in none q4_k; do
    for b in prev main; do
      echo "=== $b $q" >> $OUT/decode.txt
      Q=; [ $q = none ] || Q="--quantize $q"
      timeout 60 $D/$b bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 $Q 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
    done
  done
done
