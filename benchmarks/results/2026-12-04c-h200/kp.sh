#!/bin/bash
# Device call B: the subgroup decode attention with U keys a lane group a step (1, 2, 4) and with or
# without loading the next step's K/V before folding the current one (PREFETCH), set by the experimental
# TORCHLESS_DECODE_KP=U,PREFETCH of the build `kp` (acfb551 + that variable): sdpa_decode at 1k/4k/32k
# keys (f16) and 512/2k/16k (f32), the automatic plan, at 32k also 32 splits and one row a workgroup;
# then Llama-3-8B shapes (random weights) bf16 decoding at context 4096 (f16 cache) per setting.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
xz -dc target/devgz/kp.xz > /tmp/kp; chmod +x /tmp/kp
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
(timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1; cat $M/*.safetensors > /dev/null) &
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
KPS="4,0 4,1 2,0 2,1 1,0 1,1 3,1"
for mib in 128 16 4; do for kp in $KPS; do
  TORCHLESS_DECODE_KP=$kp timeout 30 /tmp/kp $BS --mib $mib > $R/sdpa_${mib}_$kp.json 2> $R/sdpa_${mib}_$kp.err
done; done
for tune in 0,0,0,32 0,0,1,0 0,0,1,32; do for kp in $KPS; do
  TORCHLESS_DECODE_TUNE=$tune TORCHLESS_DECODE_KP=$kp timeout 30 /tmp/kp $BS --mib 128 > $R/sdpa_128_${kp}_t$tune.json 2> $R/sdpa_128_${kp}_t$tune.err
done; done
wait
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json --context 4096"
timeout 60 /tmp/kp $BM --decode-tokens 16 > /dev/null 2>&1
for round in 1 2; do for kp in 4,0 4,1 2,1; do
  TORCHLESS_DECODE_KP=$kp timeout 60 /tmp/kp $BM > $R/bf16_4096_${kp}_$round.json 2> $R/bf16_4096_${kp}_$round.err
done; done
cd $OUT && tar czf r.tgz r
