#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n60"] (~5 min). Prepared for the next session, after
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
