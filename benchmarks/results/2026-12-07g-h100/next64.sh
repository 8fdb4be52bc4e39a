#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/g3"] (~3 min). Prepared for the next session, not run.
# Build first: `git checkout emit-split && cargo build --release && mkdir -p target/exp/g3 && cp
# target/release/torchless target/exp/g3/s && strip target/exp/g3/s && xz -T4 -f target/exp/g3/s &&
# git checkout main`.
# Branch emit-split (1fe43fd): g2's split blocks (44d02bf), but each split workgroup is one team of the
# plain GEMV's shape (q4_k: the down projection 64 threads × 2 rows, O and gate/up 32 × 2), as in the GEMV
# alone, which runs the down projection's shape at 81 % of copy against the emitting launch's ~53 %.
# g2 split every block into one-row, one-warp teams and lost (308.5–323.9 against 335.9 tok/s).
# Split 1 is main's shape. $OUT/decode.txt, $OUT/prof_s16.txt
source .gl/setup.sh
D=target/exp/g3
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 240 python3 scripts/make_random_llama.py --out $M > $OUT/make.txt 2>&1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/decode.txt
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --model $M --quantize q4_k"
for s in 1 16 8 4 1 16; do
  echo "=== split $s" >> $OUT/decode.txt
  env TORCHLESS_QGEMV_EMIT_SPLIT=$s timeout 60 $D/s $P --decode-tokens 128 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
done
env TORCHLESS_QGEMV_EMIT_SPLIT=16 timeout 60 $D/s $P --decode-tokens 32 --profile > $OUT/prof_s16.txt 2>&1
