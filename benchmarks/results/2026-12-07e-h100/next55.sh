#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n54/m4.xz"] (~4 min). m4 = 8c214ea.
# 1. Where the fused Q/K/V launch (normed, RoPE, cache write; 69 % of copy in next54's profile against
#    93.5 % for a plain GEMV of its bytes) loses: bf16 decode profiles with an f32 KV cache, whose RoPE
#    epilogue allows 2 rows a workgroup (a 16-bit cache forces 4), every GEMV forced to WG,ROWS by
#    TORCHLESS_GEMV_TUNE. $OUT/prof_qkv.txt
# 2. transformers' prefill of 2048 tokens on the same model. $OUT/torch_llama.txt
source .gl/setup.sh
D=target/exp/n54
[ -f $D/m4 ] || xz -dk $D/m4.xz
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
cat $M/*.safetensors > /dev/null
P="bench-model --backend gpu --model $M --context 512 --decode-tokens 32 --prefill-tokens 0 --profile"
for t in auto 128,2 auto 128,2 128,4 256,2 64,4; do
  echo "=== TORCHLESS_GEMV_TUNE=$t, f32 cache" >> $OUT/prof_qkv.txt
  if [ $t = auto ]; then E=""; else E="TORCHLESS_GEMV_TUNE=$t"; fi
  env $E timeout 60 $D/m4 $P --kv-cache f32 2>&1 | grep -E "gemv_subgroup/main  .*x1x1|decode \(|rror" >> $OUT/prof_qkv.txt
done
echo "=== auto, f16 cache" >> $OUT/prof_qkv.txt
timeout 60 $D/m4 $P 2>&1 | grep -E "gemv_subgroup/main  .*x1x1|decode \(|rror" >> $OUT/prof_qkv.txt
timeout 200 python3 benchmarks/torch_llama.py $M --prefill 2048 --context 512 --decode 8 > $OUT/torch_llama.txt 2>&1
