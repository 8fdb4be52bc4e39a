#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n57"] (~4 min). m5 = 2c1f3c8 (main: 256-thread gated and
# long-row GEMVs); m5test its kernel unit tests.
# 1. Every kernel unit test of main on NVIDIA. $OUT/ktest_m5.txt
# 2. xLSTM-7B decode profiles: auto, then every GEMV forced to 256,4 / 256,2 / 64,4. $OUT/xprof.txt
source .gl/setup.sh
D=target/exp/n57
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/ktest_m5.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 120 $D/m5test --test-threads 16 >> $OUT/ktest_m5.txt 2>&1
echo "rc $?" >> $OUT/ktest_m5.txt
X=/tmp/xlstm-7b-random
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1
cat $X/*.safetensors > /dev/null
P="bench-model --backend gpu --model $X --context 512 --decode-tokens 32 --prefill-tokens 0 --profile"
for t in auto 256,4 256,2 64,4; do
  echo "=== TORCHLESS_GEMV_TUNE=$t" >> $OUT/xprof.txt
  if [ $t = auto ]; then E=""; else E="TORCHLESS_GEMV_TUNE=$t"; fi
  env $E timeout 90 $D/m5 $P 2>&1 | grep -vE "^kernel/entry|^  per decode|^model|^load|^copy|^host" >> $OUT/xprof.txt
done
