#!/bin/bash
# Locally, from a clean tree on main: the binaries run37.sh compares, into target/exp/n/ (stripped, xz).
# base = main as it stands; nanw = main with softmax-nanw.patch (softmax's NaN carried by the row's sum
# through a clamp that keeps it, no per-score flag); ktest = nanw's kernel unit tests.
# Then on the GPU machine: run37.sh, carry [".gl", "target/exp/n"].
set -eu
D=target/exp/n
R=benchmarks/results/2026-12-06k-h100
mkdir -p $D
cargo build --release
strip -o $D/base target/release/torchless
git apply $R/softmax-nanw.patch
cargo build --release
strip -o $D/nanw target/release/torchless
strip -o $D/ktest "$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 |
  grep -o 'target/release/deps/torchless_kernels-[a-z0-9]*')"
git apply -R $R/softmax-nanw.patch
xz -T2 -f $D/base $D/nanw $D/ktest
