#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n60"] (~7 min). Prepared for the next session, after
# next59.sh. Builds in target/exp/n60 (not in git): m6 = 3a3c042 (main, as in n59); db16 = m6 +
# db16.patch (the GEMM core double-buffered: 16-deep slices in two stages, slice t multiplied from one
# while slice t + 1 is staged into the other, one barrier a slice instead of two per 32 deep, slices
# fetched two ahead; the epilogue scratch shared by 4 subgroups at a time so that both stages fit);
# db16w8 = m6 + db16w8.patch (db16 with 8 subgroups of 64×64 in 256 threads: half the fragment loads a
# product, fewer warps to hide latency, which the double-buffering may now cover); s32x64 = m6 +
# s32x64.patch (the 16 subgroups as 32×64 blocks instead of 64×32: 2 A and 4 B fragments a step);
# *test = their kernel unit tests. If ff (next59) wins too, try it on the winner.
# 1. db16's and db16w8's GEMM and quantized-matmul tests on NVIDIA.
# 2. 4096³ GEMMs m6 / db16 / db16w8 / s32x64 alternating twice. $OUT/gemm.txt
# 3. sdpa_decode at 4096 keys (f16, 32 / 8 heads × 128) by forced shape, TORCHLESS_DECODE_TUNE=LANES,THREADS,
#    ROWS,SPLITS (the plan's shape was swept on the H200 only; 4k is at 38.8 % of copy). $OUT/decode_tune.txt
source .gl/setup.sh
D=target/exp/n60
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gemm.txt
for t in db16test db16w8test; do
  echo "=== $t" >> $OUT/gemm.txt
  env TORCHLESS_REQUIRE_GPU=1 timeout 120 $D/$t --test-threads 16 gemm qmatmul 2>&1 | grep -E "test result|FAILED|panicked" >> $OUT/gemm.txt
done
for b in m6 db16 db16w8 s32x64 m6 db16 db16w8 s32x64; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
for t in auto 8,128,2,16 8,256,2,16 16,256,2,16 8,128,1,16 8,128,2,8 8,128,2,32 8,256,2,32 16,256,1,32 8,256,1,8 16,128,2,16; do
  if [ $t = auto ]; then E=""; else E="TORCHLESS_DECODE_TUNE=$t"; fi
  echo "=== $t $(env $E timeout 30 $D/m6 bench --backend gpu --mib 16 --ops sdpa_decode 2>&1 | grep -E '^sdpa|rror')" >> $OUT/decode_tune.txt
done
