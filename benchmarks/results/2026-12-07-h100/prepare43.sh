#!/bin/bash
# Locally, from a clean tree on main at 7706bb0 (branch topk-own present, or made from this folder's
# topk-own.patch with `git switch -c topk-own && git am topk-own.patch`): the binaries run43.sh compares,
# into target/exp/r/ (stripped, xz). base = main (top-k in rounds, the first tile offered by pairs of
# threads); own = topk-own (each thread's own best 8 first); own-v4 = own counting the bar over vec4s of
# keys (own-v4.patch); own-floor = own with a bar computed after 3 tiles, below
# which elements are not kept (own-floor.patch); owntest = own's kernel unit tests.
set -eu
D=target/exp/r
R=$(pwd)/benchmarks/results/2026-12-07-h100; cp $R/own-v4.patch $R/own-floor.patch /tmp/; R=/tmp
mkdir -p $D
cargo build --release && strip -o $D/base target/release/torchless
git checkout topk-own
cargo build --release && strip -o $D/own target/release/torchless
strip -o $D/owntest "$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 |
  grep -o 'target/release/deps/torchless_kernels-[a-z0-9]*')"
git apply $R/own-v4.patch
cargo build --release && strip -o $D/own-v4 target/release/torchless
git checkout crates/torchless-kernels/kernels/select.wgsl
git apply $R/own-floor.patch
cargo build --release && strip -o $D/own-floor target/release/torchless
git checkout crates/torchless-kernels/kernels/select.wgsl
git checkout main
xz -T4 -f $D/base $D/own $D/own-v4 $D/own-floor $D/owntest
