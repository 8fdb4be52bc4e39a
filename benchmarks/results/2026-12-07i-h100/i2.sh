#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/i2"] (~1 min). target/exp/i2/l: main at 6b11186 (Q6_K
# rows under 8192 values one a workgroup). The q6_k GEMV alone (_xq) at 14336 × 4096, 4096 × 14336 (46 MiB)
# and 127488 × 4096 (410 MiB), twice. $OUT/q6k.txt
source .gl/setup.sh
D=target/exp/i2
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/q6k.txt
for round in 1 2; do
  for run in "4096 46" "14336 46" "4096 410"; do
    set -- $run
    env TORCHLESS_BENCH_QGEMV_COLS=$1 timeout 40 $D/l bench --backend gpu --mib $2 --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/q6k.txt
  done
done
