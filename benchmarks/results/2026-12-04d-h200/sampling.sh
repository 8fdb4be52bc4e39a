#!/bin/bash
# Device call: decode with generate's default sampling (bench-model --sampling) against greedy, same
# build (target/devgz/main.xz), alternating, two rounds: Llama-3-8B shapes bf16 and q4_k at context 512,
# SmolLM2-135M shapes q4_1 (host-bound); then one --profile run of Llama bf16 greedy. Writes $OUT/r.tgz.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
xz -dc target/devgz/main.xz > /tmp/main; chmod +x /tmp/main
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
python3 scripts/make_random_llama.py --out /tmp/smol --preset smollm2-135m > $R/make_smol.log 2>&1
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
BM="/tmp/main bench-model --backend gpu --prefill-tokens 0 --json"
for round in 1 2; do for mode in greedy sampling; do
  s=""; [ $mode = sampling ] && s=--sampling
  timeout 60 $BM --model /tmp/llama --decode-tokens 128 $s > $R/bf16_${mode}_$round.json 2> $R/bf16_${mode}_$round.err
  timeout 60 $BM --model /tmp/llama --decode-tokens 128 --quantize q4_k $s > $R/q4k_${mode}_$round.json 2> $R/q4k_${mode}_$round.err
  timeout 60 $BM --model /tmp/smol --decode-tokens 512 --quantize q4_1 $s > $R/smol_${mode}_$round.json 2> $R/smol_${mode}_$round.err
done; done
timeout 90 /tmp/main bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 32 --profile > $R/prof_bf16.txt 2>&1
cd $OUT && tar czf r.tgz r
