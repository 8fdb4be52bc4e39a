#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: top-k with workgroups of 256 (main's), 320, 384 and 512 threads
# (branch topk-wg, TORCHLESS_EXP_TOPK_WG), at 256 MiB and 1 GiB. $OUT/topk.txt. ~2 min.
source .gl/setup.sh
[ -f target/exp/twg ] || xz -dk target/exp/twg.xz
A=$OUT/topk.txt
one() { echo "=== WG $1 --mib $mib" >> $A; TORCHLESS_EXP_TOPK_WG=$1 timeout 40 ./target/exp/twg bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
for mib in 256 1024; do one 256; one 320; one 384; one 512; one 256; one 320; done
