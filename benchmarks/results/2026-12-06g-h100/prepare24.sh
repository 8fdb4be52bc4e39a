#!/bin/bash
# Locally, from a clean tree on main (~3 min): the binaries next24.sh compares, into target/exp/
# (stripped, xz), each built only where missing: base (14071a5, before this session's kernels), main,
# tk16 (branch gemm-tk16, rebuilt from gemm-tk16.patch on 98ef87a where the branch did not survive) and
# cdb (branch coop-db, from coop-db.patch on b74028d) and kreg (branch gemm-kreg, from gemm-kreg.patch on
# d2147a4) and kreg16 (branch gemm-kreg16, from gemm-kreg16.patch on a220010, gemm-kreg's first commit;
# build kreg before it). Then on the GPU machine: next24.sh, carry
# [".gl", "target/exp"].
set -eu
R=benchmarks/results/2026-12-06g-h100
mkdir -p target/exp
P=$(mktemp -d); cp $R/gemm-tk16.patch $R/coop-db.patch $R/gemm-kreg.patch $R/gemm-kreg16.patch $P/
# build NAME REF [BRANCH PATCH]: the binary of REF (or of BRANCH, made from PATCH on REF if missing).
build() {
  [ -f target/exp/$1.xz ] && return
  if [ $# -eq 2 ]; then git switch -q --detach $2; else
    git switch -q $3 2>/dev/null || { git switch -q -c $3 $2; git am -q $P/$4; }
  fi
  cargo build --release
  cp target/release/torchless target/exp/$1
  git switch -q main
  strip target/exp/$1
  xz -T4 -f target/exp/$1
}
build base 14071a5
build main main
build tk16 98ef87a gemm-tk16 gemm-tk16.patch
build cdb b74028d coop-db coop-db.patch
build kreg d2147a4 gemm-kreg gemm-kreg.patch
build kreg16 a220010 gemm-kreg16 gemm-kreg16.patch
ls -la target/exp
