#!/bin/bash
# Locally, from a clean tree on main (~1.5 min): branch coop-4x4 (rebuilt from coop-4x4.patch on a6d338a
# where the branch did not survive) as target/exp/c4x4.xz: the cooperative GEMM core with four subgroups
# a workgroup, each a 64×64 block of C (4×4 fragments, 16 named accumulators; half the fragment loads a
# product of the 64×32 blocks of main's eight subgroups). For subgroups of 32 only (WG16 = 128 then; the
# next slice's 512 chunks take all four register slots). 12-02's 64×64 trial (25–33 TFLOP/s) ran with
# naga's index clamps, which then cost the core a third of its speed. naga validates it here; the
# bench's check on the GPU machine is its test. Then: coop20.sh.
set -eu
mkdir -p target/exp
P=$(mktemp); cp benchmarks/results/2026-12-06f-h100/coop-4x4.patch $P
git switch -q coop-4x4 2>/dev/null || { git switch -q -c coop-4x4 a6d338a; git am -q $P; }
cargo test --release -p torchless-kernels --test wgsl_translates 2>&1 | grep -E "^test result: ok" > /dev/null
cargo build --release
cp target/release/torchless target/exp/c4x4
git switch -q main
strip target/exp/c4x4
xz -T4 -f target/exp/c4x4
ls -la target/exp
