#!/bin/bash
# GPU machine, carry [".gl", "target/exp/g3", "target/release/torchless"] (~5 min):
# 1. 2026-12-07g's next64.sh (branch emit-split, one team of the plain GEMV's shape per split
#    workgroup) into $OUT/g3/;
# 2. next65.sh (main's q6_k GEMV, one row a workgroup against auto at three sizes) into $OUT/q6k/.
D=benchmarks/results/2026-12-07g-h100
mkdir -p $OUT/g3 $OUT/q6k
OUT=$OUT/g3 bash $D/next64.sh
OUT=$OUT/q6k bash $D/next65.sh
