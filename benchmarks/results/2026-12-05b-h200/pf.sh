#!/bin/bash
# Device call: (1) the quantized GEMV with the next unit's weights loaded before this unit's arithmetic
# (TORCHLESS_QGEMV_PREFETCH=1, an experiment switch of this build) against without, kernels alone (_xq) at
# the Llama-3-8B shapes and in Llama-3-8B q4_k decode (alternating); (2) sdpa_decode's launch shapes at
# context 512 inside Llama-3-8B bf16 decode (TORCHLESS_DECODE_TUNE=LANES,THREADS,ROWS,SPLITS, 0 = auto),
# by launch grid. Carries .gl and target/devgz (device.xz); writes $OUT/pf.tgz.
source .gl/setup.sh
R=$OUT/pf; mkdir -p $R
xz -dc target/devgz/device.xz > /tmp/device; chmod +x /tmp/device
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1 &
B="timeout 120 /tmp/device bench --backend gpu --json"
for pf in 0 1; do
  for cols in 4096 14336; do
    for tm in q8_0:60 q4_0:32 q4_k:32 q6_k:46; do t=${tm%:*}; mib=${tm#*:}
      TORCHLESS_QGEMV_PREFETCH=$pf TORCHLESS_BENCH_QGEMV_COLS=$cols $B --mib $mib --ops gemv_${t}_xq,gemv_${t}_xq \
        > $R/${t}_${cols}_pf$pf.json 2> $R/${t}_${cols}_pf$pf.err
    done
  done
done
wait
cat /tmp/llama/*.safetensors > /dev/null
P="timeout 90 /tmp/device bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama"
for round in 1 2; do for pf in 0 1; do
  TORCHLESS_QGEMV_PREFETCH=$pf $P --decode-tokens 128 --quantize q4_k --json >> $R/q4k_pf$pf.json 2>> $R/q4k_pf$pf.err
done; done
TORCHLESS_QGEMV_PREFETCH=1 $P --decode-tokens 32 --quantize q4_k --profile > $R/prof_q4k_pf1.txt 2>&1
for t in 0,0,0,0 0,0,0,4 0,0,0,16 0,0,0,32 0,256,0,0 16,256,0,0 0,0,1,0; do
  TORCHLESS_DECODE_TUNE=$t $P --decode-tokens 32 --profile > $R/attn_${t//,/_}.txt 2>&1
done
cd $OUT && tar czf pf.tgz pf
