#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare_gemm.sh: depth loops as naga loops (main, and
# branch gemm-unroll with its switches off) against written out: the tiled f32 GEMM (UNROLL=1, 4096³ in
# the three layouts) and the cooperative f16/bf16 GEMM (UNROLL16=1), alternating twice. $OUT/gemm.txt.
# ~3 min.
source .gl/setup.sh
for b in main gemm-unroll; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/gemm.txt
one() { n=$1; b=$2; shift 2; echo "=== $n" >> $A; env "$@" timeout 60 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt,gemm_f16,gemm_bf16 2>&1 | grep -E "^gemm" >> $A; }
for i in 1 2; do
  one main main X=0
  one loops gemm-unroll X=0
  one unrolled gemm-unroll TORCHLESS_EXP_GEMM_UNROLL=1 TORCHLESS_EXP_GEMM_UNROLL16=1
done
