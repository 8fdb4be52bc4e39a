#!/bin/bash
# On branch topk-sg: `cargo build --release`, then run with carry [".gl", "target/release/torchless"].
# Top-k switches of that branch, alternating, at 256 MiB and 1 GiB (none = the kernel on main at 4625b97):
#   SG  offers placed with one atomic a subgroup (select_offer_subgroup.wgsl)
#   DBL rounds of 1, 2, 4, 8 tiles that merge whatever the buffer holds (the threshold tightens sooner)
#   FLT a float pre-test of each unit;  PF the next tile's loads issued before the current tile's tests
#   TQ  each thread keeps its best five in registers, the workgroup merges their best four once (and
#       rescans the exact way when a thread's fifth beats the k-th: ~0.2 % of random rows)
# then every issue-2 op at 256 MiB and PyTorch at 256 MiB and 1 GiB. $OUT/all.txt, $OUT/torch.json. ~6 min.
source .gl/setup.sh
A=$OUT/all.txt; B=./target/release/torchless
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
one() { echo "=== $* --mib $mib" >> $A; env "$@" timeout 40 $B bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "topk|copy bandwidth:" | head -2 >> $A; }
E=TORCHLESS_EXP_TOPK
for mib in 256 1024; do
  one X=0
  one ${E}_SG=1
  one ${E}_DBL=1
  one ${E}_SG=1 ${E}_DBL=1
  one ${E}_FLT=1
  one ${E}_PF=1
  one ${E}_SG=1 ${E}_DBL=1 ${E}_FLT=1
  one ${E}_SG=1 ${E}_DBL=1 ${E}_FLT=1 ${E}_PF=1
  one ${E}_TQ=1
  one ${E}_TQ=1 ${E}_SG=1 ${E}_DBL=1
  one ${E}_TQ=1 ${E}_PF=1
  one X=0
  one ${E}_TQ=1
done
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,cast,copy,embedding,argmax,topk
echo "=== all ops --mib 256" >> $A
timeout 150 $B bench --backend gpu --mib 256 --ops $OPS >> $A 2>&1
timeout 120 python3 benchmarks/torch_reference.py 256 1024 --json > $OUT/torch.json 2>> $A
