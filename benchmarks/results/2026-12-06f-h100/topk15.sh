#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: top-k on main (31f1aed: one merge function branching on the
# buffer's size), twg256 (12-06e's topk-wgc at 256 threads: 91ff71e's two merge functions), topkA
# (branch topk-orig: 91ff71e's merge functions on main) and topkB (branch topk-split: the two functions
# written with main's helpers), alternating three times at 256 MiB and 1 GiB. $OUT/topk.txt. ~2 min.
source .gl/setup.sh
for b in main twg256 topkA topkB; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt
for i in 1 2 3; do
  for mib in 256 1024; do
    for b in main twg256 topkA topkB; do
      echo "=== $b --mib $mib" >> $A
      timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A
    done
  done
done
