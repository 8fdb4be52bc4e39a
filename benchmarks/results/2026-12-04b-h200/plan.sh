#!/bin/bash
# Device call C: the new decode plan (8 lanes a K/V row, 256 workgroups: "plan") beside d20ebe6 ("base"):
# sdpa_decode around the plan's split count, then Llama-3-8B shapes (random weights) bf16 and q4_k
# decoding at contexts 4096 (two rounds, alternating) and 512.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in base plan; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
M=/tmp/llama3-8b-random
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
[ -f $M/config.json ] || timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make_llama.log 2>&1
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
for mib in 128 16 4; do
  timeout 30 /tmp/base $BS --mib $mib > $R/sdpa_${mib}_base.json 2> $R/sdpa_${mib}_base.err
  timeout 30 /tmp/plan $BS --mib $mib > $R/sdpa_${mib}_plan.json 2> $R/sdpa_${mib}_plan.err
  for sp in 8 12 24; do
    TORCHLESS_DECODE_TUNE=0,0,0,$sp timeout 30 /tmp/plan $BS --mib $mib > $R/sdpa_${mib}_plan_s$sp.json 2> $R/sdpa_${mib}_plan_s$sp.err
  done
done
cat $M/*.safetensors > /dev/null
BM="bench-model --backend gpu --model $M --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/plan bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
for round in 1 2; do for b in base plan; do
  timeout 60 /tmp/$b $BM --context 4096 > $R/bf16_4096_${b}_$round.json 2> $R/bf16_4096_${b}_$round.err
  timeout 90 /tmp/$b $BM --context 4096 --quantize q4_k > $R/q4k_4096_${b}_$round.json 2> $R/q4k_4096_${b}_$round.err
done; done
for b in base plan; do
  timeout 60 /tmp/$b $BM --context 512 > $R/bf16_512_${b}.json 2> $R/bf16_512_${b}.err
  timeout 90 /tmp/$b $BM --context 512 --quantize q4_k > $R/q4k_512_${b}.json 2> $R/q4k_512_${b}.err
done
cd $OUT && tar czf r.tgz r
