#!/bin/bash
# The engine figures of BENCHMARKS.md: random-weight models with Llama-3-8B, xLSTM-7B and SmolLM2-135M
# shapes, torchless beside PyTorch on the same machine. On the GPU machine, from the repo root, with .gl/,
# target/release/torchless and the PyTorch anchors (ANCHORS dir, default target/anchors: copies of
# ../shared/bench/*.py) beside it. Three parts, each fitting one device call (600 s):
#   OUT=/dir bash benchmarks/device_model.sh llama    # torchless: Llama-3-8B bf16 and q4_k, SmolLM2 shapes; quantized GEMV
#   OUT=/dir bash benchmarks/device_model.sh xlstm    # torchless: xLSTM-7B (making it takes ~3 min) and the mLSTM kernels
#   OUT=/dir bash benchmarks/device_model.sh torch    # PyTorch anchors on the same models (and the
#                                                     # xlstm_qk_half parity fixture, with transformers)
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; B="${B:-./target/release/torchless}"
ANCHORS="${ANCHORS:-target/anchors}"
M=/tmp/llama3-8b-random; X=/tmp/xlstm-7b-random; S=/tmp/smollm2-135m-random
BM="bench-model --backend gpu --context 512 --decode-tokens 128 --prefill-tokens 2048 --json"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > "$OUT/env.txt" 2>&1

case "${1:-llama}" in
llama)
  [ -f $M/config.json ] || timeout 120 python3 scripts/make_random_llama.py --out $M > "$OUT/make_llama.log" 2>&1
  [ -f $S/config.json ] || timeout 60 python3 scripts/make_random_llama.py --preset smollm2-135m --out $S > "$OUT/make_smollm2.log" 2>&1
  cat $M/*.safetensors > /dev/null  # warm page cache: the load time is from memory, not disk
  # Discarded warm-up run: fills the driver's shader cache (bench-model also warms up in-process).
  timeout 60 $B bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
  timeout 100 $B $BM --model $M > "$OUT/llama_bf16.json" 2> "$OUT/llama_bf16.err"
  timeout 150 $B $BM --model $M --quantize q4_k > "$OUT/llama_q4_k.json" 2> "$OUT/llama_q4_k.err"
  timeout 60 $B $BM --model $S --quantize q4_1 > "$OUT/smollm2_q4_1.json" 2> "$OUT/smollm2_q4_1.err"
  OUT="$OUT" B="$B" timeout 150 bash benchmarks/device_quant.sh
  ;;
xlstm)
  [ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > "$OUT/make_xlstm.log" 2>&1
  cat $X/*.safetensors > /dev/null
  timeout 90 $B bench-model --backend gpu --model $X --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1  # warm-up
  timeout 120 $B $BM --model $X > "$OUT/xlstm.json" 2> "$OUT/xlstm.err"
  timeout 60 $B bench --backend gpu --mib 64 --json --ops mlstm_step,mlstm_chunkwise,multihead_layernorm \
    > "$OUT/bench_mlstm.json" 2> "$OUT/bench_mlstm.err"
  ;;
torch)
  timeout 120 python3 scripts/make_fixtures.py --only xlstm_qk_half --out "$OUT/fixtures" > "$OUT/fixtures.log" 2>&1
  [ -f $M/config.json ] || timeout 120 python3 scripts/make_random_llama.py --out $M > "$OUT/make_llama.log" 2>&1
  timeout 200 python3 "$ANCHORS/torch_decode.py" > "$OUT/torch_decode.txt" 2>&1
  timeout 150 python3 "$ANCHORS/hf_xlstm_decode.py" > "$OUT/hf_xlstm_decode.txt" 2>&1
  timeout 200 python3 benchmarks/torch_llama.py $M --prefill 2048 --context 512 --decode 32 > "$OUT/torch_llama.txt" 2>&1
  ;;
*)
  echo "usage: device_model.sh llama|xlstm|torch" >&2
  exit 2
  ;;
esac
