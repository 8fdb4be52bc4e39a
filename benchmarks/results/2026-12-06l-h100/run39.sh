#!/bin/bash
# GPU machine, carry [".gl", "target/exp/o", "target/exp/p"] (o: prepare38.sh's top-k schedules; p/l2 =
# branch l2-prefetch, stripped, xz), ~8 min, in order:
# 1. top-k at 256 MiB, each schedule once. $OUT/topk.txt
# 2. Llama-3-8B decode, bf16 and q4_k, with 0 (as main), 16 and 32 MiB of the O projection's weights read
#    into L2 during the attention, alternating twice. $OUT/decode.txt
# 3. top-k: 1 GiB and 256 MiB again. $OUT/topk.txt
source .gl/setup.sh
for f in target/exp/*/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
D=target/exp/o
V="1-2-8 1-2-16 1-4-64 3-8-64 3-16-64"
topk() {
  for v in $V; do
    echo "=== r$v $1" >> $OUT/topk.txt
    timeout 60 $D/r$v bench --backend gpu --mib $1 --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
  done
}
topk 256
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 170 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for i in 1 2; do
  for q in none q4_k; do
    for mib in 0 16 32; do
      echo "=== l2 $mib MiB, $q" >> $OUT/decode.txt
      Q=; [ $q = none ] || Q="--quantize $q"
      TORCHLESS_L2_PREFETCH_MIB=$mib timeout 60 target/exp/p/l2 bench-model --backend gpu --model $M \
        --prefill-tokens 0 --decode-tokens 128 $Q 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
    done
  done
done
topk 1024
topk 256
