#!/bin/bash
# Device call: the fused Q/K/V + RoPE GEMV's epilogue. base = device.xz (9717419: a loop over the pairs,
# each with its own rope_cos_sin, coefficients in loop-indexed private arrays); fix = fix.xz (both pairs in
# one rope_cos_sin, constant indices only); abl = abl.xz (fix with the rotation skipped: wrong results,
# timing only; the bound of what the epilogue's arithmetic costs). Per-launch profiles of Llama-3-8B
# bf16 and q4_k decode (the 1536-workgroup launch is Q/K/V), then unprofiled decode, base and fix
# alternating twice. Carries .gl and target/devgz; writes $OUT/rope.tgz.
source .gl/setup.sh
R=$OUT/rope; mkdir -p $R
for b in device fix abl; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
P="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 32 --profile"
for b in device fix abl; do
  timeout 80 /tmp/$b $P > $R/prof_bf16_$b.txt 2>&1
  timeout 80 /tmp/$b $P --quantize q4_k > $R/prof_q4k_$b.txt 2>&1
done
BM="bench-model --backend gpu --prefill-tokens 0 --json --model /tmp/llama --decode-tokens 128"
for round in 1 2; do for b in device fix; do
  timeout 60 /tmp/$b $BM > $R/bf16_${b}_$round.json 2> $R/bf16_${b}_$round.err
  timeout 60 /tmp/$b $BM --quantize q4_k > $R/q4k_${b}_$round.json 2> $R/q4k_${b}_$round.err
done; done
cd $OUT && tar czf rope.tgz rope
