#!/bin/bash
# GPU machine, carry [".gl", "target/exp/k"] (main = 05602fb stripped, xz; prev = 4fc347d; ktest = main's
# kernel unit tests), ~6 min, in order of priority:
# 1. main's kernel unit tests on NVIDIA (12-06i's NaN tests failed there: the f16 staging's clamp and the
#    norms' max dropped a NaN). $OUT/ktest.txt
# 2. NaN handling's cost against prev (before any of it): sdpa_decode at 4k and 32k keys, flash_attention,
#    softmax and the norms, alternating. $OUT/cost.txt
# 3. Llama-3-8B decode, bf16 and q4_k, prev against main, alternating. $OUT/decode.txt
source .gl/setup.sh
D=target/exp/k
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 100 $D/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
A=$OUT/cost.txt
for i in 1 2; do
  for b in prev main; do
    echo "=== $b" >> $A
    for mib in 16 128; do
      timeout 30 $D/$b bench --backend gpu --mib $mib --ops sdpa_decode 2>&1 | grep -E "^sdpa|rror" >> $A
    done
    timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $A
    for mib in 256 1024; do
      timeout 60 $D/$b bench --backend gpu --mib $mib --ops softmax,rmsnorm,add_rmsnorm,layernorm 2>&1 | grep -E "^(soft|rms|add|layer)|rror" >> $A
    done
  done
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for i in 1 2; do
  for q in none q4_k; do
    for b in prev main; do
      echo "=== $b $q" >> $OUT/decode.txt
      Q=; [ $q = none ] || Q="--quantize $q"
      timeout 60 $D/$b bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 $Q 2>&1 | grep -E "^decode|rror" >> $OUT/decode.txt
    done
  done
done
