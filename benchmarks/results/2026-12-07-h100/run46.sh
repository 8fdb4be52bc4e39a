#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r"], after run45.sh on the same warm machine (~5 min):
# 1. every issue-2 op at 1 GiB with base (= main's kernels). $OUT/ops1024.txt
# 2. PyTorch at 1 GiB (add_rmsnorm sized as ours) between two runs of our rmsnorm, add_rmsnorm, softmax.
#    $OUT/torch.txt, $OUT/norms.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,embedding,argmax,topk,cast,copy
timeout 300 $D/base bench --backend gpu --mib 1024 --ops $OPS > $OUT/ops1024.txt 2>&1
N="rmsnorm,add_rmsnorm,softmax"
timeout 50 $D/base bench --backend gpu --mib 1024 --ops $N 2>&1 | grep -E "^(rms|add|soft)|copy" >> $OUT/norms.txt
timeout 90 python3 benchmarks/torch_reference.py 1024 > $OUT/torch.txt 2>&1
timeout 50 $D/base bench --backend gpu --mib 1024 --ops $N 2>&1 | grep -E "^(rms|add|soft)|copy" >> $OUT/norms.txt
