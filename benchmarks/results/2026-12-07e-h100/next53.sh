#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r/m3.xz", "target/exp/r/q256.xz", "target/exp/r/q256test.xz",
# "target/exp/r/flash3.xz", "target/exp/r/flash3test.xz", "target/exp/n53"] (~7 min).
# next52.sh of 2026-12-07d (m3 = 5b62218, q256 = m3 + qtile-256x128.patch, flash3 = m3 + flash-vec.patch),
# plus pf2 = m3 + n53/pf2.patch: the GEMM core keeps two slices in flight (slice t + 2 fetched while slice
# t is multiplied) instead of one; k48 = m3 + n53/k48.patch: 48-deep slices (a third fewer barriers; the
# epilogue's scratch shared by 4 subgroups at a time so that the staging fits). *test = `cargo test --release -p torchless-kernels --lib --no-run`.
# 1. Every kernel unit test of q256 (m3 but the quantized GEMM's tile) on NVIDIA. $OUT/ktest_q256.txt
# 2. 4096³ GEMMs, m3 / q256 / pf2 / k48 alternating twice. $OUT/gemm.txt
# 3. Llama-3-8B (random) prefill of 2048 tokens: bf16 m3 (against next50's 7938–7944 tok/s at c905baa);
#    q4_k m3 / q256. $OUT/prefill_*.txt
# 4. flash3's attention tests; flash_attention (4k, causal) m3 / flash3 alternating twice.
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz target/exp/n53/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
cp target/exp/n53/pf2 target/exp/n53/k48 $D/
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 120 $D/q256test --test-threads 16 > $OUT/ktest_q256.txt 2>&1
echo "rc $?" >> $OUT/ktest_q256.txt
for b in m3 q256 pf2 k48 m3 q256 pf2 k48; do
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
