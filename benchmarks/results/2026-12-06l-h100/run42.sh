#!/bin/bash
# GPU machine (H100), after prepare42.sh, carry [".gl", "target/exp/q"], ~8 min, in order:
# 1. top-k (k = 64, rows of 128256 f32): base, pairs, r1-2-4, t1024, t2048 at 256 MiB alternating twice,
#    1 GiB once (not the t builds).
#    $OUT/topk.txt (the xLSTM model is made meanwhile)
# 2. l2-prefetch's attention and mLSTM unit tests on NVIDIA. $OUT/l2test.txt
# 3. xLSTM-7B decode (random bf16, context 512, 128 tokens) with 0 (as main), 16 and 32 MiB of the out
#    projection's weights read into L2 during the mLSTM step, alternating twice. $OUT/decode.txt
source .gl/setup.sh
D=target/exp/q
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
X=/tmp/xlstm-7b-random
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1 &
for mib in 256 256 1024; do
  for b in base pairs r1-2-4 t1024 t2048; do
    [ $mib = 1024 ] && [ ${b:0:1} = t ] && continue  # 2092 rows: no split either way
    echo "=== $b $mib" >> $OUT/topk.txt
    timeout 60 $D/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
  done
done
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/l2test --test-threads 16 attention mlstm > $OUT/l2test.txt 2>&1
echo "rc $?" >> $OUT/l2test.txt
wait
for i in 1 2; do
  for mib in 0 16 32; do
    echo "=== l2 $mib MiB" >> $OUT/decode.txt
    TORCHLESS_L2_PREFETCH_MIB=$mib timeout 60 $D/l2 bench-model --backend gpu --model $X --prefill-tokens 0 \
      --decode-tokens 128 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
  done
done
