#!/bin/bash
# For the device machine, to decide branch `fused-merge`: its build (`merged`, xz-compressed in
# target/devgz/merged.xz) against main's (`main.xz`), alternating: sdpa_decode at 1k/4k/32k keys (f16; f32
# at 512/2k/16k), the split count swept at 512 and 4096 keys with the merged build, and Llama-3-8B shapes
# (random weights, f16 KV cache) bf16 and q4_k decoding at contexts 512 and 4096. Writes $OUT/r.tgz.
# Run from the repo root with `.gl/` carried: bash benchmarks/merge_ab.sh
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in main merged; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
(timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1; cat $M/*.safetensors > /dev/null) &
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
for round in 1 2; do for mib in 128 16 4 2; do for b in main merged; do
  timeout 30 /tmp/$b $BS --mib $mib > $R/sdpa_${mib}_${b}_$round.json 2> $R/sdpa_${mib}_${b}_$round.err
done; done; done
for mib in 2 16; do for sp in 1 4 8 16 32; do
  TORCHLESS_DECODE_TUNE=0,0,0,$sp timeout 30 /tmp/merged $BS --mib $mib > $R/sdpa_${mib}_merged_s$sp.json 2> $R/sdpa_${mib}_merged_s$sp.err
done; done
wait
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/merged $BM --decode-tokens 16 > /dev/null 2>&1
for round in 1 2; do for ctx in 512 4096; do for b in main merged; do
  timeout 60 /tmp/$b $BM --context $ctx > $R/bf16_${ctx}_${b}_$round.json 2> $R/bf16_${ctx}_${b}_$round.err
  timeout 60 /tmp/$b $BM --context $ctx --quantize q4_k > $R/q4k_${ctx}_${b}_$round.json 2> $R/q4k_${ctx}_${b}_$round.err
done; done; done
cd $OUT && tar czf r.tgz r
