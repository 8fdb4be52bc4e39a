#!/bin/bash
# Locally, from a clean tree on main (~2 min): main and branch gemm-remap (rebuilt from gemm-remap.patch on
# 31f1aed where the branch did not survive) into target/exp/ (stripped, xz). Then on the GPU machine:
# gemm18.sh, carry [".gl", "target/exp"].
set -eu
mkdir -p target/exp
cargo build --release
cp target/release/torchless target/exp/main
P=$(mktemp); cp benchmarks/results/2026-12-06f-h100/gemm-remap.patch $P
git switch -q gemm-remap 2>/dev/null || { git switch -q -c gemm-remap 31f1aed; git am -q $P; }
cargo build --release
cp target/release/torchless target/exp/gemm-st
git switch -q main
for b in main gemm-st; do strip target/exp/$b; xz -T4 -f target/exp/$b; done
ls -la target/exp
