#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare24.sh and tests25.sh (~7.5 min). $OUT/ab.txt and $OUT/*_*.txt.
# 1. The tiled f32 GEMM with 16-deep slices (tk16: two chunks a thread, 32 KiB double-buffered) against
#    main's 8-deep ones, and kreg (operands whose runs go along K staged as they lie, [outer][depth], one
#    vec4 store a chunk, and transposed in registers by the micro-kernel: A of A·B, both of A·Bᵀ), 4096³,
#    and kreg16 (both), alternating twice. Target: A·B at 70 % of cuBLAS (36.3 TFLOP/s; main 33.6).
# 2. The cooperative GEMM core double-buffered at 32-deep slices (cdb: one barrier a slice, 48 KiB)
#    against main's single-buffered 64-deep slices, alternating twice.
# 3. Llama-3-8B prefill of 2048 tokens, bf16 and q4_k, base (32-deep cooperative slices) against main.
# 4. q4_k decode, four rows a Q/K/V workgroup (TORCHLESS_QGEMV_TUNE=32,4) against the automatic two (the
#    Q4_K GEMV's launch shapes alone are in tests25.sh).
# 5. bf16 decode with the Q/K/V dispatch's input norm dropped (nonorm, branch qkv-ablate,
#    TORCHLESS_EXP_QKV_NONORM=1; wrong results, timing only), profiled and unprofiled, against the switch
#    off: is the norm (its weight read by every workgroup, x's squares) why that launch runs at 69 % of
#    copy where the plain GEMVs reach 89-92 %?
source .gl/setup.sh
(which ncu nsys; ls /usr/local/cuda*/bin 2>/dev/null | head -30) > $OUT/tools.txt 2>&1
for b in base main tk16 cdb kreg kreg16 nonorm; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/ab.txt
for b in main tk16 kreg kreg16 main tk16 kreg kreg16; do
  echo "=== $b tiled" >> $A
  timeout 40 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
done
for b in main cdb main cdb; do
  echo "=== $b coop" >> $A
  timeout 60 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $A
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for b in base main; do
  for q in bf16 q4_k; do
    Q=""; [ $q = q4_k ] && Q="--quantize q4_k"
    timeout 60 ./target/exp/$b bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 16 $Q > $OUT/prefill_${b}_$q.txt 2>&1
  done
done
D="timeout 40 ./target/exp/main bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 --quantize q4_k"
$D > $OUT/decode_q4k_auto.txt 2>&1
TORCHLESS_QGEMV_TUNE=32,4 $D > $OUT/decode_q4k_32x4.txt 2>&1
P="timeout 60 ./target/exp/nonorm bench-model --backend gpu --model $M --prefill-tokens 0"
$P --decode-tokens 32 --profile > $OUT/prof_bf16_norm.txt 2>&1
TORCHLESS_EXP_QKV_NONORM=1 $P --decode-tokens 32 --profile > $OUT/prof_bf16_nonorm.txt 2>&1
$P --decode-tokens 128 > $OUT/rate_bf16_norm.txt 2>&1
TORCHLESS_EXP_QKV_NONORM=1 $P --decode-tokens 128 > $OUT/rate_bf16_nonorm.txt 2>&1
