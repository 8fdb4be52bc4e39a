#!/bin/bash
# After the shared-WGSL refactors (gemm_shared, attention_kv, bits16): every composed kernel still checks
# against the CPU on the H200, cooperative paths included, and runs as fast as 6eb9d4f's. Throw-away.
set -u
source .gl/setup.sh
R=$OUT/r; mkdir -p $R /tmp/bin
for v in old new; do xz -dc target/devgz/$v.xz > /tmp/bin/$v; chmod +x /tmp/bin/$v; done
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $R/env.txt
row() { python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(sys.argv[1], sys.argv[2], r["op"], r["shape"], "%.4f" % r["ms"], "%.1f" % r["pct_of_copy"], (r.get("tflops") or 0) and "%.1f" % r["tflops"], r["ok"], "%.2e" % r["max_abs_err"])' "$1" "$2"; }
for v in old new old new; do
  timeout 120 /tmp/bin/$v bench --backend gpu --mib 256 --json --ops gemm_f16,gemm_bf16,gemm_q4_k,gemm_q8_0 2>>$R/bench.err | row $v 256
  timeout 60 /tmp/bin/$v bench --backend gpu --mib 160 --json --ops flash_attention 2>>$R/bench.err | row $v 160
  timeout 60 /tmp/bin/$v bench --backend gpu --mib 16 --json --ops sdpa_decode,sdpa_decode_f32,cast,embedding,argmax,topk 2>>$R/bench.err | row $v 16
done > $R/kern.txt
tar czf $OUT/r.tgz -C $OUT r
cat $R/kern.txt
