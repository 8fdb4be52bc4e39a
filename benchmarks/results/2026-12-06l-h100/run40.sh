#!/bin/bash
# GPU machine, carry [".gl", "target/exp/o", "target/exp/p"] (o: prepare38.sh's top-k schedules; p/l2 =
# branch l2-prefetch at b10769c, stripped, xz), ~8 min, in order:
# 1. top-k at 256 MiB, each schedule once. $OUT/topk.txt
# 2. (the two random models made meanwhile) Llama-3-8B decode, bf16 and q4_k, and xLSTM-7B decode, with 0
#    (as main), 16 and 32 MiB of the next GEMV's weights read into L2 during the attention / mLSTM step,
#    alternating twice. $OUT/decode.txt
# 3. top-k at 1 GiB. $OUT/topk.txt
source .gl/setup.sh
for f in target/exp/*/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
M=/tmp/llama3-8b-random; X=/tmp/xlstm-7b-random
[ -f $M/config.json ] || timeout 170 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1 &
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1 &
D=target/exp/o
V="1-2-8 1-2-16 1-4-64 3-8-64 3-16-64"
topk() {
  for v in $V; do
    echo "=== r$v $1" >> $OUT/topk.txt
    timeout 60 $D/r$v bench --backend gpu --mib $1 --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
  done
}
topk 256
wait
dec() {  # model, quantize, MiB
  echo "=== l2 $3 MiB, $1 $2" >> $OUT/decode.txt
  Q=; [ $2 = none ] || Q="--quantize $2"
  TORCHLESS_L2_PREFETCH_MIB=$3 timeout 60 target/exp/p/l2 bench-model --backend gpu --model $1 \
    --prefill-tokens 0 --decode-tokens 128 $Q 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
}
for i in 1 2; do
  for mib in 0 16 32; do dec $M none $mib; done
  for mib in 0 16 32; do dec $X none $mib; done
  for mib in 0 16; do dec $M q4_k $mib; done
done
topk 1024
