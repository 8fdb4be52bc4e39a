#!/bin/bash
# Locally, from a clean tree on main (~4 min on 2 cores): builds main and branch topk-wgc with top-k
# workgroups of 256, 320, 512 and 640 threads (each size a constant of its own build: as a pipeline
# override the kernel lost 16-24 points, topk13.txt), checks each on lavapipe, and leaves them stripped
# and xz-compressed in target/exp/. Then on the GPU machine: topk14.sh, carry [".gl", "target/exp"].
set -eu
mkdir -p target/exp
rm -f target/exp/*
cargo build --release
cp target/release/torchless target/exp/main
# The branch, or (where it did not survive) the same from its patch on its base commit (the patch is
# copied first: the base's tree lacks this folder).
P=$(mktemp); cp benchmarks/results/2026-12-06e-h100/topk-wgc.patch $P
git switch -q topk-wgc 2>/dev/null || { git switch -q -c topk-wgc 91ff71e; git am -q $P; }
F=crates/torchless-kernels/kernels/select.wgsl
for w in 256 320 512 640; do
  room=$(python3 -c "print(1 << (4 * $w - 1).bit_length())")
  sed -i "s/^const TWG: u32 = [0-9]*u;/const TWG: u32 = ${w}u;/; s/^const CAP_ROOM: u32 = [0-9]*u;/const CAP_ROOM: u32 = ${room}u;/" $F
  cargo test --release -p torchless-kernels topk 2>&1 | grep -E "^test result: ok. 4 passed" > /dev/null
  cargo build --release
  cp target/release/torchless target/exp/twg$w
done
git checkout $F
git switch -q main
for b in target/exp/*; do strip $b; xz -T4 -f $b; done
ls -la target/exp
