#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: top-k, alternating twice at 256 MiB and 1 GiB, and once at
# 323 MiB (660 rows, five workgroups a multiprocessor): cur (f002b07) against reload (branch topk-reload:
# tiles in locals, a tile the full buffer cut short loaded again) with one tile ahead (DBUF=0) and with two
# sets of registers alternating (DBUF=1). $OUT/topk.txt. ~2 min.
source .gl/setup.sh
for b in cur reload; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt
one() { n=$1; b=$2; shift 2; echo "=== $n --mib $mib" >> $A; env "$@" timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
for mib in 256 1024 256 1024 323; do
  one cur cur X=0
  one reload1 reload TORCHLESS_EXP_TOPK_DBUF=0
  one reload2 reload TORCHLESS_EXP_TOPK_DBUF=1
done
