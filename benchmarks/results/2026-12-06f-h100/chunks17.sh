#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: top-k split into C chunks a row (branch topk-chunks,
# TORCHLESS_EXP_TOPK_CHUNKS=C; X = the plan's choice, one chunk a row at these sizes) at 256 MiB (523 rows;
# five 256-thread workgroups fit each of the 132 multiprocessors, 660 at once) and 1 GiB, twice.
# $OUT/chunks.txt. ~2 min.
source .gl/setup.sh
[ -f target/exp/topk-chunks ] || xz -dk target/exp/topk-chunks.xz
A=$OUT/chunks.txt
one() { echo "=== $1 --mib $2" >> $A; if [ $1 = X ]; then e=X=0; else e=TORCHLESS_EXP_TOPK_CHUNKS=$1; fi
  env $e timeout 40 ./target/exp/topk-chunks bench --backend gpu --mib $2 --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
for i in 1 2; do
  for c in X 2 3 4 5 6 8; do one $c 256; done
  for c in X 2 3 5; do one $c 1024; done
done
