#!/bin/bash
# The next device call (written 2026-12-05, third session, when no machine was lent; ~7 min). Carries .gl and
# target/devgz with two builds (see README.md here): device.xz = e01f0ca or later + switches.diff (Q and K
# rows in rotation-pair order, so the fused Q/K/V launch with a 16-bit cache takes two rows a workgroup),
# base.xz = 96deda8 + ../2026-12-05b-h200/pf2_switches.diff (half-split rows, four a workgroup).
# (1) The pair order A/B: Llama-3-8B q4_k and bf16 decode at context 512, f16 KV cache (the GPU default),
#     alternating, and a q4_k profile of each (the Q/K/V launch's µs by grid).
# (2) the unrun pf2.sh of ../2026-12-05b-h200/, on device.xz: Q6_K prefetch at the LM head's shape and in Q6_K decode;
#     the attention's K/V prefetch on/off at context 512 and 4096; the Q/K/V launch's norm ablated;
#     the emitting GEMVs at one row a warp. Writes $OUT/next.tgz.
source .gl/setup.sh
R=$OUT/next; mkdir -p $R
for b in device base; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1 &
for round in 1 2; do for pf in 0 1; do
  TORCHLESS_QGEMV_PREFETCH=$pf TORCHLESS_BENCH_QGEMV_COLS=4096 timeout 120 /tmp/device bench --backend gpu --json \
    --mib 411 --ops gemv_q6_k_xq > $R/q6_k_head_pf${pf}_$round.json 2> $R/q6_k_head_pf${pf}_$round.err
done; done
wait
cat /tmp/llama/*.safetensors > /dev/null
M="--backend gpu --prefill-tokens 0 --model /tmp/llama"
# (1) pair order A/B.
for round in 1 2 3; do for b in base device; do
  timeout 100 /tmp/$b bench-model $M --decode-tokens 128 --quantize q4_k --json >> $R/pairs_q4k_$b.json 2>> $R/pairs_q4k_$b.err
done; done
for round in 1 2; do for b in base device; do
  timeout 60 /tmp/$b bench-model $M --decode-tokens 128 --json >> $R/pairs_bf16_$b.json 2>> $R/pairs_bf16_$b.err
done; done
for b in base device; do
  timeout 100 /tmp/$b bench-model $M --decode-tokens 32 --quantize q4_k --profile > $R/pairs_prof_q4k_$b.txt 2>&1
done
# (2) pf2.sh's runs.
P="timeout 100 /tmp/device bench-model $M"
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
cd $OUT && tar czf next.tgz next
