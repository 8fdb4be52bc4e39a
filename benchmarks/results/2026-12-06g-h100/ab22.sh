#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: this session's build (`new`: coop16's 64-deep slices, top-k's
# next tile loaded before each merge) against the session's base (`main`, 14071a5): the cooperative GEMMs
# at 4096³; the tiled f32 GEMM with 16-deep slices (branch gemm-tk16, `tk16`) against main; Llama-3-8B
# bf16 and q4_k prefill of 2048 tokens (bench-model). $OUT/ab.txt, $OUT/prefill_*.txt. ~5 min.
source .gl/setup.sh
(which ncu nsys; ls /usr/local/cuda*/bin 2>/dev/null | head -30) > $OUT/tools.txt 2>&1
for b in main new tk16; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/ab.txt
for b in main new; do
  echo "=== $b coop" >> $A
  timeout 80 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $A
done
for b in main tk16 main tk16; do
  echo "=== $b tiled" >> $A
  timeout 60 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for b in main new; do
  for q in bf16 q4_k; do
    Q=""; [ $q = q4_k ] && Q="--quantize q4_k"
    timeout 100 ./target/exp/$b bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 16 $Q > $OUT/prefill_${b}_$q.txt 2>&1
  done
done
# q4_k decode with four rows a Q/K/V workgroup (TORCHLESS_QGEMV_TUNE=32,4) against the automatic two.
D="timeout 60 ./target/exp/new bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 --quantize q4_k"
$D > $OUT/decode_q4k_auto.txt 2>&1
TORCHLESS_QGEMV_TUNE=32,4 $D > $OUT/decode_q4k_32x4.txt 2>&1
