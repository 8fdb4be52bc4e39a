#!/usr/bin/env bash
# Runs the CPU tests as aarch64 code under qemu, on an x86-64 Linux machine: the code paths of Apple
# Silicon and other non-x86 CPUs (no AVX2 dots), which the x86 test runs do not take. GPU tests are
# skipped (no adapter under qemu). Debian/Ubuntu packages: qemu-user gcc-aarch64-linux-gnu
# libc6-dev-arm64-cross. Extra arguments go to `cargo test` (e.g. a test name). The CLI tests, which
# start the binary themselves, are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test --release --target aarch64-unknown-linux-gnu -p torchless-kernels -p torchless "$@"
