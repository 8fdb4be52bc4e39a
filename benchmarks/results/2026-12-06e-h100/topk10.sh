#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] (main.xz and topk-rank.xz from 12-06d's prepare_next.sh, ahead2.xz
# built from branch topk-ahead2). Top-k at 256 MiB and 1 GiB, alternating: 12-06d's kernel (old), the
# counted-rank merge up to 128 (rank128), this session's kernel (cur: rank merge + next tile in flight across
# merges), with two tiles ahead (a2) and rounds up to 16 tiles (r16). $OUT/topk.txt. ~3 min.
source .gl/setup.sh
for b in main topk-rank ahead2; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt
one() { n=$1; b=$2; shift 2; echo "=== $n --mib $mib" >> $A; env "$@" timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
E=TORCHLESS_EXP_TOPK
for mib in 256 1024; do
  for i in 1 2; do
    one old main X=0
    one rank128 topk-rank ${E}_RANK=1 ${E}_RANKMAX=128
    one cur ahead2 X=0
    one a2 ahead2 ${E}_AHEAD=2
    one r16 ahead2 ${E}_ROUND=16
    one a2r16 ahead2 ${E}_AHEAD=2 ${E}_ROUND=16
  done
done
