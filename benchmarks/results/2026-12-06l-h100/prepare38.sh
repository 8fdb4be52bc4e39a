#!/bin/bash
# Locally, from a clean tree: top-k builds that differ only in the round schedule (select.wgsl's
# ROUND_FIRST, ROUND_GROWTH, ROUND_TILES), into target/exp/o/ (stripped, xz), named r<first>-<growth>-<max>.
# Then on the GPU machine: run38.sh, carry [".gl", "target/exp/o"].
set -eu
D=target/exp/o
W=crates/torchless-kernels/kernels/select.wgsl
mkdir -p $D
for v in 1-2-8 1-2-16 1-4-64 3-8-64 3-16-64; do
  IFS=- read -r f g m <<< "$v"
  sed -i -e "s/^const ROUND_FIRST: u32 = .*/const ROUND_FIRST: u32 = ${f}u;/" \
    -e "s/^const ROUND_GROWTH: u32 = .*/const ROUND_GROWTH: u32 = ${g}u;/" \
    -e "s/^const ROUND_TILES: u32 = .*/const ROUND_TILES: u32 = ${m}u;/" $W
  cargo build --release 2>&1 | tail -1
  TORCHLESS_REQUIRE_GPU=1 cargo test --release -p torchless-kernels --lib topk 2>&1 | grep "test result"
  strip -o $D/r$v target/release/torchless
done
git checkout $W
xz -T4 -f $D/r*
