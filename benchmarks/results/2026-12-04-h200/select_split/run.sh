#!/bin/bash
# argmax / topk at 256 MiB ([523, 128256]) and 1 GiB ([2092, 128256]) with the row split's workgroup target
# overridden (TL_SELECT_TW, a throw-away switch): 512 = one chunk a row at 523 rows (one launch), 1024 = the
# default (two chunks and a merge), 2048, 4096. Throw-away.
set -u
source .gl/setup.sh
R=$OUT/r; mkdir -p $R /tmp/bin
xz -dc target/devgz/tw.xz > /tmp/bin/tw; chmod +x /tmp/bin/tw
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $R/env.txt
row() { python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print(sys.argv[1], sys.argv[2], r["op"], r["shape"], "%.4f" % r["ms"], "%.0f" % r["gbps"], "%.1f" % r["pct_of_copy"], r["ok"])' "$1" "$2"; }
{
for round in 1 2; do for tw in 512 1024 2048 4096; do
  TL_SELECT_TW=$tw timeout 60 /tmp/bin/tw bench --backend gpu --mib 256 --seconds 0.5 --json --ops argmax,topk 2>>$R/bench.err | row $tw 256
done; done
for tw in 1024 4096; do
  TL_SELECT_TW=$tw timeout 90 /tmp/bin/tw bench --backend gpu --mib 1024 --seconds 0.5 --json --ops argmax,topk 2>>$R/bench.err | row $tw 1024
done
} > $R/kern.txt
tar czf $OUT/r.tgz -C $OUT r
cat $R/kern.txt
