#!/bin/bash
# GPU machine (H100), after prepare43.sh, carry [".gl", "target/exp/r"], ~6 min, in order:
# 1. top-k (k = 64, rows of 128256 f32): base, own, own-v4, own-floor at 256 MiB alternating twice, 1 GiB once.
#    $OUT/topk.txt
# 2. own's select unit tests on NVIDIA. $OUT/ktest.txt
# 3. every op at 256 MiB and 1 GiB with the better own build. $OUT/ops256.txt, $OUT/ops1024.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for mib in 256 256 1024; do
  for b in base own own-v4 own-floor; do
    echo "=== $b $mib" >> $OUT/topk.txt
    timeout 60 $D/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk|rror" >> $OUT/topk.txt
  done
done
env TORCHLESS_REQUIRE_GPU=1 timeout 90 $D/owntest --test-threads 16 select > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
for mib in 256 1024; do
  timeout 150 $D/own bench --backend gpu --mib $mib > $OUT/ops$mib.txt 2>&1
done
# 4. PyTorch's timings of the same ops (rmsnorm, add_rmsnorm, softmax beside ours). $OUT/torch.txt
timeout 120 python3 benchmarks/torch_reference.py 256 1024 > $OUT/torch.txt 2>&1
