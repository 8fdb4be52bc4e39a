#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/i1"] (~5 min). target/exp/i1/m: main (8571455);
# target/exp/i1/q6: main with Q6_K GEMVs at one row a workgroup (auto_tune).
# 1. q6_k GEMV alone (_xq), 46 MiB at 4096 × 14336 and 14336 × 4096: m auto / m forced one row / q6 auto,
#    alternating. $OUT/q6k.txt
# 2. Llama-3-8B q4_k decode at context 512 and 768: m with 9 splits and a merge launch against one split
#    (TORCHLESS_DECODE_TUNE=0,256,0,1), alternating. $OUT/split.txt
source .gl/setup.sh
D=target/exp/i1
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/q6k.txt > $OUT/split.txt
for round in 1 2; do
  for cols in 14336 4096; do
    if [ $cols = 14336 ]; then one=64,1; else one=32,1; fi
    for run in "m " "m TORCHLESS_QGEMV_TUNE=$one" "q6 "; do
      set -- $run
      echo "=== cols $cols $1 ${2:-auto}" >> $OUT/q6k.txt
      env TORCHLESS_BENCH_QGEMV_COLS=$cols $2 timeout 40 $D/$1 bench --backend gpu --mib 46 --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/q6k.txt
    done
  done
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 240 python3 scripts/make_random_llama.py --out $M > $OUT/make.txt 2>&1
for ctx in 512 768 512 768 512; do
  for v in "" TORCHLESS_DECODE_TUNE=0,256,0,1; do
    echo "=== ctx $ctx ${v:-main}" >> $OUT/split.txt
    env $v timeout 60 $D/m bench-model --backend gpu --context $ctx --prefill-tokens 0 --model $M --quantize q4_k --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/split.txt
  done
done
