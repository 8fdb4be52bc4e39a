#!/bin/bash
# Locally, from a clean tree on main (~4 min): the binaries next24.sh compares, into target/exp/
# (stripped, xz), each built only where missing: base (14071a5, before this session's kernels), main,
# tk16 (branch gemm-tk16), cdb (branch coop-db), kreg (branch gemm-kreg) and kreg16 (branch gemm-kreg16).
# A branch that did not survive is remade from its patch here. Then on the GPU machine: next24.sh, carry
# [".gl", "target/exp"].
set -eu
R=benchmarks/results/2026-12-06g-h100
mkdir -p target/exp
P=$(mktemp -d); cp $R/*.patch $P/
# restore BRANCH BASE: BRANCH, made from BRANCH.patch on BASE where it is missing.
restore() {
  git rev-parse -q --verify "refs/heads/$1" > /dev/null && return
  git switch -q -c $1 $2
  git am -q $P/$1.patch
  git switch -q main
}
restore gemm-tk16 98ef87a
restore coop-db b74028d
restore gemm-kreg d2147a4
restore gemm-kreg16 gemm-kreg
# build NAME REF: the binary of REF, a commit or branch.
build() {
  [ -f target/exp/$1.xz ] && return
  git switch -q --detach $2
  cargo build --release
  cp target/release/torchless target/exp/$1
  git switch -q main
  strip target/exp/$1
  xz -T4 -f target/exp/$1
}
build base 14071a5
build main main
build tk16 gemm-tk16
build cdb coop-db
build kreg gemm-kreg
build kreg16 gemm-kreg16
ls -la target/exp
