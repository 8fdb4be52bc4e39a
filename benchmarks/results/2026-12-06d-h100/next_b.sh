#!/bin/bash
# GPU machine, after prepare_next.sh: run with carry [".gl", "target/exp"]. Llama-3-8B and xLSTM-7B bf16
# decode (random weights, context 512, 128 tokens): main, the held head norm (xlstm-norm, xLSTM only), the
# GEMV loading four chunks ahead for the normed multi-matrix GEMVs and for all (gemv-unroll), alternating.
# $OUT/ab.txt. ~7 min (making the two models ~3).
source .gl/setup.sh
for b in main xlstm-norm gemv-unroll; do [ -f target/exp/$b ] || xz -dk target/exp/$b.xz; done
A=$OUT/ab.txt; M=/tmp/llama3-8b-random; X=/tmp/xlstm-7b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > $OUT/make_llama.log 2>&1
[ -f $X/config.json ] || timeout 150 python3 scripts/make_random_xlstm.py --out $X > $OUT/make_xlstm.log 2>&1
run() {  # binary, model, switches...
  b=$1; m=$2; shift 2; echo "=== $b $m $*" >> $A
  env X=0 "$@" timeout 60 ./target/exp/$b bench-model --backend gpu --model $m --context 512 --decode-tokens 128 \
    --prefill-tokens 0 2>&1 | grep -E "^decode" >> $A
}
for m in $M $X; do timeout 60 ./target/exp/main bench-model --backend gpu --model $m --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1; done
U=TORCHLESS_EXP_GEMV_UNROLL
for i in 1 2; do
  run main $X; run xlstm-norm $X; run gemv-unroll $X ${U}_MULTI=4; run gemv-unroll $X $U=4
  run main $M; run gemv-unroll $M ${U}_MULTI=4; run gemv-unroll $M $U=4
done
