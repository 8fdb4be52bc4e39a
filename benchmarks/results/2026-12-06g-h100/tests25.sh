#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare24.sh, before next24.sh (~8 min).
# 1. main's kernel unit tests on the H100, where the cooperative-matrix paths (the dense and quantized
#    GEMMs on coop16.wgsl, flash attention) run; lavapipe, which CI and the local checks use, offers none.
#    The 64-deep slices (98ef87a) have had only the bench's 4096³ checks on a GPU. $OUT/ktest*.txt.
# 2. Top-k with each workgroup's first round 1 + (0..3) tiles from a hash of its id (branch topk-desync,
#    TORCHLESS_EXP_TOPK_DESYNC=1) against the switch off and main, alternating twice at 256 MiB and 1 GiB.
#    Question: at 256 MiB (523 rows, four workgroups a multiprocessor, one wave) the workgroups start
#    together and meet for their ~7 merges at the same moments, with memory idle meanwhile; does
#    staggering them let one's loads overlap another's merge? (80.0–80.3 % of copy; target 90.) And
#    TORCHLESS_EXP_TOPK_FIRST=1: tile 1 loaded before the first tile's merge (the sorted one of 256
#    candidates), which now has no load in flight; alone and with the stagger.
#    $OUT/topk.txt.
# 3. The Q4_K GEMV alone (x quantized outside the timing) at issue 6's shapes, 14336×4096 and 4096×14336,
#    with the automatic shape (32 threads, 2 rows) and forced ones: rows share x's loads, which cost the
#    GEMV 6–9 points on 12-06b (75.5–76.5 % of copy, target 80). In $OUT/topk.txt too.
source .gl/setup.sh
for b in ktest main desync; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
# The cooperative paths' tests first, then the rest.
T="env TORCHLESS_REQUIRE_GPU=1 timeout 120 ./target/exp/ktest --test-threads 16"
$T gemm qmatmul flash > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
$T --skip gemm --skip qmatmul --skip flash > $OUT/ktest_rest.txt 2>&1
echo "rc $?" >> $OUT/ktest_rest.txt
A=$OUT/topk.txt
one() { n=$1; b=$2; mib=$3; shift 3; echo "=== $n --mib $mib" >> $A; env "$@" timeout 40 ./target/exp/$b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
for i in 1 2; do
  for mib in 256 1024; do
    one main main $mib X=0
    one desync-off desync $mib X=0
    one desync desync $mib TORCHLESS_EXP_TOPK_DESYNC=1
    one first desync $mib TORCHLESS_EXP_TOPK_FIRST=1
    one desync+first desync $mib TORCHLESS_EXP_TOPK_DESYNC=1 TORCHLESS_EXP_TOPK_FIRST=1
  done
done
for cols in 4096 14336; do
  for t in auto 32,4 32,1 64,4 64,2; do
    echo "=== gemv_q4_k_xq cols $cols tune $t" >> $A
    T=""; [ $t = auto ] || T="TORCHLESS_QGEMV_TUNE=$t"
    env $T TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 40 ./target/exp/main bench --backend gpu --mib 32 --ops gemv_q4_k_xq 2>&1 | grep -E "^gemv|rror" >> $A
  done
done
