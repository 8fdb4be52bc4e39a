#!/bin/bash
# GPU machine, carry [".gl", base.xz, c256.xz, c256test.xz under target/exp/r] (~3 min): the cooperative
# core of 128×256 tiles staged in vec4<f16>s as it is to land (c256: dense and quantized GEMM) against
# base (main before it), alternating twice, 4096³ f16 / bf16 and the quantized prefill GEMMs; then every
# kernel unit test of c256 on NVIDIA (the cooperative paths run there). $OUT/gemm.txt, $OUT/ktest.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for b in base c256 base c256; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
env TORCHLESS_REQUIRE_GPU=1 timeout 150 $D/c256test --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
