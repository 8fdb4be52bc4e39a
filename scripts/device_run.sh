#!/bin/bash
# Everything that needs the GPU machine, in one command (see scripts/README.md):
#   fixtures (CPU float32) + sensitivity check, tiny Llama, tiny xLSTM. Results go to $OUT as tarballs
#   (the device tool brings back at most 8 files, 2 folders deep).
# Needs, beside this script: the corpus written by `train_tiny.py corpus` (default target/fortunes/fortunes.json, in
# git-ignored target/, so name target/fortunes in the device call's carry) and the tokenizer in crates/torchless/assets/tiny-llama.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(dirname "$HERE")"
CORPUS="${CORPUS:-$REPO/target/fortunes/fortunes.json}"; TOK="${TOK:-$REPO/crates/torchless/assets/tiny-llama}"
OUT="${OUT:-/tmp/out}"; W=/tmp/torchless-device; mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch,transformers,tokenizers,safetensors,numpy; print('torch',torch.__version__,'transformers',transformers.__version__,'tokenizers',tokenizers.__version__,'safetensors',safetensors.__version__,'numpy',numpy.__version__, 'xLSTM', hasattr(transformers,'xLSTMForCausalLM'))"; } > "$OUT/env.txt" 2>&1
timeout 150 python3 "$HERE/make_fixtures.py" --out "$W/fixtures" > "$OUT/fixtures.log" 2>&1; echo "fixtures rc=$?" >> "$OUT/env.txt"
timeout 60 python3 "$HERE/check_fixture_sensitivity.py" "$W/fixtures" > "$OUT/sensitivity.log" 2>&1; echo "sensitivity rc=$?" >> "$OUT/env.txt"
tar czf "$OUT/fixtures.tgz" -C "$W" fixtures
timeout 200 python3 "$HERE/train_tiny.py" train --arch llama --corpus "$CORPUS" --tokenizer "$TOK" --out "$W/tiny-llama" \
  --max-steps 1500 --max-seconds 110 --batch 32 --lr 2e-3 > "$OUT/train_llama.log" 2>&1; echo "llama rc=$?" >> "$OUT/env.txt"
tar czf "$OUT/tiny-llama.tgz" -C "$W" tiny-llama
timeout 230 python3 "$HERE/train_tiny.py" train --arch xlstm --corpus "$CORPUS" --tokenizer "$TOK" --out "$W/tiny-xlstm" \
  --max-steps 1000 --max-seconds 140 --batch 32 --lr 1.5e-3 > "$OUT/train_xlstm.log" 2>&1; echo "xlstm rc=$?" >> "$OUT/env.txt"
tar czf "$OUT/tiny-xlstm.tgz" -C "$W" tiny-xlstm
cat "$OUT/env.txt"
