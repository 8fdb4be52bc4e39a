#!/bin/bash
# Locally, from a clean tree on main: the binaries run32.sh compares, into target/exp/j/ (stripped, xz):
# main, prev (4fc347d, before softmax's NaN rows), main's kernel unit tests (ktest), gather and gatherw (branches gemm-gather, gemm-gather-w, remade from gemm-gather-w.patch where
# missing). Then on the GPU machine: run32.sh, carry [".gl", "target/exp/j"].
set -eu
R=benchmarks/results/2026-12-06i-h100/next
D=target/exp/j
mkdir -p $D
MAIN=$(git rev-parse main)
git rev-parse -q --verify refs/heads/gemm-gather-w > /dev/null || {
  git switch -q -c gemm-gather-w 36dd1e7; git am -q $R/gemm-gather-w.patch; git switch -q main; }
git rev-parse -q --verify refs/heads/gemm-gather > /dev/null || git branch gemm-gather gemm-gather-w~1
pack() { strip -o $D/$1 "$2"; xz -T4 -f $D/$1; }
build() {
  [ -f $D/$1.xz ] && return
  git switch -q --detach $2; cargo build --release; git switch -q main
  pack $1 target/release/torchless
}
build main $MAIN
build prev 4fc347d
build gather gemm-gather
build gatherw gemm-gather-w
[ -f $D/ktest.xz ] || pack ktest "$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 |
  grep -o 'target/release/deps/torchless_kernels-[a-z0-9]*')"
