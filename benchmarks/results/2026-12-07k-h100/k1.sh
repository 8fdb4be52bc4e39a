#!/bin/bash
# GPU machine (H100), one call of ~8 min; carry [".gl", "target/exp/k1"]. 12-07j's j1.sh with the
# binaries rebuilt (the branches it named were lost with that checkout; see README.md), then 12-07i's
# i5.sh on main's binary. target/exp/k1/b: main (ae25192); m: branch mat-loop, commit 1 (gemv.wgsl);
# q: mat-loop (+ qgemv.wgsl). $OUT/qkv.txt, decode.txt, prof_*.txt as j1.sh writes them; $OUT/q6k_pf.txt:
# q6_k at 4096 × 14336, PREFETCH 0 / 1 at three launch shapes, twice.
D=target/exp/k1 bash benchmarks/results/2026-12-07j-h100/j1.sh
BIN=target/exp/k1/b bash benchmarks/results/2026-12-07i-h100/i5.sh
