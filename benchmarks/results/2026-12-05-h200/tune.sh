#!/bin/bash
# Device call (its own): the dense GEMV's launch shapes (TORCHLESS_GEMV_TUNE) at the Llama-3-8B shapes, and
# Llama-3-8B bf16 decode with each shape forced on every GEMV (auto first and last). Carries .gl and
# target/devgz (device.xz); writes $OUT/tune.tgz.
source .gl/setup.sh
xz -dc target/devgz/device.xz > /tmp/device; chmod +x /tmp/device
python3 scripts/make_random_llama.py --out /tmp/llama > /dev/null 2>&1 &
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
wait
cat /tmp/llama/*.safetensors > /dev/null
for t in auto 128,2 128,4 64,4 256,4 auto; do
  e=""; [ $t != auto ] && e="TORCHLESS_GEMV_TUNE=$t"
  env $e timeout 60 /tmp/device bench-model --backend gpu --prefill-tokens 0 --json --model /tmp/llama --decode-tokens 128 \
    >> $R/bf16_${t/,/x}.json 2>> $R/bf16_${t/,/x}.err
done
cd $OUT && tar czf tune.tgz tune
