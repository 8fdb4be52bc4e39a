#!/bin/bash
# The engine figures of BENCHMARKS.md: a random bf16 model with Llama-3-8B shapes, torchless beside PyTorch
# in one run. On the GPU machine, from the repo root, with .gl/, target/release/torchless and the PyTorch
# anchor torch_decode.py (ANCHORS dir, default target/anchors) beside it: OUT=/dir bash benchmarks/device_model.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; B=./target/release/torchless; M=/tmp/llama3-8b-random
ANCHORS="${ANCHORS:-target/anchors}"
[ -f $M/config.json ] || timeout 240 python3 scripts/make_random_llama.py --out $M > "$OUT/make_model.log" 2>&1
cat $M/*.safetensors > /dev/null  # warm page cache: the load time is from memory, not disk
timeout 200 $B bench-model --model $M --backend gpu --context 512 --decode-tokens 128 --prefill-tokens 2048 --json \
  > "$OUT/torchless_model.json" 2> "$OUT/torchless_model.err"
timeout 240 python3 "$ANCHORS/torch_decode.py" > "$OUT/torch_decode.txt" 2>&1
timeout 200 python3 benchmarks/torch_llama.py $M --prefill 2048 --context 512 --decode 64 > "$OUT/torch_llama.txt" 2>&1
