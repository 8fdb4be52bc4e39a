#!/bin/bash
# Device call, after ../2026-12-04e-h200/plan.sh in the same command: the quantized GEMVs of issue 6's
# target (q8_0, q4_0, q4_k, q6_k at 14336×4096 and 4096×14336) timed with x's quantization in every run
# (gemv_q*) and alone, x quantized once as decode does (gemv_q*_xq). Uses /tmp/device (plan.sh unpacked
# it); writes $OUT/xq.tgz.
source .gl/setup.sh
R=$OUT/xq; mkdir -p $R
B="timeout 120 /tmp/device bench --backend gpu --json"
for cols in 4096 14336; do
  for tm in q8_0:60 q4_0:32 q4_k:32 q6_k:46; do t=${tm%:*}; mib=${tm#*:}
    TORCHLESS_BENCH_QGEMV_COLS=$cols $B --mib $mib --ops gemv_$t,gemv_${t}_xq,gemv_$t,gemv_${t}_xq \
      > $R/${t}_${cols}.json 2> $R/${t}_${cols}.err
  done
done
cd $OUT && tar czf xq.tgz xq
