#!/bin/bash
# xLSTM-7B decode (random bf16), main before (target/main-before.xz: 113f114) and after (target/release/torchless)
# the mlstm_step4 rework, alternating, then the mlstm_step kernel alone.
# Carry [".gl", "target/release/torchless", "target/main-before.xz"]. $OUT/ab.txt. ~3 min.
source .gl/setup.sh
[ -f target/main-before ] || xz -dk target/main-before.xz
A=$OUT/ab.txt; X=/tmp/xlstm-7b-random; O=./target/main-before; N=./target/release/torchless
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1
for b in $O $N; do timeout 60 $b bench-model --backend gpu --model $X --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1; done
for i in 1 2; do for b in $O $N; do
  echo "=== $b" >> $A
  timeout 60 $b bench-model --backend gpu --model $X --context 512 --decode-tokens 128 --prefill-tokens 0 2>&1 | grep -E "decode|launches" >> $A
done; done
for b in $O $N; do echo "=== $b" >> $A; timeout 40 $b bench --backend gpu --mib 64 --ops mlstm_step 2>&1 | grep -E "^mlstm" >> $A; done
