#!/bin/bash
# GPU machine, after prepare38.sh, carry [".gl", "target/exp/o"]: top-k (k = 64, rows of 128256 f32) with
# each round schedule, 256 MiB twice (alternating), 1 GiB once. $OUT/topk.txt
source .gl/setup.sh
D=target/exp/o
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
A=$OUT/topk.txt
V="1-2-8 1-2-16 1-4-64 3-8-64 3-16-64"
for mib in 256 1024 256; do
  for v in $V; do
    echo "=== r$v $mib" >> $A
    timeout 60 $D/r$v bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk|rror" >> $A
  done
done
