#!/bin/bash
# Device call E: the decode attention's step in two phases (K slices unpacked, scored by every row and
# dropped before the V slices are unpacked: "two") beside 3c2f5c6 ("new"), alternating: sdpa_decode at
# 1024/4096/32768 keys (f16) and 512/2048/16384 (f32), split counts around the plan's at 32768 keys, and
# Llama-3-8B shapes bf16 decoding at context 4096.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in new two; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
(timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1) &
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
for round in 1 2; do for mib in 128 16 4; do for b in new two; do
  timeout 30 /tmp/$b $BS --mib $mib > $R/sdpa_${mib}_${b}_$round.json 2> $R/sdpa_${mib}_${b}_$round.err
done; done; done
for sp in 24 32; do for b in new two; do
  TORCHLESS_DECODE_TUNE=0,0,0,$sp timeout 30 /tmp/$b $BS --mib 128 > $R/sdpa_128_${b}_s$sp.json 2> $R/sdpa_128_${b}_s$sp.err
done; done
wait
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/two bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
for round in 1 2; do for b in new two; do
  timeout 60 /tmp/$b $BM --context 4096 > $R/bf16_4096_${b}_$round.json 2> $R/bf16_4096_${b}_$round.err
done; done
cd $OUT && tar czf r.tgz r
