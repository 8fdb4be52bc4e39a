#!/bin/bash
# GPU machine (H100), one call of ~8 min; carry [".gl", "target/exp/k1"]. 12-07j's j1.sh with the
# binaries rebuilt (the branches it named were lost with that checkout; see README.md), then 12-07i's
# i5.sh on main's binary. target/exp/k1/b: main (ae25192); m: branch mat-loop, commit 1 (gemv.wgsl);
# q: mat-loop (+ qgemv.wgsl). $OUT/qkv.txt, decode.txt, prof_*.txt as j1.sh writes them; $OUT/q6k_pf.txt:
# q6_k at 4096 × 14336, PREFETCH 0 / 1 at three launch shapes, twice.
D=target/exp/k1 bash benchmarks/results/2026-12-07j-h100/j1.sh
source .gl/setup.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/q6k_pf.txt
for round in 1 2; do
  for t in auto 128,4 32,4; do
    for pf in 0 1; do
      E="TORCHLESS_QGEMV_PREFETCH=$pf"; [ $t = auto ] || E="$E TORCHLESS_QGEMV_TUNE=$t"
      echo "=== $t PREFETCH=$pf" >> $OUT/q6k_pf.txt
      env TORCHLESS_BENCH_QGEMV_COLS=14336 $E timeout 30 target/exp/k1/b bench --backend gpu --mib 46 --ops gemv_q6_k_xq 2>&1 | grep -E "^gemv|rror" >> $OUT/q6k_pf.txt
    done
  done
done
