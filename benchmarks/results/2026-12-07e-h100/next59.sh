#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/n59"] (~7 min; 62.8 MB with the tree, near the limit). Prepared for the next session; builds in
# target/exp/n59 (not in git; rebuild from the named commit and patch if missing): m6 = 3a3c042 (main; every other build is m6 + its patch; mk59.sh beside this script makes them);
# fsg2 = m6 + fsg2.patch (the flash kernel's per-subgroup score / probability round trips and rescale
# synchronised by subgroupBarrier, with wgpu's SUBGROUP_BARRIER feature requested: next54's fsg lacked it);
# sc4 = m6 with ops/mlstm.rs STEP_COLS 4 (8 now): the xLSTM step's vec4 columns a workgroup, 256
# workgroups instead of 128; nwv = m6 + nwv.patch (the normed GEMVs read the norm's weight as 16-byte
# words, one load a chunk instead of four); ff = m6 + ff.patch (the GEMM core's fast fetch: where a workgroup's
# tile is whole, aligned and inside the matrix, each chunk is one load at an element index that advances by
# a fixed step a slice, instead of the bounds and index arithmetic of every fetch); fsg2test, fftest =
# their kernel unit tests.
# 0. ff's GEMM, quantized-matmul and GEMV tests on NVIDIA (the GEMV ones also check main's 256-thread
#    shapes there); 4096³ GEMMs m6 / ff alternating twice. $OUT/gemm.txt
# 1. fsg2's attention tests on NVIDIA; flash_attention (4k, causal) m6 / fsg2 alternating twice. $OUT/flash.txt
# 2. xLSTM-7B decode m6 / sc4 / nwv alternating twice. $OUT/xlstm.txt
# 3. Llama-3-8B q4_k decode profile (m6), for the launch table of the quantized decode. $OUT/prof_q4k.txt
# 4. The fused Q/K/V launch alone beside a plain GEMV of its rows (m6), auto and forced shapes, and nwv's;
#    Llama-3-8B bf16 decode m6 / nwv alternating twice. $OUT/qkv.txt
source .gl/setup.sh
D=target/exp/n59
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gemm.txt
env TORCHLESS_REQUIRE_GPU=1 timeout 150 $D/fftest --test-threads 16 gemm qmatmul gemv 2>&1 | grep -E "test result|FAILED|panicked" >> $OUT/gemm.txt
for b in m6 ff m6 ff; do
  echo "=== $b" >> $OUT/gemm.txt
  timeout 60 $D/$b bench --backend gpu --mib 256 --ops gemm_f16,gemm_bf16,gemm_q4_k 2>&1 | grep -E "^gemm|rror" >> $OUT/gemm.txt
done
env TORCHLESS_REQUIRE_GPU=1 timeout 60 $D/fsg2test --test-threads 16 attention 2>&1 | grep -E "test result|FAILED|panicked" >> $OUT/flash.txt
for b in m6 fsg2 m6 fsg2; do
  echo "=== $b" >> $OUT/flash.txt
  timeout 40 $D/$b bench --backend gpu --mib 160 --ops flash_attention 2>&1 | grep -E "^flash|rror" >> $OUT/flash.txt
done
P="bench-model --backend gpu --context 512 --decode-tokens 128 --prefill-tokens 0"
X=/tmp/xlstm-7b-random
[ -f $X/config.json ] || timeout 240 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1
for b in m6 sc4 nwv m6 sc4 nwv; do
  echo "=== $b" >> $OUT/xlstm.txt
  timeout 60 $D/$b $P --model $X 2>&1 | grep -E "decode \(|rror" >> $OUT/xlstm.txt
done
M=/tmp/llama3-8b-random
[ -f $M/config.json ] || timeout 150 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
timeout 90 $D/m6 bench-model --backend gpu --model $M --context 512 --decode-tokens 32 --prefill-tokens 0 --profile --quantize q4_k > $OUT/prof_q4k.txt 2>&1
for t in auto 128,2 256,4 64,4 auto; do
  echo "=== TORCHLESS_GEMV_TUNE=$t" >> $OUT/qkv.txt
  if [ $t = auto ]; then E=""; else E="TORCHLESS_GEMV_TUNE=$t"; fi
  env $E timeout 40 $D/m6 bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
done
echo "=== nwv" >> $OUT/qkv.txt
timeout 40 $D/nwv bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
for b in m6 nwv m6 nwv; do
  echo "=== llama $b" >> $OUT/qkv.txt
  timeout 60 $D/$b $P --model $M 2>&1 | grep -E "decode \(|rror" >> $OUT/qkv.txt
done
