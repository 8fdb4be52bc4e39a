#!/bin/bash
# Top-k testing a unit's elements with vector operations (bit masks; this build) against torchless_nopre
# (60ef2c9), alternating; then every op of issue 2's item 4 at 1 GiB (table). $OUT/all.txt. ~4 min.
source .gl/setup.sh
A=$OUT/all.txt; R=./target/release
tar xJf $R/variants.tar.xz -C $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
for mib in 256 1024; do
  for b in torchless_nopre torchless torchless_nopre torchless; do
    echo "=== $b --mib $mib" >> $A
    timeout 40 $R/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "topk|copy bandwidth:" | head -2 >> $A
  done
done
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,cast,copy,embedding,argmax,topk
echo "=== all ops --mib 1024" >> $A
timeout 170 $R/torchless bench --backend gpu --mib 1024 --ops $OPS >> $A 2>&1
