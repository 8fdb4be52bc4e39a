#!/bin/bash
# Device call B: Llama-3-8B shapes (random weights) decoding over an f32 and an f16 KV cache
# (`--kv-cache`), bf16 and `--quantize q4_k`, at contexts 512, 4096 and 32768; bf16 at 512 also times a
# 2048-token prefill (the cooperative flash attention then writes/reads the f16 cache).
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
xz -dc target/devgz/new.xz > /tmp/new; chmod +x /tmp/new
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1
cat $M/*.safetensors > /dev/null
# Llama 3.1's own limit (the script writes Llama 3's 8192), so that a 32768-token context is allowed.
python3 -c "import json; p='$M/config.json'; c=json.load(open(p)); c['max_position_embeddings']=131072; json.dump(c, open(p, 'w'))"
BM="bench-model --backend gpu --model $M --decode-tokens 128 --json"
timeout 60 /tmp/new bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
for kv in f32 f16; do
  timeout 90 /tmp/new $BM --context 512 --prefill-tokens 2048 --kv-cache $kv > $R/bf16_512_$kv.json 2> $R/bf16_512_$kv.err
  timeout 90 /tmp/new $BM --context 4096 --prefill-tokens 0 --kv-cache $kv > $R/bf16_4096_$kv.json 2> $R/bf16_4096_$kv.err
done
for kv in f32 f16; do
  timeout 90 /tmp/new $BM --context 512 --prefill-tokens 0 --quantize q4_k --kv-cache $kv > $R/q4k_512_$kv.json 2> $R/q4k_512_$kv.err
  timeout 90 /tmp/new $BM --context 4096 --prefill-tokens 0 --quantize q4_k --kv-cache $kv > $R/q4k_4096_$kv.json 2> $R/q4k_4096_$kv.err
done
for kv in f16 f32; do
  timeout 150 /tmp/new $BM --context 32768 --prefill-tokens 0 --kv-cache $kv > $R/bf16_32768_$kv.json 2> $R/bf16_32768_$kv.err
done
cd $OUT && tar czf r.tgz r
