#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r/main.xz", "target/exp/r/flashv4h.xz",
# "target/exp/r/flashv4htest.xz"] (~4 min). Builds (not in git; rebuild if main has moved): main = c905baa,
# flashv4h = main + flash-v4h.patch (the cooperative flash attention staging K/V/Q as vec4<f16>s, as the
# GEMM core now does), flashv4htest = its `cargo test --release -p torchless-kernels --lib --no-run`;
# each stripped, then xz'd.
# 1. flash_attention (4k tokens, causal), main against flashv4h, alternating twice. $OUT/flash.txt
# 2. flashv4h's attention unit tests on NVIDIA (its cooperative path runs there only). $OUT/ftest.txt
# 3. PyTorch at 1 GiB (add_rmsnorm sized as ours) between two runs of our rmsnorm, add_rmsnorm, softmax.
#    $OUT/torch.txt, $OUT/norms.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for b in main flashv4h main flashv4h; do
  echo "=== $b" >> $OUT/flash.txt
  timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $OUT/flash.txt
done
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/flashv4htest --test-threads 16 attention > $OUT/ftest.txt 2>&1
echo "rc $?" >> $OUT/ftest.txt
N="rmsnorm,add_rmsnorm,softmax"
timeout 40 $D/main bench --backend gpu --mib 1024 --ops $N 2>&1 | grep -E "^(rms|add|soft)|copy" >> $OUT/norms.txt
timeout 90 python3 benchmarks/torch_reference.py 1024 > $OUT/torch.txt 2>&1
timeout 40 $D/main bench --backend gpu --mib 1024 --ops $N 2>&1 | grep -E "^(rms|add|soft)|copy" >> $OUT/norms.txt
