#!/bin/bash
# Locally, from a clean tree on main: the binaries run29.sh compares, into target/exp/i/ (stripped, xz):
# base (9f8a8d8), main, half (branch gemm-half, remade from gemm-half.patch where missing) and main's
# kernel unit tests (ktest). Then on the GPU machine: run29.sh, carry [".gl", "target/exp/i"].
set -eu
R=benchmarks/results/2026-12-06i-h100
D=target/exp/i
mkdir -p $D
MAIN=$(git rev-parse main)
git rev-parse -q --verify refs/heads/gemm-half > /dev/null || {
  git switch -q -c gemm-half 423ed31; git am -q $R/gemm-half.patch; git switch -q main; }
pack() { strip -o $D/$1 "$2"; xz -T4 -f $D/$1; }
build() {
  [ -f $D/$1.xz ] && return
  git switch -q --detach $2; cargo build --release; git switch -q main
  pack $1 target/release/torchless
}
build base 9f8a8d8
build main $MAIN
build half gemm-half
[ -f $D/ktest.xz ] || pack ktest "$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 |
  grep -o 'target/release/deps/torchless_kernels-[a-z0-9]*')"
