#!/bin/bash
# Issue 2 on the H100: top-k scanning without a barrier a tile (this build, ROUND_TILES 8) against the
# kernel before it (torchless_old, 3f6b09d) and ROUND_TILES 32 (torchless_r32), alternating; then every
# op of issue 2's item 4 at 256 MiB and PyTorch's figures. All into $OUT/all.txt (table) and
# $OUT/bench_256.json, $OUT/torch.json. ~6 min.
source .gl/setup.sh
A=$OUT/all.txt; R=./target/release
tar xJf $R/variants.tar.xz -C $R
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
for mib in 256 1024; do
  for b in torchless_old torchless torchless_r32 torchless; do
    echo "=== $b --mib $mib" >> $A
    timeout 60 $R/$b bench --backend gpu --mib $mib --ops topk,argmax >> $A 2>&1
  done
done
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,cast,copy,embedding,argmax,topk
timeout 240 $R/torchless bench --backend gpu --mib 256 --json --ops $OPS > $OUT/bench_256.json 2>> $A
timeout 120 python3 benchmarks/torch_reference.py 256 1024 --json > $OUT/torch.json 2>> $A
