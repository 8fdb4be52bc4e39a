#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare_topk_pre.sh: top-k with the next round's first
# tile loaded before each merge (branch topk-pre, TORCHLESS_EXP_TOPK_PRE=1; pre16: rounds of up to 16
# tiles; pre256: up to 256 candidates merged by counting) against main and the switch off, alternating
# three times at 256 MiB and 1 GiB. Question: is the ~21 µs by which 256 MiB misses the copy speed (113.5
# against 92 µs) the load pipeline refilled after each of a row's seven merges? $OUT/topk.txt. ~3 min.
source .gl/setup.sh
for b in main pre pre16 pre256; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/topk.txt
one() { n=$1; b=$2; mib=$3; shift 3; echo "=== $n --mib $mib" >> $A; env "$@" timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
for i in 1 2 3; do
  for mib in 256 1024; do
    one main main $mib X=0
    one pre-off pre $mib X=0
    one pre pre $mib TORCHLESS_EXP_TOPK_PRE=1
    one pre16 pre16 $mib TORCHLESS_EXP_TOPK_PRE=1
    one pre16-off pre16 $mib X=0
    one pre256 pre256 $mib TORCHLESS_EXP_TOPK_PRE=1
  done
done
