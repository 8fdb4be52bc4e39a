#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r/main.xz", "target/exp/r/flashv4h.xz",
# "target/exp/r/flashv4htest.xz", "target/exp/r/c512.xz", "target/exp/r/c512test.xz"] (~5.5 min).
# Builds (not in git; rebuild if main's kernels have moved): main = c905baa,
# flashv4h = main + flash-v4h.patch (the cooperative flash attention staging K/V/Q as vec4<f16>s, as the
# GEMM core now does), flashv4htest = its `cargo test --release -p torchless-kernels --lib --no-run`;
# c512 = main + coop-512.patch (the GEMM core's 128×256 tile computed by 16 subgroups of 64×32 instead of
# 8 of 64×64: twice the warps a multiprocessor if registers bound it to one workgroup, 6 fragment loads
# for 8 products instead of 8 for 16), c512test its tests; each stripped, then xz'd.
# 1. flash_attention (4k tokens, causal), main against flashv4h, alternating twice. $OUT/flash.txt
# 2. flashv4h's attention unit tests on NVIDIA (its cooperative path runs there only). $OUT/ftest.txt
# 3. PyTorch at 1 GiB (add_rmsnorm sized as ours) between two runs of our rmsnorm, add_rmsnorm, softmax.
#    $OUT/torch.txt, $OUT/norms.txt
# 4. main against c512, 4096³ GEMMs, alternating twice; c512's GEMM unit tests on NVIDIA. $OUT/gemm.txt,
#    $OUT/gtest.txt
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
for b in main c512 main c512; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/c512test --test-threads 16 gemm > $OUT/gtest.txt 2>&1
echo "rc $?" >> $OUT/gtest.txt
