#!/bin/bash
# Locally, from a clean tree on main (~1 min): branch row-tune into target/exp/row-tune.xz (stripped),
# beside what prepare_topk_wg.sh and prepare_gemm.sh left there. Then on the GPU machine: row16.sh.
set -eu
mkdir -p target/exp
git switch -q row-tune
cargo build --release
cp target/release/torchless target/exp/row-tune
git switch -q main
strip target/exp/row-tune
xz -T4 -f target/exp/row-tune
ls -la target/exp
