#!/bin/bash
# Device call 1 of 2026-12-05, fourth session (H100): why the emitting quantized GEMVs (the O, down and
# gate/up launches of q4_k decode, each workgroup owning 32 output rows) run far below the copy speed.
# exp.xz = f2a7594 + emit_switches.diff (TORCHLESS_EXP_EMIT_PREFETCH, _ROWS, _WG: the emitting launches'
# PREFETCH, rows a team and threads a team). Llama-3-8B shapes, random weights, --quantize q4_k, context
# 512, f16 KV cache; each run profiles (per launch, split by weight) and times 128 unprofiled tokens.
# Then a bf16 profile and the PyTorch anchor (torch_decode.py). Writes $OUT/emit.tgz.
source .gl/setup.sh
R=$OUT/emit; mkdir -p $R
xz -dc target/devgz/exp.xz > /tmp/exp; chmod +x /tmp/exp
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader > $R/env.txt 2>&1
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
P="timeout 80 /tmp/exp bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 128 --profile"
run() { local name=$1; shift; env "$@" $P --quantize q4_k > $R/q4k_$name.txt 2>&1; }
run base X=0
run pf TORCHLESS_EXP_EMIT_PREFETCH=1
run r4 TORCHLESS_EXP_EMIT_ROWS=4
run r1 TORCHLESS_EXP_EMIT_ROWS=1
run r4pf TORCHLESS_EXP_EMIT_ROWS=4 TORCHLESS_EXP_EMIT_PREFETCH=1
run wg64 TORCHLESS_EXP_EMIT_WG=64
run base2 X=0
run pf2 TORCHLESS_EXP_EMIT_PREFETCH=1
$P > $R/bf16_base.txt 2>&1
timeout 200 python3 target/anchors/torch_decode.py > $R/torch_decode.txt 2>&1
cd $OUT && tar czf emit.tgz emit
