#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n51"] (~6 min), which holds m2, t256x128, t128x128, flash1,
# flash2 (.xz) and the tests of flash1 and flash2 (t4x4 and the GEMM variants' tests left out: 64 MB).
# Builds (not in git): m2 = 8662bee (128×256 tiles, 16 subgroups of 64×32) with gemm_at_b / gemm_a_bt
# benched in f16 (so they take the cooperative path: the layouts' staging and fragment loads);
# t256x128 = 8662bee + tile-256x128.patch (256×128 tiles, 16 subgroups of 64×32: the quantized GEMM
# dequantizes each weight once per 256 rows of x instead of 128); t128x128 = 8662bee + tile-128x128.patch
# (128×128 tiles, 8 subgroups of 64×32, 28 KiB: two workgroups a multiprocessor if registers allow, one's
# barriers under the other's products); t4x4 = 8662bee + sub-32x64.patch (the same tile by 16 subgroups of
# 32×64, 2×4 fragments, arranged 4×4); flash1 = 8662bee + flash-onepass.patch (the cooperative flash
# attention in one pass whose reference max moves only when scores pass it by more than 8, the next K/V
# tile prefetched into registers); flash2 = flash1 + flash-onepass-128rows.patch (128 query rows, 8
# subgroups, a workgroup: each K/V tile staged once for twice the rows; 45 KiB); *test = their kernel
# unit tests.
# (In this order: 2, 4, 1, 3.)
# 1. 4096³ GEMMs, m2 / t256x128 / t128x128 alternating twice; m2's layouts. $OUT/gemm.txt
# 2. The flash variants' attention unit tests on NVIDIA. $OUT/gtest_*.txt
# 3. Llama-3-8B (random) prefill of 2048 tokens, bf16 and q4_k, each binary once. $OUT/prefill_*.txt
# 4. flash_attention (4k, causal) m2 / flash1 / flash2 alternating twice. $OUT/flash.txt
source .gl/setup.sh
D=target/exp/n51
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
for b in flash1 flash2; do
  f=attention
  env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/${b}test --test-threads 16 $f > $OUT/gtest_$b.txt 2>&1
  echo "rc $?" >> $OUT/gtest_$b.txt
done
for b in m2 flash1 flash2 m2 flash1 flash2; do
  echo "=== $b" >> $OUT/flash.txt
  timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $OUT/flash.txt
done
for b in m2 t256x128 t128x128 m2 t256x128 t128x128; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
echo "=== m2 layouts" >> $OUT/gemm.txt
timeout 60 $D/m2 bench --backend gpu --mib 256 --ops gemm_f16,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
P="bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 4"
for b in m2 t256x128 t128x128 flash1 flash2; do
  timeout 60 $D/$b $P 2>&1 | grep -E "prefill|rror" >> $OUT/prefill_${b}_bf16.txt
done
for b in m2 t256x128 t128x128; do
  timeout 60 $D/$b $P --quantize q4_k 2>&1 | grep -E "prefill|rror" >> $OUT/prefill_${b}_q4_k.txt
done
