#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r/m3.xz", "target/exp/r/m3test.xz", "target/exp/r/q256.xz",
# "target/exp/r/q256test.xz", "target/exp/r/flash3.xz", "target/exp/r/flash3test.xz"] (~6 min).
# Builds (not in git; rebuild if main's kernels have moved): m3 = 5b62218 (the one-pass flash attention;
# the GEMM core's tile declared by each composing module, both 128×256, and its slice registers as one
# struct: neither has run on NVIDIA, and its f16 GEMM should match next51's 188.1 TFLOP/s); q256 = m3 + qtile-256x128.patch (the quantized GEMM's tile 256×128: +32 to 38 % at 4096³ in
# next51/, its unit tests not yet run on NVIDIA); flash3 = m3 + flash-vec.patch (branch flash-vec: the
# flash kernel's scores and probabilities held as vec4s, and tiles that every row of the block sees in
# full skip the masks); *test = `cargo test --release -p torchless-kernels
# --lib --no-run` of each; each stripped, then xz'd.
# 1. Every kernel unit test of m3 on NVIDIA (the cooperative paths run only there). $OUT/ktest_m3.txt
# 2. q256's GEMM unit tests (the quantized GEMM's ragged shapes). $OUT/gtest_q256.txt
# 3. 4096³ GEMMs, m3 / q256 alternating twice. $OUT/gemm.txt
# 4. Llama-3-8B (random) prefill of 2048 tokens: bf16 m3 (the new flash attention, against next50's
#    7938–7944 tok/s); q4_k m3 / q256. $OUT/prefill_*.txt
# 5. flash3's attention tests; flash_attention (4k, causal) m3 / flash3 alternating twice. $OUT/ftest_flash3.txt,
#    $OUT/flash.txt
# If q256's tests pass and its GEMMs win: apply qtile-256x128.patch, commit with the figures; the same for
# flash3 (merge branch flash-vec).
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 120 $D/m3test --test-threads 16 > $OUT/ktest_m3.txt 2>&1
echo "rc $?" >> $OUT/ktest_m3.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/q256test --test-threads 16 gemm > $OUT/gtest_q256.txt 2>&1
echo "rc $?" >> $OUT/gtest_q256.txt
for b in m3 q256 m3 q256; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
P="bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 4"
timeout 60 $D/m3 $P 2>&1 | grep -E "prefill|rror" >> $OUT/prefill_m3_bf16.txt
for b in m3 q256; do
  timeout 60 $D/$b $P --quantize q4_k 2>&1 | grep -E "prefill|rror" >> $OUT/prefill_${b}_q4_k.txt
done
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/flash3test --test-threads 16 attention > $OUT/ftest_flash3.txt 2>&1
echo "rc $?" >> $OUT/ftest_flash3.txt
for b in m3 flash3 m3 flash3; do
  echo "=== $b" >> $OUT/flash.txt
  timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $OUT/flash.txt
done
