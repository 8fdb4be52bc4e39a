#!/bin/bash
# main at 113f114 (the float pre-test and the next tile's early loads):
# topk at 256 MiB and 1 GiB twice, then xLSTM-7B (random bf16) decode profiled kernel by kernel.
# Carry [".gl", "target/release/torchless"]. $OUT/topk.txt, $OUT/xlstm_profile.txt. ~3 min.
source .gl/setup.sh
B=./target/release/torchless; X=/tmp/xlstm-7b-random
for i in 1 2; do for mib in 256 1024; do
  timeout 40 $B bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk|copy bandwidth:" | head -2 >> $OUT/topk.txt
done; done
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1
timeout 150 $B bench-model --backend gpu --model $X --context 512 --decode-tokens 32 --prefill-tokens 0 --profile \
  > $OUT/xlstm_profile.txt 2>&1
