#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/r/base.xz", "target/exp/r/main.xz"] (~6.5 min): Llama-3-8B
# (random weights) prefill of 2048 tokens, bf16 (alternating twice) and q4_k (once), base (7706bb0's kernels: 128×128 cooperative
# tiles) against main (c905baa: 128×256 tiles staged in vec4<f16>s), alternating. $OUT/prefill_*.txt
source .gl/setup.sh
D=target/exp/r
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
P="bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 16"
for b in base main base main; do
  timeout 60 $D/$b $P >> $OUT/prefill_${b}_bf16.txt 2>&1
done
for b in base main; do
  timeout 60 $D/$b $P --quantize q4_k >> $OUT/prefill_${b}_q4_k.txt 2>&1
done
