#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare_coop64.sh: the cooperative GEMMs (dense f16 and
# bf16, quantized q4_k and q8_0, 4096³) on main and with 64-deep slices (hk64), alternating twice. The
# bench's check column is hk64's only correctness test. $OUT/coop.txt. ~2.5 min.
source .gl/setup.sh
for b in main hk64; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/coop.txt
for i in 1 2; do
  for b in main hk64; do
    echo "=== $b" >> $A
    timeout 80 ./target/exp/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>&1 | grep -E "^gemm|rror" >> $A
  done
done
