#!/bin/bash
# Device call (not yet run; no machine was lent in the session that wrote it). One call, ~5 minutes:
# 1. bench-model --sampling against greedy decoding, and host draws against device draws: builds
#    xz-compressed in target/devgz/: host.xz = a5c5ff9 (each sampled token read back and drawn on the
#    host), device.xz = this session's HEAD or later (drawn on the device, the host one step behind).
#    Alternating, two rounds: Llama-3-8B shapes bf16 and q4_k at context 512, SmolLM2-135M shapes q4_1.
# 2. Where the bf16 and q4_k decode tokens go, per kernel and per launch grid (--profile, device.xz):
#    each GEMV shape's µs per launch, to set beside the GEMV alone (step 3) and find the one that holds
#    bf16 decode at ~74 % of its roofline.
# 3. The GEMVs alone at the Llama-3-8B shapes (bf16 and q4_k).
# Run from the repo root with .gl/ and target/devgz carried; writes $OUT/r.tgz.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in host device; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
python3 scripts/make_random_llama.py --out /tmp/smol --preset smollm2-135m > $R/make_smol.log 2>&1
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
BM="bench-model --backend gpu --prefill-tokens 0 --json"
for round in 1 2; do for run in device:greedy host:sampling device:sampling; do
  b=${run%:*}; mode=${run#*:}; s=""; [ $mode = sampling ] && s=--sampling
  timeout 60 /tmp/$b $BM --model /tmp/llama --decode-tokens 128 $s > $R/bf16_${b}_${mode}_$round.json 2> $R/bf16_${b}_${mode}_$round.err
  timeout 60 /tmp/$b $BM --model /tmp/llama --decode-tokens 128 --quantize q4_k $s > $R/q4k_${b}_${mode}_$round.json 2> $R/q4k_${b}_${mode}_$round.err
  timeout 60 /tmp/$b $BM --model /tmp/smol --decode-tokens 512 --quantize q4_1 $s > $R/smol_${b}_${mode}_$round.json 2> $R/smol_${b}_${mode}_$round.err
done; done
P="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 32 --profile"
timeout 90 /tmp/device $P > $R/prof_bf16.txt 2>&1
timeout 90 /tmp/device $P --quantize q4_k > $R/prof_q4k.txt 2>&1
# bf16: 4096 rows (O), 6144 (Q/K/V), 14336 (up) of 4096, and 4096 of 14336 (down); q4_k the same rows
# (--mib = the weight bytes, rounded down to 512 rows).
G="timeout 90 /tmp/device bench --backend gpu --json"
for shape in 4096:32 4096:48 4096:112 14336:112; do cols=${shape%:*}; mib=${shape#*:}
  TORCHLESS_BENCH_GEMV_COLS=$cols $G --mib $mib --ops gemv_bf16 > $R/gemv_bf16_${cols}_$mib.json 2> $R/gemv_bf16_${cols}_$mib.err
done
for shape in 4096:9 4096:14 4096:32 14336:32; do cols=${shape%:*}; mib=${shape#*:}
  TORCHLESS_BENCH_QGEMV_COLS=$cols $G --mib $mib --ops gemv_q4_k > $R/gemv_q4k_${cols}_$mib.json 2> $R/gemv_q4k_${cols}_$mib.err
done
cd $OUT && tar czf r.tgz r
