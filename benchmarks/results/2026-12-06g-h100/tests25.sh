#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] after prepare24.sh, before next24.sh (~3 min): main's
# kernel unit tests on the H100, where the cooperative-matrix paths (the dense and quantized GEMMs on
# coop16.wgsl, flash attention) run; lavapipe, which CI and the local checks use, offers none. The
# 64-deep slices (98ef87a) have had only the bench's 4096³ checks on a GPU. $OUT/ktest.txt.
source .gl/setup.sh
[ -f target/exp/ktest ] || xz -dk target/exp/ktest.xz
TORCHLESS_REQUIRE_GPU=1 timeout 280 ./target/exp/ktest --test-threads 16 > $OUT/ktest.txt 2>&1
echo "rc $?" >> $OUT/ktest.txt
