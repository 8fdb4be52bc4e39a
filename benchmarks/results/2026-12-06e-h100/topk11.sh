#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: top-k at 256 MiB and 1 GiB, alternating three rounds: rank128
# (topk-rank.xz with RANK=1 RANKMAX=128, the kernel of f002b07) against dbuf (x's tiles alternating
# between two sets of registers, two in flight). $OUT/topk.txt. ~1.5 min.
source .gl/setup.sh
for b in topk-rank dbuf; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt
one() { n=$1; b=$2; shift 2; echo "=== $n --mib $mib" >> $A; env "$@" timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
E=TORCHLESS_EXP_TOPK
for mib in 256 1024; do
  for i in 1 2 3; do
    one rank128 topk-rank ${E}_RANK=1 ${E}_RANKMAX=128
    one dbuf dbuf X=0
  done
done
