#!/bin/bash
# GPU machine (H100), carry [".gl", "target/exp/j1"] (~5 min). target/exp/j1/b: main (83c4053);
# target/exp/j1/m: branch mat-loop (main plus one change to gemv.wgsl: the multi-matrix GEMV's loop is
# called once a matrix with the matrix index a constant, so each inlined copy reads one binding; on main
# every weight load picks its buffer among NMAT at run time through `mat`). The question: is that per-load
# choice what holds the fused Q/K/V launch at ~78 % of copy (a plain GEMV of its rows 92 %) and xLSTM's
# six-matrix launch ~10 µs over its bytes?
# 1. gemv_qkv_bf16 and gemv_bf16 at 48 MiB, b / m alternating twice. $OUT/qkv.txt
# 2. Llama-3-8B bf16 decode, 128 tokens after 512, b / m twice. $OUT/decode.txt
# 3. Llama-3-8B q4_k decode, b / q twice (q: m plus the same change in qgemv.wgsl, whose Q/K/V launch
#    picks its buffer among three the same way), and q's profile. xLSTM-7B decode, b / m twice.
# 4. Profiles: Llama bf16 with m; xLSTM with b and m. $OUT/prof_*.txt
# D=<folder> takes the binaries from another folder.
source .gl/setup.sh
D=${D:-target/exp/j1}
for f in $D/*.xz; do [ -f ${f%.xz} ] || xz -dk $f; done
M=/tmp/llama3-8b-random
X=/tmp/xlstm-7b-random
( [ -f $X/config.json ] || timeout 300 python3 scripts/make_random_xlstm.py --out $X > /dev/null 2>&1 ) &
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/decode.txt > $OUT/qkv.txt
for round in 1 2; do
  for v in b m; do
    echo "=== $v" >> $OUT/qkv.txt
    timeout 40 $D/$v bench --backend gpu --mib 48 --ops gemv_qkv_bf16,gemv_bf16 2>&1 | grep -E "^gemv|rror" >> $OUT/qkv.txt
  done
done
[ -f $M/config.json ] || timeout 200 python3 scripts/make_random_llama.py --out $M > /dev/null 2>&1
P="bench-model --backend gpu --context 512 --prefill-tokens 0"
# decode LABEL BASE OTHER ARGS...: 128 decode tokens with binaries BASE and OTHER alternating, twice.
decode() {
  local label=$1 x=$2 y=$3
  shift 3
  for round in 1 2; do
    for v in $x $y; do
      echo "=== $label $v" >> $OUT/decode.txt
      timeout 90 $D/$v $P --decode-tokens 128 "$@" 2>&1 | grep -E "decode \(|rror" >> $OUT/decode.txt
    done
  done
}
decode bf16 b m --model $M
timeout 60 $D/m $P --decode-tokens 32 --profile --model $M > $OUT/prof_bf16_m.txt 2>&1
decode q4_k b q --model $M --quantize q4_k
timeout 60 $D/q $P --decode-tokens 32 --profile --model $M --quantize q4_k > $OUT/prof_q4k_q.txt 2>&1
wait
decode xLSTM b m --model $X
for v in b m; do
  timeout 90 $D/$v $P --decode-tokens 32 --profile --model $X > $OUT/prof_xlstm_$v.txt 2>&1
done
