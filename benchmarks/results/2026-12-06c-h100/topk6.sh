#!/bin/bash
# Prepared for the next device call: build HEAD with topk_switches2.diff applied, then run with carry
# [".gl", "target/release/torchless"]. Top-k with the next tile's loads issued before the current tile is
# tested (TORCHLESS_EXP_TOPK_PF=1) and a float pre-test of each unit (TORCHLESS_EXP_TOPK_FLT=1), alternating
# with neither (the committed kernel); then every op of issue 2 at 256 MiB on the H100 and PyTorch's
# figures (256 MiB and 1 GiB) for the "faster than PyTorch" targets. $OUT/all.txt, $OUT/torch.json. ~5 min.
source .gl/setup.sh
A=$OUT/all.txt; B=./target/release/torchless
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
one() { echo "=== $* --mib $mib" >> $A; env "$@" timeout 40 $B bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "topk|copy bandwidth:" | head -2 >> $A; }
for mib in 256 1024; do
  one X=0
  one TORCHLESS_EXP_TOPK_PF=1
  one TORCHLESS_EXP_TOPK_FLT=1
  one TORCHLESS_EXP_TOPK_PF=1 TORCHLESS_EXP_TOPK_FLT=1
  one X=0
done
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,cast,copy,embedding,argmax,topk
echo "=== all ops --mib 256" >> $A
timeout 150 $B bench --backend gpu --mib 256 --ops $OPS >> $A 2>&1
timeout 120 python3 benchmarks/torch_reference.py 256 1024 --json > $OUT/torch.json 2>> $A
