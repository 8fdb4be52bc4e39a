#!/bin/bash
# Locally, from a clean tree on main (~6 min): the binaries run28.sh compares, into target/exp/h/
# (stripped, xz), each built only where missing: old (a07728c, 12-06g's last commit), main, q4k64
# (branch q4k-wg64), tk16, kreg, cdb (12-06g's branches gemm-tk16, gemm-kreg, coop-db), and main's kernel
# unit tests (ktest). A branch that did not survive is remade from its patch here. Then on the GPU
# machine: run28.sh, carry [".gl", "target/exp/h"].
set -eu
R=benchmarks/results/2026-12-06h-h100
G=benchmarks/results/2026-12-06g-h100
D=target/exp/h
mkdir -p $D
P=$(mktemp -d); cp $G/*.patch $R/*.patch $P/
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
restore q4k-wg64 cf8ab06
# pack NAME FILE: FILE stripped and compressed as $D/NAME.xz.
pack() {
  strip -o $D/$1 "$2"
  xz -T4 -f $D/$1
}
# build NAME REF: the binary of REF, a commit or branch.
build() {
  [ -f $D/$1.xz ] && return
  git switch -q --detach $2
  cargo build --release
  git switch -q main
  pack $1 target/release/torchless
}
build old a07728c
build main main
build q4k64 q4k-wg64
build tk16 gemm-tk16
build kreg gemm-kreg
build cdb coop-db
# The kernels' unit tests of main (they carry their WGSL).
if [ ! -f $D/ktest.xz ]; then
  T=$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p')
  pack ktest "$T"
fi
ls -la $D
