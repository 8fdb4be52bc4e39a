#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare_gemm18.sh: the tiled f32 GEMM (4096³, three
# layouts) on main and with the transposed staging stores written out (branch gemm-remap, gemm-st), its
# depth loop as a loop and written out (TORCHLESS_EXP_GEMM_UNROLL=1), alternating twice. Question: was the
# written-out depth loop slower for A·B and A·Bᵀ (gemm16: 31.3 against 33.6 TFLOP/s; Aᵀ·B 37.1 against
# 32.3) because the staging loop indexing v by a loop counter left v in local memory? $OUT/gemm.txt.
# ~2.5 min.
source .gl/setup.sh
for b in main gemm-st; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/gemm.txt
one() { n=$1; b=$2; shift 2; echo "=== $n" >> $A; env "$@" timeout 60 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm" >> $A; }
for i in 1 2; do
  one main main X=0
  one st-loop gemm-st X=0
  one st-unroll gemm-st TORCHLESS_EXP_GEMM_UNROLL=1
done
