#!/bin/bash
# GPU machine (H100), carry [".gl", "target/release/torchless"] (main; ~6 min, most of it making the
# random models). Prepared for the next session, not run. Where a decode token goes at main, by launch
# (`bench-model --profile`: each launch timed alone, with the profiler's wait, ~8.6 µs a launch on the
# H100), for the three decode targets still open: xLSTM-7B (77.8 %), Llama-3-8B bf16 (82.9 %) and q4_k
# (48.5 %); then each unprofiled. $OUT/prof_*.txt, $OUT/decode.txt
source .gl/setup.sh
T=./target/release/torchless
M=/tmp/llama3-8b-random
X=/tmp/xlstm-7b-random
( [ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1 ) &
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0"
timeout 60 $T $P --decode-tokens 32 --profile --model $M > $OUT/prof_bf16.txt 2>&1
timeout 90 $T $P --decode-tokens 32 --profile --model $M --quantize q4_k > $OUT/prof_q4k.txt 2>&1
wait
timeout 60 $T $P --decode-tokens 32 --profile --model $X > $OUT/prof_xlstm.txt 2>&1
for m in "$M" "$M --quantize q4_k" "$X"; do
  timeout 90 $T $P --decode-tokens 128 --model $m 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
done
