#!/bin/bash
# Launch-shape sweep of the quantized GEMV (TORCHLESS_QGEMV_TUNE=WG,ROWS against auto_tune's choice) at
# the issue-6 shapes, one line per case: tune, cols, op, ms, % of copy. On the GPU machine, from the repo
# root, with .gl/ and the binary beside it: OUT=/some/dir B=./target/release/torchless bash benchmarks/device_qgemv_sweep.sh
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; B="${B:-./target/release/torchless}"
TUNES="${TUNES:-auto 32,2 32,4 64,1 64,2 64,4 128,2 128,4 256,4}"
for tune in $TUNES; do
  for cols in 4096 14336; do
    for spec in "gemv_q4_0 32" "gemv_q4_k 32" "gemv_q8_0 60" "gemv_q6_k 46"; do
      set -- $spec
      if [ "$tune" = auto ]; then unset TORCHLESS_QGEMV_TUNE; else export TORCHLESS_QGEMV_TUNE=$tune; fi
      TORCHLESS_BENCH_QGEMV_COLS=$cols timeout 60 $B bench --backend gpu --mib "$2" --seconds 0.3 --json --ops "$1" \
        2>>"$OUT/sweep.err" | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(sys.argv[1], sys.argv[2], r["op"], "%.4f" % r["ms"], "%.1f" % r["pct_of_copy"], r["ok"])' "$tune" "$cols"
    done
  done
done > "$OUT/sweep.txt"
