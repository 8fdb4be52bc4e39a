#!/bin/bash
# Next device call (not yet run): what makes the fused Q/K/V launch of Llama-3-8B decode slow, by launch
# grid (--profile), with the knobs that exist: the KV cache's dtype (a 16-bit cache forces four rows a
# workgroup; f32 lets the quantized GEMV keep its automatic two, 3072 workgroups instead of 1536) and
# the quantized GEMV's shape (TORCHLESS_QGEMV_TUNE; GEMVs that write the next one's x keep 32 rows a
# workgroup and take WG and ROWS from it). ~4 minutes. Carries .gl and target/devgz (device.xz = this
# folder's build or later); writes $OUT/next.tgz.
source .gl/setup.sh
R=$OUT/next; mkdir -p $R
xz -dc target/devgz/device.xz > /tmp/device; chmod +x /tmp/device
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
P="timeout 80 /tmp/device bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 32 --profile"
for kv in f16 f32; do
  $P --kv-cache $kv > $R/prof_bf16_$kv.txt 2>&1
  $P --kv-cache $kv --quantize q4_k > $R/prof_q4k_$kv.txt 2>&1
done
for t in 64,2 64,4 128,4 32,4; do
  TORCHLESS_QGEMV_TUNE=$t $P --quantize q4_k > $R/prof_q4k_tune_${t/,/x}.txt 2>&1
done
cd $OUT && tar czf next.tgz next
