#!/bin/bash
# Locally, from a clean tree on main: the binaries run35.sh compares, into target/exp/l/ (stripped, xz).
# Then on the GPU machine: run35.sh, carry [".gl", "target/exp/l"].
set -eu
D=target/exp/l
mkdir -p $D
pack() { strip -o $D/$1 "$2"; xz -T4 -f $D/$1; }
build() {
  [ -f $D/$1.xz ] && return
  git switch -q --detach $2; cargo build --release; git switch -q main
  pack $1 target/release/torchless
}
build main 7f54c0a
build mid 4263208
build prev 4fc347d
build exp2 782c2d3
# main's kernel unit tests (the code as it stands, tests included).
[ -f $D/ktest.xz ] || pack ktest "$(cargo test --release -p torchless-kernels --lib --no-run 2>&1 |
  grep -o 'target/release/deps/torchless_kernels-[a-z0-9]*')"
