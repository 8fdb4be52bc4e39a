# Builds next59.sh's binaries from main (run from anywhere; the patches are beside this script).
set -e
cd /work/main
R=benchmarks/results/2026-12-07e-h100
N=target/exp/n59
rm -f $N/*.xz
testbin() { cargo test --release -p torchless-kernels --lib --no-run 2>&1 | grep -o "target/release/deps/torchless_kernels-[a-z0-9]*" | head -1; }
cargo build --release -q && cp target/release/torchless $N/m6
git apply $R/ff.patch && cargo build --release -q && cp target/release/torchless $N/ff && cp $(testbin) $N/fftest && git checkout -q crates
git apply $R/fsg2.patch && cargo build --release -q && cp target/release/torchless $N/fsg2 && cp $(testbin) $N/fsg2test && git checkout -q crates
for c in 4; do sed -i "s/^const STEP_COLS: u32 = [0-9]*;/const STEP_COLS: u32 = $c;/" crates/torchless-kernels/src/ops/mlstm.rs && cargo build --release -q && cp target/release/torchless $N/sc$c; done
git checkout -q crates
git apply $R/nwv.patch && cargo build --release -q && cp target/release/torchless $N/nwv && git checkout -q crates
cd $N && strip m6 ff fftest fsg2 fsg2test sc4 nwv && xz -T4 -f m6 ff fftest fsg2 fsg2test sc4 nwv && ls -la && du -cb . | tail -1
