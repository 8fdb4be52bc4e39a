#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare_coop64.sh and prepare_coop4x4.sh: the cooperative
# GEMMs (dense f16 and bf16, quantized q4_k and q8_0, 4096³) on main, with 64-deep slices (hk64) and with
# four subgroups of 64×64 blocks (c4x4), alternating twice. The bench's check column is the variants' only
# correctness test. $OUT/coop.txt. ~4 min.
source .gl/setup.sh
for b in main hk64 c4x4; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/coop.txt
for i in 1 2; do
  for b in main hk64 c4x4; do
    echo "=== $b" >> $A
    timeout 80 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $A
  done
done
