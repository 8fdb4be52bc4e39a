#!/bin/bash
# Device call (not yet run): decode with generate's default sampling (bench-model --sampling) against
# greedy, and host draws against device draws. Builds, xz-compressed in target/devgz/: host.xz = a5c5ff9
# (each sampled token read back and drawn on the host), device.xz = 7304ba0 or later (drawn on the
# device, the host one step behind). Alternating, two rounds: Llama-3-8B shapes bf16 and q4_k at context
# 512, SmolLM2-135M shapes q4_1 (host-bound); then one --profile run of Llama bf16 greedy. Writes
# $OUT/r.tgz. Run from the repo root with .gl/ and target/devgz carried.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in host device; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
python3 scripts/make_random_llama.py --out /tmp/smol --preset smollm2-135m > $R/make_smol.log 2>&1
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
BM="bench-model --backend gpu --prefill-tokens 0 --json"
for round in 1 2; do for run in device:greedy host:sampling device:sampling; do
  b=${run%:*}; mode=${run#*:}; s=""; [ $mode = sampling ] && s=--sampling
  timeout 60 /tmp/$b $BM --model /tmp/llama --decode-tokens 128 $s > $R/bf16_${b}_${mode}_$round.json 2> $R/bf16_${b}_${mode}_$round.err
  timeout 60 /tmp/$b $BM --model /tmp/llama --decode-tokens 128 --quantize q4_k $s > $R/q4k_${b}_${mode}_$round.json 2> $R/q4k_${b}_${mode}_$round.err
  timeout 60 /tmp/$b $BM --model /tmp/smol --decode-tokens 512 --quantize q4_1 $s > $R/smol_${b}_${mode}_$round.json 2> $R/smol_${b}_${mode}_$round.err
done; done
timeout 90 /tmp/device bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 32 --profile > $R/prof_bf16.txt 2>&1
cd $OUT && tar czf r.tgz r
