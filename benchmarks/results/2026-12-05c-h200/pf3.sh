#!/bin/bash
# Run on an H200 (the H100 did not start again): which Q6_K GEMVs lose with PREFETCH in decode. Build:
# HEAD + pf3_switch.diff (XPF=noemit: prefetch only in GEMVs that do not emit the next one's input; XPF=big:
# only with 32768 rows or more, the LM head), packed as target/devgz/device.xz; carry .gl, target/devgz and
# this file. Writes $OUT/pf3.tgz.
source .gl/setup.sh
R=$OUT/pf3; mkdir -p $R
xz -dc target/devgz/device.xz > /tmp/device; chmod +x /tmp/device
python3 scripts/make_random_llama.py --out /tmp/llama > $R/make_llama.log 2>&1
cat /tmp/llama/*.safetensors > /dev/null
P="timeout 60 /tmp/device bench-model --backend gpu --prefill-tokens 0 --model /tmp/llama --quantize q6_k"
for round in 1 2; do
  for cfg in "XPF=all" "TORCHLESS_QGEMV_PREFETCH=0" "XPF=noemit" "XPF=big"; do
    env $cfg $P --decode-tokens 128 --json >> $R/q6k_$(echo $cfg | tr '=' '_').json 2>> $R/err.txt
  done
done
$P --decode-tokens 32 --profile > $R/prof_pf_all.txt 2>&1
TORCHLESS_QGEMV_PREFETCH=0 $P --decode-tokens 32 --profile > $R/prof_pf0.txt 2>&1
cd $OUT && tar czf pf3.tgz pf3 && rm -rf pf3
