#!/bin/bash
# Q4_K with its 6-bit scales and mins stored as bytes at load (2026-12-06, second session):
# TORCHLESS_EXP_Q4K=1 (qexp2_switches.diff, a superset of qexp_switches.diff) moves each block's (d, dmin)
# to the scales region and makes word c of its first quant vector the bytes (sc, sc', mn, mn') of
# sub-blocks 2c and 2c + 1, so a 64-weight unit loads one word of the header instead of four and
# `k_scales` is four byte extracts (+4 bytes a block, 2.8 %). The GEMV alone at both shapes, then Llama-3-8B
# q4_k decode (random weights, context 512, 128 tokens), alternating 0 and 1. Writes $OUT/qexp2/.
source .gl/setup.sh
R=$OUT/qexp2; mkdir -p $R; B=./target/release/torchless
for round in 1 2; do
  for k in 0 1; do
    for cols in 4096 14336; do
      TORCHLESS_EXP_Q4K=$k TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 40 $B bench --backend gpu --mib 32 --json \
        --ops gemv_q4_k_xq >> $R/k${k}_c$cols.json 2>> $R/k${k}_c$cols.err
    done
  done
done
[ -f /tmp/llama/config.json ] || timeout 120 python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
M="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 128 --quantize q4_k"
for round in 1 2; do
  for k in 0 1; do
    TORCHLESS_EXP_Q4K=$k timeout 60 $B $M > $R/q4k_k${k}_$round.txt 2>&1
  done
done
# A launch's fixed cost: the GEMV alone at 8, 32 and 128 MiB (cols 4096), as committed (0) and loads only
# (TORCHLESS_EXP_QGEMV=2): time = fixed + bytes / bandwidth.
for e in 0 2; do
  for mib in 8 32 128; do
    TORCHLESS_EXP_QGEMV=$e TORCHLESS_BENCH_QGEMV_COLS=4096 timeout 40 $B bench --backend gpu --mib $mib --json \
      --ops gemv_q4_k_xq,gemv_q8_0_xq >> $R/size_e${e}_m$mib.json 2>> $R/size_e${e}_m$mib.err
  done
done
# A dependent launch's cost: the copy kernel into one buffer (each launch waits on the one before; the
# `copy:` line of stderr) at 1, 2 and 4 MiB, where the bytes take under 1.5 µs.
for mib in 1 2 4; do
  timeout 20 $B bench --backend gpu --mib $mib --json --ops scale > $R/chain_m$mib.json 2> $R/chain_m$mib.err
done
