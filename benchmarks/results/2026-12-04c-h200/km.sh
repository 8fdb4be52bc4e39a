#!/bin/bash
# Device call C: the decode attention's step key by key ("km": each K or V slice unpacked where it is
# used, at most two rows; acfb551 + this change + TORCHLESS_DECODE_KP=U,PREFETCH) against the row-by-row
# step of call B ("kp"), per U and PREFETCH; with 16 lanes a row (TORCHLESS_DECODE_TUNE) too; then
# Llama-3-8B shapes (random weights) bf16 decoding at contexts 4096 and 512 (f16 cache).
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in kp km; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
(timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1; cat $M/*.safetensors > /dev/null) &
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
for mib in 128 16; do
  for kp in 4,0 4,1 3,1 2,1; do for b in kp km; do
    TORCHLESS_DECODE_KP=$kp timeout 30 /tmp/$b $BS --mib $mib > $R/sdpa_${mib}_${b}_$kp.json 2> $R/sdpa_${mib}_${b}_$kp.err
  done; done
  for tune in 16,256,0,0 16,128,0,0; do for kp in 4,0 4,1 3,1 2,1; do
    TORCHLESS_DECODE_TUNE=$tune TORCHLESS_DECODE_KP=$kp timeout 30 /tmp/km $BS --mib $mib > $R/sdpa_${mib}_km_${kp}_t$tune.json 2> $R/sdpa_${mib}_km_${kp}_t$tune.err
  done; done
done
wait
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/km $BM --decode-tokens 16 > /dev/null 2>&1
for ctx in 4096 512; do
  TORCHLESS_DECODE_KP=4,0 timeout 60 /tmp/kp $BM --context $ctx > $R/bf16_${ctx}_kp_4,0.json 2> $R/bf16_${ctx}_kp_4,0.err
  for kp in 4,0 3,1 4,1; do
    TORCHLESS_DECODE_KP=$kp timeout 60 /tmp/km $BM --context $ctx > $R/bf16_${ctx}_km_$kp.json 2> $R/bf16_${ctx}_km_$kp.err
  done
done
cd $OUT && tar czf r.tgz r
