#!/bin/bash
# Device call D: the committed decode attention (`new`: key by key, PREFETCH for 16-bit caches) against
# acfb551 (`kp` run without TORCHLESS_DECODE_KP is that build's kernel): sdpa_decode twice each,
# alternating; Llama-3-8B shapes (random weights) bf16 after 32768 tokens and q4_k at 4096 (f16 cache).
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in kp new; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
(timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1
 python3 -c "import json; p='$M/config.json'; c=json.load(open(p)); c['max_position_embeddings']=131072; json.dump(c, open(p, 'w'))"
 cat $M/*.safetensors > /dev/null) &
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
for round in 1 2; do for mib in 128 16; do for b in kp new; do
  timeout 30 /tmp/$b $BS --mib $mib > $R/sdpa_${mib}_${b}_$round.json 2> $R/sdpa_${mib}_${b}_$round.err
done; done; done
wait
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json"
for b in kp new; do
  timeout 120 /tmp/$b $BM --context 32768 > $R/bf16_32768_$b.json 2> $R/bf16_32768_$b.err
  timeout 60 /tmp/$b $BM --context 4096 --quantize q4_k > $R/q4k_4096_$b.json 2> $R/q4k_4096_$b.err
done
cd $OUT && tar czf r.tgz r
