#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/i2"] (~3 min). target/exp/i2/l: main at 6b11186 (Q6_K
# rows under 8192 values one a workgroup).
# 1. The q6_k GEMV alone (_xq) at 14336 × 4096, 4096 × 14336 (46 MiB) and 127488 × 4096 (410 MiB).
#    $OUT/q6k.txt
# 2. Where a Llama-3-8B bf16 decode token goes, by launch (the target nearest to met: 83.1 % against 85 %;
#    `--profile`: each launch timed alone with the profiler's wait). $OUT/prof_bf16.txt
source .gl/setup.sh
D=target/exp/i2
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
( [ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1 ) &
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/q6k.txt
for round in 1; do
  for run in "4096 46" "14336 46" "4096 410"; do
    set -- $run
    env TORCHLESS_BENCH_QGEMV_COLS=$1 timeout 40 $D/l bench --backend gpu --mib $2 --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/q6k.txt
  done
done
wait
timeout 60 $D/l bench-model --backend gpu --context 512 --prefill-tokens 0 --decode-tokens 32 --profile --model $M > $OUT/prof_bf16.txt 2>&1
# 3. Llama-3-8B q4_k decode at context 512 with fewer attention splits than the plan's 9 (one split with
#    256 threads won 0.6 % there, i1/split.txt). $OUT/splits.txt
for v in "" 0,0,0,3 0,256,0,2 0,0,0,5; do
  echo "=== ${v:-main}" >> $OUT/splits.txt
  env ${v:+TORCHLESS_DECODE_TUNE=$v} timeout 60 $D/l bench-model --backend gpu --context 512 --prefill-tokens 0 --decode-tokens 128 --model $M --quantize q4_k 2>&1 | grep -E "decode \(|rror" >> $OUT/splits.txt
done
