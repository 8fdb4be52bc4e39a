#!/bin/bash
# One call of ~9 min for a session that may get only one machine: j1.sh, then the Q/K/V launch's
# ablations (12-07i's i4.sh, part 3) and i5.sh. Carry [".gl", "target/exp/j1", "target/exp/i4"].
# $OUT/qkv.txt, decode.txt and prof_*.txt as j1.sh writes them; $OUT/qkv_ablate.txt; $OUT/q6k_pf.txt.
bash benchmarks/results/2026-12-07j-h100/j1.sh
source .gl/setup.sh
D=target/exp/i4
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
for round in 1 2; do
  for v in TORCHLESS_EXP_UNWEIGHTED_NORM=0 TORCHLESS_EXP_UNWEIGHTED_NORM=1 TORCHLESS_EXP_QKV_ABLATE=1 \
      TORCHLESS_EXP_QKV_ABLATE=2 TORCHLESS_EXP_QKV_ABLATE=4 TORCHLESS_EXP_QKV_ABLATE=7; do
    echo "=== $v" >> $OUT/qkv_ablate.txt
    env $v timeout 40 $D/u bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv_ablate.txt
  done
done
bash benchmarks/results/2026-12-07i-h100/i5.sh
