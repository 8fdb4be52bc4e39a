#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: this session's build (`new`: coop16's 64-deep slices, top-k's
# next tile loaded before each merge) against the session's base (`main`, 14071a5), alternating twice:
# top-k at 256 MiB and 1 GiB (once); the cooperative GEMMs at 4096³; Llama-3-8B bf16 and q4_k prefill of 2048
# tokens (bench-model); and the tiled f32 GEMM with 16-deep slices (branch gemm-tk16, `tk16`) against main.
# $OUT/ab.txt, $OUT/prefill_*.txt. ~7 min.
source .gl/setup.sh
(which ncu nsys; ls /usr/local/cuda*/bin 2>/dev/null | head -30) > $OUT/tools.txt 2>&1
for b in main new; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/ab.txt
for i in 1 2; do
  for b in main new; do
    for mib in $([ $i = 1 ] && echo 256 1024); do
      echo "=== $b topk --mib $mib" >> $A
      timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" >> $A
    done
    echo "=== $b coop" >> $A
    timeout 80 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $A
  done
done
for b in tk16; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
for i in 1 2; do
  for b in main tk16; do
    echo "=== $b tiled" >> $A
    timeout 60 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm|rror" >> $A
  done
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
for b in main new; do
  for q in bf16 q4_k; do
    Q=""; [ $q = q4_k ] && Q="--quantize q4_k"
    timeout 100 ./target/exp/$b bench-model --backend gpu --model $M --prefill-tokens 2048 --decode-tokens 16 $Q > $OUT/prefill_${b}_$q.txt 2>&1
  done
done
