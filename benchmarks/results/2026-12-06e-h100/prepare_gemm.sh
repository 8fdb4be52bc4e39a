#!/bin/bash
# Locally, from a clean tree on main (~2 min): main and branch gemm-unroll into target/exp/ (stripped, xz),
# beside whatever prepare_topk_wg.sh left there. Then on the GPU machine: gemm15.sh.
set -eu
mkdir -p target/exp
cargo build --release
cp target/release/torchless target/exp/main
git switch -q gemm-unroll
cargo build --release
cp target/release/torchless target/exp/gemm-unroll
git switch -q main
for b in main gemm-unroll; do strip target/exp/$b; xz -T4 -f target/exp/$b; done
ls -la target/exp
