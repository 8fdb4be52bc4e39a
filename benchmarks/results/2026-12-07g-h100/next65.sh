#!/bin/bash
# GPU machine (H100), carry [".gl", "target/release/torchless"] (main; ~2 min). Prepared for the next
# session, not run. g1/tune.txt: a q6_k GEMV of 14336 × 4096 ran at 79.1 % of copy with one row a
# workgroup (32 threads) against 70.7 % with the automatic four. Before changing auto_tune for short Q6_K
# rows: whether it holds at the LM head of a Q4_K_M file (128256 × 4096, q6_k, PREFETCH on; ~410 MiB, out
# of L2) and at 8192 × 4096 (a smaller model's MLP), alternating. $OUT/q6k.txt
source .gl/setup.sh
T=./target/release/torchless
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/q6k.txt
for mib in 46 410 27; do
  for t in auto 32,1 64,1 auto 32,1; do
    if [ $t = auto ]; then E=""; else E="TORCHLESS_QGEMV_TUNE=$t"; fi
    echo "=== $mib MiB $t" >> $OUT/q6k.txt
    env $E timeout 40 $T bench --backend gpu --mib $mib --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/q6k.txt
  done
done
