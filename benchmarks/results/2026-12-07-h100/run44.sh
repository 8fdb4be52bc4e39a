#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r"] (prepare43.sh's builds, plus own-floor-nodyn = own-floor
# with own_entry picking its entry by selects instead of a dynamic vector index: own-floor-nodyn.patch on
# top of own-floor.patch), ~5 min, in order:
# 1. top-k at 256 MiB: base, vec2 (main + topk-vec2.patch: candidates as vec2 pairs), twice (the
#    own-floor builds were dropped to fit the device time left). $OUT/topk.txt; vec2's select unit tests on NVIDIA
#    (vec2test). $OUT/ktest.txt
# 2. every issue-2 op at 256 MiB and 1 GiB with base (= main's kernels). $OUT/ops256.txt, $OUT/ops1024.txt
# 3. PyTorch's timings (benchmarks/torch_reference.py, add_rmsnorm now sized as ours), then ours for
#    rmsnorm, add_rmsnorm, softmax again. $OUT/torch.txt, $OUT/norms.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for b in base vec2 base vec2; do
  echo "=== $b 256" >> $OUT/topk.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
done
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/vec2test --test-threads 16 select > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,embedding,argmax,topk,cast,copy
for mib in 256 1024; do
  timeout 200 $D/base bench --backend gpu --mib $mib --ops $OPS > $OUT/ops$mib.txt 2>&1
done
timeout 120 python3 benchmarks/torch_reference.py 256 1024 > $OUT/torch.txt 2>&1
for mib in 256 1024; do
  timeout 60 $D/base bench --backend gpu --mib $mib --ops rmsnorm,add_rmsnorm,softmax >> $OUT/norms.txt 2>&1
done
