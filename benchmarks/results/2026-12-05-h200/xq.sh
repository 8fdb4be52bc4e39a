#!/bin/bash
# Device call, after ../2026-12-04e-h200/plan.sh in the same command: the quantized GEMVs of issue 6's
# target (q8_0, q4_0, q4_k, q6_k at 14336×4096 and 4096×14336) timed with x's quantization in every run
# (gemv_q*) and alone, x quantized once as decode does (gemv_q*_xq); then topk, this build (device.xz)
# against branch topk-stream (topk.xz), alternating. Carries .gl and target/devgz; writes $OUT/xq.tgz.
source .gl/setup.sh
for b in device topk; do [ -x /tmp/$b ] || { xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; }; done
R=$OUT/xq; mkdir -p $R
B="timeout 120 /tmp/device bench --backend gpu --json"
for cols in 4096 14336; do
  for tm in q8_0:60 q4_0:32 q4_k:32 q6_k:46; do t=${tm%:*}; mib=${tm#*:}
    TORCHLESS_BENCH_QGEMV_COLS=$cols $B --mib $mib --ops gemv_$t,gemv_${t}_xq,gemv_$t,gemv_${t}_xq \
      > $R/${t}_${cols}.json 2> $R/${t}_${cols}.err
  done
done
# topk: 256 MiB ([523, 128256]), 1 GiB ([2092, 128256]), and one decode-sized call ([2, 128256]).
for round in 1 2; do for b in device topk; do for mib in 256 1024 1; do
  timeout 90 /tmp/$b bench --backend gpu --json --mib $mib --ops topk > $R/topk_${b}_${mib}_$round.json 2> $R/topk_${b}_${mib}_$round.err
done; done; done
cd $OUT && tar czf xq.tgz xq
