#!/bin/bash
# GPU machine, carry [".gl", "target/exp/i"], ~6 min, in order of priority:
# 1. Llama-3-8B q4_k decode, base (9f8a8d8) / main (423ed31) / m32 (main with the Q4_K plain GEMV at 32
#    threads everywhere), alternating. run29 had main at 309.1 and 317.2 against base's 332.6 and 332.3
#    tok/s: the 64-thread rule (whose only plain 4096 x 14336 GEMV in decode, the down projection, emits
#    with one-warp teams) or something else? $OUT/decode.txt
# 2. The norms, main / held (branch norm-held-rms: held rmsnorm rows reduce the row's max, then a sum,
#    instead of Chan partials), alternating, 256 MiB. $OUT/norm.txt
# 3. held's kernel unit tests (ktest). $OUT/ktest.txt
source .gl/setup.sh
D=target/exp/i
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for i in 1 2; do
  for b in base main m32; do
    echo "=== $b decode q4_k" >> $OUT/decode.txt
    timeout 60 $D/$b bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 --quantize q4_k 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
  done
done
for i in 1 2; do
  for b in main held; do
    echo "=== $b" >> $OUT/norm.txt
    timeout 60 $D/$b bench --backend gpu --mib 256 --ops rmsnorm,add_rmsnorm 2>&1 | grep -E "^(rms|add)|rror" >> $OUT/norm.txt
  done
done
env TORCHLESS_REQUIRE_GPU=1 timeout 100 $D/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
