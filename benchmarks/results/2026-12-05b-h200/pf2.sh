#!/bin/bash
# Device call after pf.sh (this build: PREFETCH on for Q6_K by default; TORCHLESS_QGEMV_PREFETCH and
# TORCHLESS_DECODE_PREFETCH force it, experiment switches): (1) Q6_K with and without the next unit's
# weights prefetched, at the LM head's shape (128256×4096, past the L2) and in Llama-3-8B decode with
# every matrix Q6_K (alternating); (2) sdpa_decode's K/V prefetch (on for 16-bit caches) on and off inside
# Llama-3-8B bf16 decode at context 512 and 4096, by launch grid; (3) an ablation of the Q/K/V launch's norm. Writes $OUT/pf2.tgz.
source .gl/setup.sh
R=$OUT/pf2; mkdir -p $R
xz -dc target/devgz/device.xz > /tmp/device; chmod +x /tmp/device
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1 &
for round in 1 2; do for pf in 0 1; do
  TORCHLESS_QGEMV_PREFETCH=$pf TORCHLESS_BENCH_QGEMV_COLS=4096 timeout 120 /tmp/device bench --backend gpu --json \
    --mib 411 --ops gemv_q6_k_xq > $R/q6_k_head_pf${pf}_$round.json 2> $R/q6_k_head_pf${pf}_$round.err
done; done
wait
cat /tmp/llama/*.safetensors > /dev/null
P="timeout 120 /tmp/device bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama"
for round in 1 2; do for pf in 0 1; do
  TORCHLESS_QGEMV_PREFETCH=$pf $P --decode-tokens 128 --quantize q6_k --json >> $R/q6k_pf$pf.json 2>> $R/q6k_pf$pf.err
done; done
for ctx in 512 4096; do for pf in 0 1; do
  TORCHLESS_DECODE_PREFETCH=$pf $P --context $ctx --decode-tokens 32 --profile > $R/attn_ctx${ctx}_pf$pf.txt 2>&1
done; done
# Ablation (timing only, wrong results): the fused Q/K/V launch without its norm (bf16: NORM 0; q4_k: NSS 0).
TORCHLESS_ABLATE_QKV_NORM=1 $P --decode-tokens 32 --profile > $R/abl_norm_bf16.txt 2>&1
TORCHLESS_ABLATE_QKV_NORM=1 $P --decode-tokens 32 --profile --quantize q4_k > $R/abl_norm_q4k.txt 2>&1
# The emitting GEMVs with one row a warp (32 teams of 32 threads a workgroup).
TORCHLESS_QGEMV_TUNE=32,1 $P --decode-tokens 32 --profile --quantize q4_k > $R/prof_q4k_tune_32x1.txt 2>&1
cd $OUT && tar czf pf2.tgz pf2
