#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r"] (~4 min; carry .gl and those binaries' .xz, 8 paths): the cooperative GEMM core, 4096³, against
# base (main), alternating twice:
# - coopv4h = main + coop-v4h.patch: staging vec4<f16>s (a chunk is two 8-byte stores instead of eight
#   2-byte ones; fragments loaded from vec4<f16> arrays);
# - coop256 = main + coop256.patch: a 128×256 tile a workgroup, each subgroup 64×64 (4×4 fragments, 8
#   fragment loads for 16 products instead of 6 for 8), 32-deep slices (dense GEMM only: the quantized one
#   is broken in that build);
# - coop256v4h = main + coop256-v4h.patch: both.
# Then their GEMM unit tests on NVIDIA (the cooperative paths run there, not on lavapipe).
# $OUT/gemm.txt, $OUT/gtest.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for b in base coopv4h coop256 coop256v4h base coopv4h coop256 coop256v4h; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
for t in coopv4htest coop256test coop256v4htest; do
  echo "=== $t" >> $OUT/gtest.txt
  env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/$t --test-threads 16 gemm >> $OUT/gtest.txt 2>&1
  echo "rc $?" >> $OUT/gtest.txt
done
