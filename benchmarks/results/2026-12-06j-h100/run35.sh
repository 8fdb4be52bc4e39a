#!/bin/bash
# GPU machine, carry [".gl", "target/exp/l"] (stripped, xz: main = 7f54c0a, mid = 4263208 (before the
# flash pre-pass), prev = 4fc347d (before any NaN handling), exp2 = 782c2d3 (softmax's weights as exp2,
# one product for log2(e) and the scale); ktest = main's kernel unit tests as
# prepare35.sh builds them, at or after 762e15d), ~5 min:
# 1. The kernel unit tests on NVIDIA (run34: softmax's fused scale, the f16 pre-pass's clamp and the
#    CPU's key parts still lost a NaN or the max). $OUT/ktest.txt
# 2. flash_attention (f32 Q/K/V): prev / mid / main; softmax prev / main / exp2, alternating. $OUT/cost.txt
source .gl/setup.sh
D=target/exp/l
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 100 $D/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
A=$OUT/cost.txt
for i in 1 2; do
  for b in prev mid main; do
    echo "=== $b" >> $A
    timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $A
  done
  for b in prev main exp2; do
    echo "=== $b" >> $A
    for mib in 256 1024; do
      timeout 40 $D/$b bench --backend gpu --mib $mib --ops softmax 2>&1 | grep -E "^soft|rror" >> $A
    done
  done
done
