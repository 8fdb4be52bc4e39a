#!/bin/bash
# Run here (not on the GPU machine), from the repo root at the commit that added this file: builds main and
# the three prepared experiments (patches in this folder) into target/exp/*.xz (stripped, ~3.7 MB each, so
# that they fit the 64 MiB carry), for next_a.sh and next_b.sh. Leaves main checked out. ~3 min.
set -eu
D=benchmarks/results/2026-12-06d-h100
start=$(git rev-parse --abbrev-ref HEAD)
mkdir -p target/exp
build() {  # name, patch (or "" for the checkout as it is)
  git switch -q --detach
  [ -z "$2" ] || git am -q "$D/$2"
  cargo build --release -q
  strip -o target/exp/$1 target/release/torchless
  xz -T0 -9 -f target/exp/$1
  git switch -q "$start"
}
build main ""
build topk-rank topk-rank.patch
build xlstm-norm xlstm-norm.patch
build gemv-unroll gemv-unroll.patch
ls -la target/exp
