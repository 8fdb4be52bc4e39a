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
# The dense GEMV's launch shapes (TORCHLESS_GEMV_TUNE) at the Llama-3-8B shapes, and Llama bf16 decode
# with each shape forced on every GEMV (auto first and last).
R=$OUT/tune; mkdir -p $R
for t in auto 64,2 128,2 256,2 64,4 128,4 256,4 32,4 128,1; do
  e=""; [ $t != auto ] && e="TORCHLESS_GEMV_TUNE=$t"
  for shape in 4096:32 4096:112 14336:112; do cols=${shape%:*}; mib=${shape#*:}
    env $e TORCHLESS_BENCH_GEMV_COLS=$cols timeout 60 /tmp/device bench --backend gpu --json --mib $mib --ops gemv_bf16 \
      > $R/gemv_${t/,/x}_${cols}_$mib.json 2> $R/gemv_${t/,/x}_${cols}_$mib.err
  done
done
for t in auto 128,2 128,4 64,4 256,4 auto; do
  e=""; [ $t != auto ] && e="TORCHLESS_GEMV_TUNE=$t"
  env $e timeout 60 /tmp/device bench-model --backend gpu --prefill-tokens 0 --json --model /tmp/llama --decode-tokens 128 \
    >> $R/bf16_${t/,/x}.json 2>> $R/bf16_${t/,/x}.err
done
cd $OUT && tar czf tune.tgz tune
