#!/bin/bash
# Device call A: Llama-3-8B shapes (random weights) decoding over f32, f16 and bf16 KV caches, the build
# before the fused Q/K/V GEMVs wrote 16-bit caches (`base` = 3c2f5c6) against the one after (`head` =
# dc0488c), alternating; bf16 weights and `--quantize q4_k`, contexts 512 and 4096, then 32768 (head only).
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in base head; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1
python3 -c "import json; p='$M/config.json'; c=json.load(open(p)); c['max_position_embeddings']=131072; json.dump(c, open(p, 'w'))"
cat $M/*.safetensors > /dev/null
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/head $BM --decode-tokens 16 > /dev/null 2>&1
for q in bf16 q4k; do
  Q=""; [ $q = q4k ] && Q="--quantize q4_k"
  for ctx in 512 4096; do
    for kv in f32 f16 bf16; do
      for b in base head; do
        timeout 60 /tmp/$b $BM $Q --context $ctx --kv-cache $kv > $R/${q}_${ctx}_${kv}_$b.json 2> $R/${q}_${ctx}_${kv}_$b.err
      done
    done
  done
done
for kv in f16 f32; do
  timeout 120 /tmp/head $BM --context 32768 --kv-cache $kv > $R/bf16_32768_${kv}_head.json 2> $R/bf16_32768_${kv}_head.err
done
cd $OUT && tar czf r.tgz r
