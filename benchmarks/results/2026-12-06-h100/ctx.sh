#!/bin/bash
# What decode attention costs at short contexts (2026-12-06). At context 512 the profile gives the split
# attention launch and its merge ~33 µs a layer (each launch timed with its wait: the fixed cost is in it),
# a sixth of q4_k's 3.0 ms token for 1.3 MB of KV a layer. Decode tok/s at contexts 16, 512 and 2048 give
# the attention's cost in the stream; then q4_k at 512 with the split count forced (TORCHLESS_DECODE_TUNE
# SPLITS: 1 is one launch, no merge). Llama-3-8B shapes, random weights, f16 KV cache, 128 tokens; the exp
# build of ../2026-12-05d-h100/next.sh (its switches unset: the same kernels as cd98bf7). Writes $OUT/ctx/.
source .gl/setup.sh
R=$OUT/ctx; mkdir -p $R
[ -x /tmp/exp ] || { xz -dc target/devgz/exp.xz > /tmp/exp; chmod +x /tmp/exp; }
B=/tmp/exp
[ -f /tmp/llama/config.json ] || python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
M="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 128"
for c in 16 512 2048; do
  timeout 50 $B $M --context $c > $R/bf16_ctx$c.txt 2>&1
  timeout 60 $B $M --context $c --quantize q4_k > $R/q4k_ctx$c.txt 2>&1
done
for s in 1 2 4; do
  TORCHLESS_DECODE_TUNE=0,0,0,$s timeout 60 $B $M --quantize q4_k > $R/q4k_ctx512_splits$s.txt 2>&1
done
cd $OUT && tar czf ctx.tgz ctx
