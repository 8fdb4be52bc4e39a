#!/bin/bash
# The next device call (written 2026-12-05, fourth session; no machine could be started for it: ~7 min).
# exp = the session's last commit + next_switches.diff (experiment switches, not committed); base = f2a7594
# (the emitting GEMVs at two rows a team). Llama-3-8B shapes, random weights, context 512, f16 KV cache,
# 128 tokens, each run profiled. Questions:
# (1) one row a team in the emitting GEMVs (exp) against two (base), q4_k: 333.1 against 326.4/327.8 in
#     one sample each (emit/);
# (2) TORCHLESS_EXP_NO_EMIT=1: no emitting GEMV; O, down and gate/up as plain GEMVs (many small
#     workgroups, like the LM head, which streams at the copy speed) and x quantized in a launch of its
#     own with many workgroups, its RMS norm deferred to the next GEMV (qgemv_x.wgsl DEFER + NSS): three
#     launches more a layer against GEMVs at 30-60 % of the copy speed;
# (3) TORCHLESS_EXP_ATTN_PF=1 (=2): the attention split launch also streams the O (gate) projection's
#     weights into L2 in extra workgroups (_MIB caps the bytes), so the next GEMV reads them from L2: the
#     split launch is latency-bound (11 µs for 1.3 MB) while the memory bus idles;
# (4) TORCHLESS_EXP_QKV_ROWS=2 (_WG): bf16's fused Q/K/V launch at two rows a workgroup (3072) instead of
#     four, which gave q4_k 24.2 → 20.1 µs in 12-05c.
# Writes $OUT/next.tgz.
source .gl/setup.sh
R=$OUT/next; mkdir -p $R
for b in base exp; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $R/env.txt 2>&1
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
M="bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --decode-tokens 128 --profile"
Q="timeout 70 /tmp/exp $M --quantize q4_k"
for round in 1 2; do
  timeout 70 /tmp/base $M --quantize q4_k > $R/q4k_base_$round.txt 2>&1
  $Q > $R/q4k_exp_$round.txt 2>&1
  TORCHLESS_EXP_NO_EMIT=1 $Q > $R/q4k_noemit_$round.txt 2>&1
  TORCHLESS_EXP_ATTN_PF=1 $Q > $R/q4k_pfO_$round.txt 2>&1
done
TORCHLESS_EXP_ATTN_PF=2 TORCHLESS_EXP_ATTN_PF_MIB=24 $Q > $R/q4k_pfG24_1.txt 2>&1
TORCHLESS_EXP_NO_EMIT=1 TORCHLESS_EXP_ATTN_PF=1 $Q > $R/q4k_noemit_pfO_1.txt 2>&1
for round in 1 2; do
  timeout 50 /tmp/exp $M > $R/bf16_exp_$round.txt 2>&1
  TORCHLESS_EXP_ATTN_PF=1 timeout 50 /tmp/exp $M > $R/bf16_pfO_$round.txt 2>&1
  TORCHLESS_EXP_QKV_ROWS=2 timeout 50 /tmp/exp $M > $R/bf16_qkv2_$round.txt 2>&1
done
TORCHLESS_EXP_ATTN_PF=1 TORCHLESS_EXP_ATTN_PF_MIB=16 timeout 50 /tmp/exp $M > $R/bf16_pfO16_1.txt 2>&1
TORCHLESS_EXP_QKV_ROWS=2 TORCHLESS_EXP_QKV_WG=64 timeout 50 /tmp/exp $M > $R/bf16_qkv2w64_1.txt 2>&1
cd $OUT && tar czf next.tgz next
