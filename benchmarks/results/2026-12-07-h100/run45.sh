#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r"]: run44.sh cut to the device time left (~2.5 min):
# 1. top-k at 256 MiB: base (main's kernels), vec2 (main + topk-vec2.patch), vec2all (main +
#    topk-vec2all.patch: the list too), twice; 1 GiB once each. $OUT/topk.txt
# 2. vec2's and vec2all's select unit tests on NVIDIA. $OUT/ktest.txt
# 3. PyTorch at 256 MiB (add_rmsnorm sized as ours), between two runs of our rmsnorm, add_rmsnorm,
#    softmax. $OUT/torch.txt, $OUT/norms.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for mib in 256 256 1024; do
  for b in base vec2 vec2all; do
    echo "=== $b $mib" >> $OUT/topk.txt
    timeout 40 $D/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
  done
done
for t in vec2test vec2alltest; do
  echo "=== $t" >> $OUT/ktest.txt
  env TORCHLESS_REQUIRE_GPU=1 timeout 40 $D/$t --test-threads 16 select >> $OUT/ktest.txt 2>&1
  echo "rc $?" >> $OUT/ktest.txt
done
N="rmsnorm,add_rmsnorm,softmax"
timeout 30 $D/base bench --backend gpu --mib 256 --ops $N 2>&1 | grep -E "^(rms|add|soft)|copy" >> $OUT/norms.txt
timeout 60 python3 benchmarks/torch_reference.py 256 > $OUT/torch.txt 2>&1
timeout 30 $D/base bench --backend gpu --mib 256 --ops $N 2>&1 | grep -E "^(rms|add|soft)|copy" >> $OUT/norms.txt
