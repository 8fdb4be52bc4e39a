#!/bin/bash
# Locally, from a clean tree on main (~4 min): main, branch topk-pre (rebuilt from topk-pre.patch on
# 31d7742 where the branch did not survive) with rounds of up to 8 tiles (its own), of up to 16, and with
# up to 256 candidates merged by counting, into target/exp/ (stripped, xz). Then on the GPU machine:
# topk19.sh, carry [".gl", "target/exp"].
set -eu
mkdir -p target/exp
cargo build --release
cp target/release/torchless target/exp/main
P=$(mktemp); cp benchmarks/results/2026-12-06f-h100/topk-pre.patch $P
git switch -q topk-pre 2>/dev/null || { git switch -q -c topk-pre 31d7742; git am -q $P; }
cargo build --release
cp target/release/torchless target/exp/pre
F=crates/torchless-kernels/kernels/select.wgsl
# A build of the branch with one constant of select.wgsl changed: name, constant, its value there, new value.
variant() {
  sed -i "s/^const $2: u32 = $3u;/const $2: u32 = $4u;/" $F
  grep -q "^const $2: u32 = $4u;" $F
  TORCHLESS_EXP_TOPK_PRE=1 cargo test --release -p torchless-kernels --lib topk 2>&1 | grep -E "^test result: ok. 4 passed" > /dev/null
  cargo build --release
  cp target/release/torchless target/exp/$1
  git checkout $F
}
variant pre16 ROUND_TILES 8 16
# Buffers of up to 256 candidates counted (the first tile's 256 thread maxima too) instead of up to 128.
variant pre256 RANK_MERGE_MAX 128 256
git switch -q main
for b in main pre pre16 pre256; do strip target/exp/$b; xz -T4 -f target/exp/$b; done
ls -la target/exp
