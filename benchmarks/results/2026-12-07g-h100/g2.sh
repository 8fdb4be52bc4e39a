#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/g2"] (~3 min). target/exp/g2/s: 44d02bf (the
# GEMVs that write the next GEMV's x may spread each block of 32 outputs over TORCHLESS_QGEMV_EMIT_SPLIT
# workgroups, the last to finish quantizing it); ktest: its kernel unit tests.
# 1. The quantized GEMV tests on NVIDIA (the split hand-off included). $OUT/tests.txt
# 2. Llama-3-8B --quantize q4_k decode by split, 1 (= main) first and last. $OUT/decode.txt
# 3. A profile at split 16 (next59/prof_q4k.txt is split 1). $OUT/prof_s16.txt
source .gl/setup.sh
D=target/exp/g2
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
( [ -f $M/config.json ] || timeout 240 python3 scripts/make_random_llama.py --out $M > $OUT/make.txt 2>&1 ) &
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/decode.txt > $OUT/tests.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 100 $D/ktest --test-threads 16 qmatmul 2>&1 | grep -E "test result|FAILED|panicked|SKIPPED" >> $OUT/tests.txt
wait
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --quantize q4_k"
for s in 1 4 16 32 1 16; do
  echo "=== split $s" >> $OUT/decode.txt
  env TORCHLESS_QGEMV_EMIT_SPLIT=$s timeout 60 $D/s $P --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
done
for s in 16; do
  env TORCHLESS_QGEMV_EMIT_SPLIT=$s timeout 60 $D/s $P --decode-tokens 32 --profile > $OUT/prof_s$s.txt 2>&1
done
