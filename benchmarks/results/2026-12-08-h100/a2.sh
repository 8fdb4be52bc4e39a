#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/a2"] (~8 min). target/exp/a2/b: main (f58da10);
# target/exp/a2/t: branch put-transpose (put-transpose.patch): reduce_subgroup.wgsl's `put`, the end of
# every subgroup GEMV (dense and quantized), reduces its vec4 with log2(size) + 1 xor shuffles (each lane
# keeps half of the sums at each of the first two exchanges) instead of subgroupAdd's 4·log2(size). a1
# found the bf16 Q/K/V launch 2 µs faster with no norm and only ~0.8 µs of that in the norm weight: the
# rest is the norm's two extra reduction slots (and its Σx²), i.e. the end of the launch. Also
# TORCHLESS_EXP_QKV_WG=64 in t: the Q/K/V launch with 64 threads (a1's bench: 22.6 against 23.4-23.9 µs).
# target/exp/a2/s: t plus the patch's second commit (the norm's second slot only for more than 4 rows of x).
# 1. Kernels, b / t / s alternating twice: gemv_qkv_bf16 + gemv_bf16 (48 MiB), gemv_q4_k_xq (32 MiB, both
#    orientations). $OUT/kern.txt
# 2. Llama-3-8B decode (128 tokens after 512): bf16 b / t / s / s+WG64 twice; q4_k b / t twice. xLSTM-7B
#    b / s twice. $OUT/decode.txt
source .gl/setup.sh
D=target/exp/a2
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
X=/tmp/xlstm-7b-random
( [ -f $X/config.json ] || timeout 300 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1 ) &
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/decode.txt > $OUT/kern.txt
for round in 1 2; do
  for v in b t s; do
    echo "=== $v" >> $OUT/kern.txt
    timeout 40 $D/$v bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/kern.txt
    for c in 4096 14336; do
      TORCHLESS_BENCH_QGEMV_COLS=$c timeout 40 $D/$v bench --backend gpu --mib 32 --ops gemv_q4_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/kern.txt
    done
  done
done
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0 --decode-tokens 128"
run() { echo "=== $*" >> $OUT/decode.txt; env "$@" 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt; }
for round in 1 2; do
  run timeout 90 $D/b $P --model $M
  run timeout 90 $D/t $P --model $M
  run timeout 90 $D/s $P --model $M
  run TORCHLESS_EXP_QKV_WG=64 timeout 90 $D/s $P --model $M
done
for round in 1 2; do
  run timeout 90 $D/b $P --model $M --quantize q4_k
  run timeout 90 $D/t $P --model $M --quantize q4_k
done
wait
for round in 1 2; do
  run timeout 90 $D/b $P --model $X
  run timeout 90 $D/s $P --model $X
done
