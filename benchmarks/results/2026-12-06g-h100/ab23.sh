#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: ab22.sh cut to fit the device time left. The tiled f32 GEMM
# with 16-deep slices (branch gemm-tk16, `tk16`) against main (14071a5), alternating twice; the
# cooperative GEMMs on `new` (this session's build) and main; q4_k decode with four rows a Q/K/V
# workgroup (TORCHLESS_QGEMV_TUNE=32,4) against the automatic two. $OUT/ab.txt, $OUT/decode_*.txt. ~2.5 min.
source .gl/setup.sh
(which ncu nsys; ls /usr/local/cuda*/bin 2>/dev/null | head -30) > $OUT/tools.txt 2>&1
for b in main new tk16; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/ab.txt
for b in main tk16 main tk16; do
  echo "=== $b tiled" >> $A
  timeout 40 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
done
for b in main new; do
  echo "=== $b coop" >> $A
  timeout 40 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_q4_k 2>&1 | grep -E "^gemm|rror" >> $A
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 100 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
D="timeout 40 ./target/exp/new bench-model --backend gpu --model $M --prefill-tokens 0 --decode-tokens 128 --quantize q4_k"
$D > $OUT/decode_q4k_auto.txt 2>&1
TORCHLESS_QGEMV_TUNE=32,4 $D > $OUT/decode_q4k_32x4.txt 2>&1
