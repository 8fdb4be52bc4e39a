#!/bin/bash
# GPU machine, after prepare_topk_wg.sh, carry [".gl", "target/exp"]: top-k with workgroups of 256 (main,
# and the topk-wgc build of it), 320, 512 and 640 threads, alternating twice at 256 MiB and 1 GiB, once at
# 323 MiB (660 rows). $OUT/topk.txt. ~2.5 min.
source .gl/setup.sh
for b in main twg256 twg320 twg512 twg640; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt
one() { echo "=== $1 --mib $mib" >> $A; timeout 40 ./target/exp/$1 bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
for mib in 256 1024 256 1024 323; do
  for b in main twg256 twg320 twg512 twg640; do one $b; done
done
