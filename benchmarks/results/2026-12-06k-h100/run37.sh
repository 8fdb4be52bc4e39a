#!/bin/bash
# GPU machine, after prepare37.sh, carry [".gl", "target/exp/n"] (stripped, xz: base = main, nanw = main
# with softmax-nanw.patch (softmax's NaN carried by the row's sum, no per-score flag), ktest = nanw's
# kernel unit tests), ~2 min:
# 1. the softmax unit tests on NVIDIA (its max drops a NaN: does the sum keep it?). $OUT/ktest.txt
# 2. softmax at 256 MiB (base and nanw alternating twice) and 1 GiB (once). $OUT/softmax.txt
source .gl/setup.sh
D=target/exp/n
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/ktest --test-threads 16 softmax > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
A=$OUT/softmax.txt
for b in base nanw base nanw; do
  echo "=== $b" >> $A
  timeout 40 $D/$b bench --backend gpu --mib 256 --ops softmax 2>&1 | grep -E "^soft|rror" >> $A
done
for b in base nanw; do
  echo "=== $b" >> $A
  timeout 40 $D/$b bench --backend gpu --mib 1024 --ops softmax 2>&1 | grep -E "^soft|rror" >> $A
done
