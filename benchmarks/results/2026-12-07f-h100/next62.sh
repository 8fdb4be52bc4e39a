#!/bin/bash
# GPU machine (H100), carry [".gl", "target/release/torchless"] (main; ~4 min). Prepared for the next
# session, not run. Issue 6's two formats under 80 % of copy with x as decode leaves it (next61: q4_k
# 76.7 / 81.3 %, q6_k 70.6 / 75.8 % at 14336×4096 / 4096×14336), by forced launch shape
# (TORCHLESS_QGEMV_TUNE=WG,ROWS): whether any shape reaches 80 %, and whether more rows a workgroup (x,
# two bytes a value, read once a workgroup from L2 for every ROWS weight rows of 0.56 (q4_k) or 0.82
# (q6_k) bytes a value) gain where the automatic 2 rows lose. $OUT/tune.txt
source .gl/setup.sh
T=./target/release/torchless
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/tune.txt
for cols in 4096 14336; do
  for t in auto 32,1 32,2 32,4 64,1 64,2 64,4 128,2 128,4 256,4; do
    if [ $t = auto ]; then E=""; else E="TORCHLESS_QGEMV_TUNE=$t"; fi
    echo "=== cols $cols $t" >> $OUT/tune.txt
    env TORCHLESS_BENCH_QGEMV_COLS=$cols $E timeout 30 $T bench --backend gpu --mib 32 --ops gemv_q4_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/tune.txt
    env TORCHLESS_BENCH_QGEMV_COLS=$cols $E timeout 30 $T bench --backend gpu --mib 46 --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/tune.txt
  done
done
