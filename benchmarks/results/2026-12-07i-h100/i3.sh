#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/i2"] (~1 min). Why the bf16 Q/K/V launch (normed, RoPE,
# K and V into the cache) runs at 69 % of copy in decode when O, down and gate/up sit within ~3.4 µs of
# it (i2/prof_bf16.txt). Llama-3-8B's shapes with 4 layers (per-launch times as with 32), profiled:
# f16 cache as main; f32 cache (no 16-bit words); f32 cache with two rows a workgroup; f16 cache with 256
# and 64 threads (TORCHLESS_GEMV_TUNE forces every GEMV: read the Q/K/V line, 1536 or 3072 workgroups).
source .gl/setup.sh
D=target/exp/i2
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-4l
[ -f $M/config.json ] || python3 scripts/make_random_llama.py --out $M --layers 4 > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --decode-tokens 8 --profile --model $M"
for v in "f16 -" "f32 -" "f32 128,2" "f16 256,4" "f16 64,4"; do
  set -- $v
  echo "=== kv $1 tune $2" >> $OUT/qkv.txt
  E=""; [ $2 = - ] || E=TORCHLESS_GEMV_TUNE=$2
  env $E timeout 30 $D/l $P --kv-cache $1 2>&1 | grep -E "^gemv_subgroup/main  +[0-9]+x|^attention.*x|rror" >> $OUT/qkv.txt
done
