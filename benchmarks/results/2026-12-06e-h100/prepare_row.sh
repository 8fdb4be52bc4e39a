#!/bin/bash
# Locally, from a clean tree on main (~1 min): branch row-tune into target/exp/row-tune.xz (stripped),
# beside what prepare_topk_wg.sh and prepare_gemm.sh left there. Then on the GPU machine: row16.sh.
set -eu
mkdir -p target/exp
# The branch, or (where it did not survive) the same from its patch on its base commit (the patch is
# copied first: the base's tree lacks this folder).
P=$(mktemp); cp benchmarks/results/2026-12-06e-h100/row-tune.patch $P
git switch -q row-tune 2>/dev/null || { git switch -q -c row-tune d42a5c9; git am -q $P; }
cargo build --release
cp target/release/torchless target/exp/row-tune
git switch -q main
strip target/exp/row-tune
xz -T4 -f target/exp/row-tune
ls -la target/exp
