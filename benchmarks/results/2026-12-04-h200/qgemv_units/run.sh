#!/bin/bash
# Q4_K GEMV A/B: old (HEAD), two (two units a loop step), both (two + quarter per thread),
# diagS (scales not decoded), diagX (x hi = lo: 8-bit x emulation). Throw-away.
set -u
source .gl/setup.sh
mkdir -p /tmp/bin; for f in target/devgz/*.xz; do n=$(basename $f .xz); xz -dc $f > /tmp/bin/$n; chmod +x /tmp/bin/$n; done
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/env.txt
M=/tmp/llama3-8b-random
timeout 120 python3 scripts/make_random_llama.py --out $M > $OUT/make.log 2>&1 &
kb() { # variant op mib cols
  TORCHLESS_BENCH_QGEMV_COLS=$4 timeout 60 /tmp/bin/$1 bench --backend gpu --mib $3 --json --ops $2 2>>$OUT/kern.err | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(sys.argv[1], sys.argv[2], r["op"], "%.4f" % r["ms"], "%.1f" % r["pct_of_copy"], r["ok"], "%.2e" % r["max_abs_err"])' "$1" "$4"
}
{
for round in 1 2; do
  for v in old two both; do
    for cols in 4096 14336; do
      kb $v gemv_q4_k 32 $cols
    done
  done
done
for v in old both; do
  for cols in 4096 14336; do
    kb $v gemv_q6_k 46 $cols; kb $v gemv_q4_0 32 $cols; kb $v gemv_q8_0 60 $cols; kb $v gemv_q5_k 32 $cols
  done
done
for v in diagS diagX; do for cols in 4096 14336; do kb $v gemv_q4_k 32 $cols; done; done
} > $OUT/kern.txt
echo kernels done $(date -u) >> $OUT/env.txt
wait
cat $M/*.safetensors > /dev/null
BM="bench-model --backend gpu --model $M --context 512 --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/bin/old bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
for r in 1 2; do
  for v in old two both; do
    timeout 60 /tmp/bin/$v $BM --quantize q4_k > $OUT/q4k_${v}_$r.json 2> $OUT/q4k_${v}_$r.err
  done
done
for v in diagS diagX; do timeout 60 /tmp/bin/$v $BM --quantize q4_k > $OUT/q4k_$v.json 2> $OUT/q4k_$v.err; done
for v in old both; do timeout 60 /tmp/bin/$v $BM --quantize q8_0 > $OUT/q8_$v.json 2> $OUT/q8_$v.err; done
echo all done $(date -u) >> $OUT/env.txt
