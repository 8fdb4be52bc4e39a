#!/bin/bash
# Vulkan robustness A/B: old (wgpu as released: robustBufferAccess and robustBufferAccess2 on), nr (wgpu-hal
# patched to request neither; naga's buffer checks stay off as they are with robustBufferAccess2). Throw-away.
set -u
source .gl/setup.sh
R=$OUT/r; mkdir -p $R /tmp/bin
for v in old nr; do xz -dc target/devgz/$v.xz > /tmp/bin/$v; chmod +x /tmp/bin/$v; done
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $R/env.txt
M=/tmp/llama3-8b-random
timeout 120 python3 scripts/make_random_llama.py --out $M > $R/make.log 2>&1 &
row() { python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(sys.argv[1], sys.argv[2], r["op"], r["shape"], "%.4f" % r["ms"], "%.0f" % r["gbps"], "%.1f" % r["pct_of_copy"], r["ok"])' "$1" "$2"; }
for round in 1 2; do for v in old nr; do
  timeout 120 /tmp/bin/$v bench --backend gpu --mib 256 --json --ops copy,softcap,silu,add,rmsnorm,add_rmsnorm,softmax,embedding,argmax 2>>$R/bench.err | row $v 256
  timeout 60 /tmp/bin/$v bench --backend gpu --mib 32 --json --ops gemv_bf16,gemv_q4_k,gemv_q4_0 2>>$R/bench.err | row $v 32
  timeout 60 /tmp/bin/$v bench --backend gpu --mib 112 --json --ops gemv_bf16 2>>$R/bench.err | row $v 112
  timeout 60 /tmp/bin/$v bench --backend gpu --mib 128 --json --ops sdpa_decode,sdpa_decode_f32 2>>$R/bench.err | row $v 128
done; done > $R/kern.txt
grep -h "device copy" $R/bench.err >> $R/env.txt
wait
cat $M/*.safetensors > /dev/null
BM="bench-model --backend gpu --model $M --context 512 --decode-tokens 128 --prefill-tokens 0 --json"
timeout 60 /tmp/bin/old bench-model --backend gpu --model $M --decode-tokens 16 --prefill-tokens 0 > /dev/null 2>&1
for r in 1 2; do for v in old nr; do
  timeout 60 /tmp/bin/$v $BM --quantize q4_k > $R/q4k_${v}_$r.json 2> $R/q4k_${v}_$r.err
done; done
for v in old nr; do timeout 60 /tmp/bin/$v $BM > $R/bf16_$v.json 2> $R/bf16_$v.err; done
echo done $(date -u) >> $R/env.txt
tar czf $OUT/r.tgz -C $OUT r
cat $R/kern.txt; for f in $R/*.json; do python3 -c "import json,sys;d=json.load(open(sys.argv[1]));print(sys.argv[1].split('/')[-1],round(d['decode_tok_s'],1))" $f; done
