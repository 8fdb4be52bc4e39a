#!/bin/bash
# Locally, from a clean tree on main (~2 min): main and branch gemm-unroll into target/exp/ (stripped, xz),
# beside whatever prepare_topk_wg.sh left there. Then on the GPU machine: gemm15.sh.
set -eu
mkdir -p target/exp
cargo build --release
cp target/release/torchless target/exp/main
# The branch, or (where it did not survive) the same from its patch on its base commit (the patch is
# copied first: the base's tree lacks this folder).
P=$(mktemp); cp benchmarks/results/2026-12-06e-h100/gemm-unroll.patch $P
git switch -q gemm-unroll 2>/dev/null || { git switch -q -c gemm-unroll 37cbde6; git am -q $P; }
cargo build --release
cp target/release/torchless target/exp/gemm-unroll
git switch -q main
for b in main gemm-unroll; do strip target/exp/$b; xz -T4 -f target/exp/$b; done
ls -la target/exp
