#!/bin/bash
# Locally, from a clean tree on main (~1.5 min): main's cooperative GEMM core (coop16.wgsl) with slices
# 64 deep instead of 32 (four 16-deep steps a barrier pair instead of two; the next slice's 1024 chunks
# in four register slots a thread, so only for WG16 = 256, subgroups of 32; staging 2 × 18 KiB), as target/exp/hk64.xz beside main.xz. naga
# validates it here (wgsl_translates); lavapipe has no cooperative matrices, so the bench's check on the
# GPU machine is its only test. Then: coop20.sh, carry [".gl", "target/exp"].
set -eu
mkdir -p target/exp
[ -f target/exp/main.xz ] || { cargo build --release; cp target/release/torchless target/exp/main; strip target/exp/main; xz -T4 -f target/exp/main; }
F=crates/torchless-kernels/kernels/coop16.wgsl
sed -i 's/^const HK: u32 = 32u;/const HK: u32 = 64u;/; s/^const HSK: u32 = 40u;/const HSK: u32 = 72u;/; s/^const HCHUNKS: u32 = 512u;/const HCHUNKS: u32 = 1024u;/; s/array<f16, 5120>/array<f16, 9216>/g; s|ci / 4u, (ci % 4u) \* 8u|ci / 8u, (ci % 8u) * 8u|' $F
[ "$(git diff --numstat $F | cut -f1)" = 6 ] || { echo "coop16.wgsl changed: the sed needs updating"; git checkout $F; exit 1; }
cargo test --release -p torchless-kernels --test wgsl_translates 2>&1 | grep -E "^test result: ok" > /dev/null
cargo build --release
cp target/release/torchless target/exp/hk64
git checkout $F
strip target/exp/hk64
xz -T4 -f target/exp/hk64
ls -la target/exp
