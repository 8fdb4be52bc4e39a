#!/bin/bash
# GPU machine, carry [".gl", "target/exp"]: the tiled f32 GEMM (4096³, three layouts) on main and on branch
# gemm-remap with its switches: UNROLL (the depth loop written out) and REMAP (operands with runs along K
# read by rows lid % 128, so that their transposed staging stores are conflict-free), alternating twice.
# $OUT/gemm.txt. ~3.5 min.
source .gl/setup.sh
for b in main gemm-remap; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/gemm.txt
one() { n=$1; b=$2; shift 2; echo "=== $n" >> $A; env "$@" timeout 60 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f32,gemm_at_b,gemm_a_bt 2>&1 | grep -E "^gemm" >> $A; }
for i in 1 2; do
  one main main X=0
  one unroll gemm-remap TORCHLESS_EXP_GEMM_UNROLL=1
  one remap gemm-remap TORCHLESS_EXP_GEMM_REMAP=1
  one both gemm-remap TORCHLESS_EXP_GEMM_UNROLL=1 TORCHLESS_EXP_GEMM_REMAP=1
done
