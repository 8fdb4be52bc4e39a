#!/bin/bash
# Locally, from a clean tree on main (branches topk-pairs and l2-prefetch present, or made from this
# folder's patches: `git switch -c topk-pairs <commit that added them> && git am topk-pairs.patch`, the same
# for l2-prefetch with l2-warm.patch): the binaries run42.sh compares, into target/exp/q/ (stripped, xz).
# base = main; pairs = topk-pairs (the first tile offers one best per pair of threads); r1-2-4 = main with
# top-k rounds of at most 4 tiles; t1024, t2048 = main aiming at 1024 / 2048 top-k workgroups (rows split); l2 = l2-prefetch (L2 warming), l2test = its kernel unit tests.
set -eu
D=target/exp/q
W=crates/torchless-kernels/kernels/select.wgsl
S=crates/torchless-kernels/src/ops/select.rs
mkdir -p $D
cargo build --release && strip -o $D/base target/release/torchless
sed -i "s/^const ROUND_TILES: u32 = .*/const ROUND_TILES: u32 = 4u;/" $W
cargo build --release && strip -o $D/r1-2-4 target/release/torchless
git checkout $W
# Rows split in chunks with a merge pass (at 256 MiB, 523 rows: 2 and 4 chunks; 1 GiB unchanged).
for t in 1024 2048; do
  sed -i "s/^const TARGET_WORKGROUPS: usize = .*/const TARGET_WORKGROUPS: usize = $t;/" $S
  cargo build --release && strip -o $D/t$t target/release/torchless
done
git checkout $S
git checkout topk-pairs && cargo build --release && strip -o $D/pairs target/release/torchless
git checkout l2-prefetch && cargo build --release && strip -o $D/l2 target/release/torchless
strip -o $D/l2test "$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 |
  grep -o 'target/release/deps/torchless_kernels-[a-z0-9]*')"
git checkout main
xz -T4 -f $D/base $D/r1-2-4 $D/t1024 $D/t2048 $D/pairs $D/l2 $D/l2test
