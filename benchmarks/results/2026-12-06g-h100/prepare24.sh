#!/bin/bash
# Locally, from a clean tree on main (~5 min): the binaries tests25.sh and next24.sh compare, into
# target/exp/ (stripped, xz), each built only where missing: base (14071a5, before this session's
# kernels), main, tk16 (branch gemm-tk16), cdb (branch coop-db), kreg (branch gemm-kreg), kreg16 (branch
# gemm-kreg16), desync (branch topk-desync), nonorm (branch qkv-ablate), and main's kernel unit tests
# (ktest). A branch that did not survive is remade from its patch here. Then on the GPU machine:
# tests25.sh, then next24.sh, a call each, carry [".gl", "target/exp"].
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
restore topk-desync 82dd006
restore qkv-ablate e855c83
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
build desync topk-desync
build nonorm qkv-ablate
# The kernels' unit tests of main, for tests25.sh (they carry their WGSL; lavapipe cannot run the
# cooperative paths, the H100 can).
if [ ! -f target/exp/ktest.xz ]; then
  T=$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p')
  cp "$T" target/exp/ktest
  strip target/exp/ktest
  xz -T4 -f target/exp/ktest
fi
ls -la target/exp
