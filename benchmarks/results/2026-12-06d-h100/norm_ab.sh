#!/bin/bash
# xLSTM-7B decode (random bf16): main (target/main-step.xz: `cargo build --release`, strip, xz) against main
# with xlstm-norm.patch applied (target/release/torchless: the head norm held in registers, n's rows loaded
# before it), alternating. Not run yet (12-06d's device time was spent). Carry [".gl",
# "target/release/torchless", "target/main-step.xz"]. $OUT/ab.txt. ~2 min.
source .gl/setup.sh
[ -f target/main-step ] || xz -dk target/main-step.xz
A=$OUT/ab.txt; X=/tmp/xlstm-7b-random; O=./target/main-step; N=./target/release/torchless
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1
for b in $O $N; do timeout 60 $b bench-model --backend gpu --model $X --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1; done
for i in 1 2; do for b in $O $N; do
  echo "=== $b" >> $A
  timeout 60 $b bench-model --backend gpu --model $X --context 512 --decode-tokens 128 --prefill-tokens 0 2>&1 | grep -E "^decode" >> $A
done; done
