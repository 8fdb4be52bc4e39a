#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n54"] (~7 min). Builds in target/exp/n54 (not in git):
# m4 = 8c214ea (main: the quantized GEMM's 256×128 tile and the vectorized flash attention landed);
# fsg = m4 + fsg.patch: the flash kernel's per-subgroup score / probability round trips and its rescale
# synchronised by subgroupBarrier instead of workgroupBarrier, the rescale decided per subgroup
# (subgroupAny) instead of by the workgroup; qk48 = m4 + k48.patch (48-deep slices, for the quantized
# GEMM's 256×128 tile: next53 had it +10 % on q8_0 at 128×256); fsgtest = fsg's kernel unit tests.
# 1. fsg's attention tests on NVIDIA; flash_attention (4k, causal) m4 / fsg alternating twice.
# 2. Quantized 4096³ GEMMs m4 / qk48 alternating twice.
# 3. Llama-3-8B (random) prefill of 2048 tokens, bf16 and q4_k, m4 twice each (fsg once, bf16);
#    bf16 decode profile (context 512, 32 tokens); transformers prefill of the same model.
source .gl/setup.sh
D=target/exp/n54
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/fsgtest --test-threads 16 attention > $OUT/ftest_fsg.txt 2>&1
echo "rc $?" >> $OUT/ftest_fsg.txt
for b in m4 fsg m4 fsg; do
  echo "=== $b" >> $OUT/flash.txt
  timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $OUT/flash.txt
done
for b in m4 qk48 m4 qk48; do
  echo "=== $b" >> $OUT/qgemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $OUT/qgemm.txt
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
cat $M/*.safetensors > /dev/null
P="bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 4"
for b in m4 fsg m4; do
  echo "=== $b" >> $OUT/prefill_bf16.txt
  timeout 60 $D/$b $P 2>&1 | grep -E "prefill|load|rror" >> $OUT/prefill_bf16.txt
done
for b in m4 m4; do
  echo "=== $b" >> $OUT/prefill_q4_k.txt
  timeout 60 $D/$b $P --quantize q4_k 2>&1 | grep -E "prefill|load|rror" >> $OUT/prefill_q4_k.txt
done
timeout 60 $D/m4 bench-model --backend gpu --model $M --context 512 --decode-tokens 32 --prefill-tokens 0 --profile > $OUT/prof_bf16.txt 2>&1
timeout 150 python3 benchmarks/torch_llama.py $M --prefill 2048 --context 512 --decode 8 > $OUT/torch_llama.txt 2>&1
