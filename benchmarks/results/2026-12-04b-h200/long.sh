#!/bin/bash
# Device call D: Llama-3-8B shapes (random weights) decoding after a 32768-token context, which ran out of
# memory in call B (model/bf16_32768_*.err): bf16 over an f32 and an f16 KV cache, and q4_k over f16.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
xz -dc target/devgz/new.xz > /tmp/new; chmod +x /tmp/new
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1
python3 -c "import json; p='$M/config.json'; c=json.load(open(p)); c['max_position_embeddings']=131072; json.dump(c, open(p, 'w'))"
cat $M/*.safetensors > /dev/null
T=""; [ -x /usr/bin/time ] && T="/usr/bin/time -v"
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --context 32768 --json"
for kv in f32 f16; do
  $T timeout 150 /tmp/new $BM --kv-cache $kv > $R/bf16_32768_$kv.json 2> $R/bf16_32768_$kv.err
done
$T timeout 150 /tmp/new $BM --kv-cache f16 --quantize q4_k > $R/q4k_32768_f16.json 2> $R/q4k_32768_f16.err
cd $OUT && tar czf r.tgz r
