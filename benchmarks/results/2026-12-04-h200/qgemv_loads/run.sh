#!/bin/bash
# Q4_K load-pattern ablation: diagL (each quarter-thread loads quant vectors 1+c and 5+c: each load
# instruction of a warp reads 64 contiguous bytes a block), diagLH (and the header not loaded). Throw-away.
set -u
source .gl/setup.sh
R=$OUT/r; mkdir -p $R /tmp/bin
for v in old diagL diagLH; do xz -dc target/devgz/$v.xz > /tmp/bin/$v; chmod +x /tmp/bin/$v; done
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $R/env.txt
M=/tmp/llama3-8b-random
timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make.log 2>&1 &
kb() { # variant op mib cols
  TORCHLESS_BENCH_QGEMV_COLS=$4 timeout 60 /tmp/bin/$1 bench --backend gpu --mib $3 --json --ops $2 2>>$R/kern.err | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(sys.argv[1], sys.argv[2], r["op"], "%.4f" % r["ms"], "%.1f" % r["pct_of_copy"], r["ok"], "%.2e" % r["max_abs_err"])' "$1" "$4"
}
for round in 1 2 3; do for v in old diagL diagLH; do for cols in 4096 14336; do kb $v gemv_q4_k 32 $cols; done; done; done > $R/kern.txt
wait
cat $M/*.safetensors > /dev/null
BM="bench-model --backend gpu --model $M --context 512 --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/bin/old bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
for r in 1 2; do for v in old diagL; do
  timeout 60 /tmp/bin/$v $BM --quantize q4_k > $R/q4k_${v}_$r.json 2> $R/q4k_${v}_$r.err
done; done
echo done $(date -u) >> $R/env.txt
tar czf $OUT/r.tgz -C $OUT r
cat $R/kern.txt; for f in $R/q4k_*.json; do python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(sys.argv[1].split('/')[-1],round(d['decode_tok_s'],1))" $f; done
