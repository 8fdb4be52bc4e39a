#!/bin/bash
# GPU machine (H100), carry [".gl", "target/release/torchless", "target/exp/g1"] (~5 min).
# 1. main's kernel unit tests on NVIDIA (abc3cea's flash cases with both synchronisations had not run
#    there). $OUT/tests.txt
# 2. next62 (2026-12-07f-h100): q4_k / q6_k GEMVs by forced launch shape. $OUT/tune.txt
source .gl/setup.sh
xz -dk target/exp/g1/ktest.xz
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/tests.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 150 target/exp/g1/ktest --test-threads 16 2>&1 | grep -E "test result|FAILED|panicked|SKIPPED" >> $OUT/tests.txt
bash benchmarks/results/2026-12-07f-h100/next62.sh
