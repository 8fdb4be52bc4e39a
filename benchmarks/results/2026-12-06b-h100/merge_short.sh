#!/bin/bash
# merge.sh cut to what the session's last device minutes hold: Llama-3-8B decode (q4_k, bf16) and the
# sdpa_decode bench with the in-kernel merge (1) and with sdpa_decode_reduce (0), alternating. $OUT/all.txt.
source .gl/setup.sh
A=$OUT/all.txt; B=./target/release/torchless
run() { echo "=== $*" >> $A; timeout 60 "$@" >> $A 2>&1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
for m in 1 0; do
  TORCHLESS_DECODE_MERGE=$m run $B bench --backend gpu --mib 16 --json --ops sdpa_decode
done
[ -f /tmp/llama/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out /tmp/llama >> $A 2>&1
cat /tmp/llama/*.safetensors > /dev/null
M="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 128"
for m in 1 0; do
  TORCHLESS_DECODE_MERGE=$m run $B $M --quantize q4_k
done
for m in 1 0; do
  TORCHLESS_DECODE_MERGE=$m run $B $M
done
TORCHLESS_DECODE_MERGE=1 run $B $M --quantize q4_k
