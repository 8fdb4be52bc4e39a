#!/bin/bash
# Decode attention in one launch (2026-12-06b): the split kernel's last workgroup of each (row block,
# KV head) merges the partials (MERGE) against the sdpa_decode_reduce launch (TORCHLESS_DECODE_MERGE=0).
# Llama-3-8B shapes, random weights, f16 KV cache, 128 tokens, alternating; then the sdpa_decode bench
# both ways, then what kern.sh's first call lost (PyTorch's memory-bound ops, SmolLM2's Q4_1 shapes).
# Everything goes to $OUT/all.txt, one section a run.
source .gl/setup.sh
A=$OUT/all.txt; B=./target/release/torchless
run() { echo "=== $*" >> $A; timeout 70 "$@" >> $A 2>&1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
[ -f /tmp/llama/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out /tmp/llama > /tmp/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
M="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 128"
for round in 1 2; do
  for m in 1 0; do
    TORCHLESS_DECODE_MERGE=$m run $B $M --quantize q4_k
    TORCHLESS_DECODE_MERGE=$m run $B $M
  done
done
for m in 1 0; do
  TORCHLESS_DECODE_MERGE=$m run $B $M --quantize q4_k --context 4096
done
# With the merge in the launch, fewer or more splits than the plan's (11 at 512) may pay off.
for sp in 4 8 16 22; do
  TORCHLESS_DECODE_MERGE=1 TORCHLESS_DECODE_TUNE=0,0,0,$sp run $B $M --quantize q4_k
done
for m in 1 0 1 0; do
  TORCHLESS_DECODE_MERGE=$m run $B bench --backend gpu --mib 16 --json --ops sdpa_decode
done
run $B bench --backend gpu --mib 64 --json --ops sdpa_decode
TORCHLESS_DECODE_MERGE=0 run $B bench --backend gpu --mib 64 --json --ops sdpa_decode
S=/tmp/smollm2-135m-random
[ -f $S/config.json ] || timeout 60 python3 scripts/make_random_llama.py --preset smollm2-135m --out $S > /tmp/make_smollm2.log 2>&1
run $B bench-model --backend gpu --model $S --quantize q4_1 --context 512 --decode-tokens 128 --prefill-tokens 0
run python3 benchmarks/torch_reference.py 256 1024 --json
