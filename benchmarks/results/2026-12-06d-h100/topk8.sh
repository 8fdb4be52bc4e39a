#!/bin/bash
# target/topk-exp: branch topk-sg at bd8e111, built with `cargo build --release` and copied;
# target/release/torchless: main at 8820f6a (DBL ported, so it should match the DBL lines). Run with carry [".gl", "target/release/torchless", "target/topk-exp.xz"] (xz keeps the carry under 64 MiB).
# Top-k with the branch's switches around DBL (rounds of 1, 2, 4, ... RMAX tiles merging what the buffer
# holds; EARLYONLY: rounds of RMAX tiles merge only as main does), FLT (float pre-test), PF (next tile's
# loads early), CHUNKS (rows split in that many chunks, 256 MiB only), alternating, at 256 MiB and 1 GiB; then every issue-2 op on main at 256 MiB. $OUT/all.txt.
source .gl/setup.sh
[ -f target/topk-exp ] || xz -dk target/topk-exp.xz
A=$OUT/all.txt; X=./target/topk-exp; M=./target/release/torchless
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $A 2>&1
one() { b=$1; shift; echo "=== $b $* --mib $mib" >> $A; env "$@" timeout 40 $b bench --backend gpu --mib $mib --ops topk 2>&1 | grep -E "^topk" | head -1 >> $A; }
E=TORCHLESS_EXP_TOPK
for mib in 256 1024; do
  one $M X=0
  one $X ${E}_DBL=1
  one $X ${E}_DBL=1 ${E}_FLT=1
  one $X ${E}_DBL=1 ${E}_PF=1
  one $X ${E}_DBL=1 ${E}_FLT=1 ${E}_PF=1
  one $X ${E}_DBL=1 ${E}_RMAX=16
  one $X ${E}_DBL=1 ${E}_RMAX=4
  one $X ${E}_DBL=1 ${E}_EARLYONLY=1
  one $X ${E}_DBL=1 ${E}_FLT=1 ${E}_RMAX=16
  one $X ${E}_DBL=1 ${E}_FLT=1 ${E}_EARLYONLY=1
  one $M X=0
  one $X ${E}_DBL=1
  one $X ${E}_DBL=1 ${E}_FLT=1
done
mib=256
one $X ${E}_DBL=1 ${E}_CHUNKS=2
one $X ${E}_DBL=1 ${E}_FLT=1 ${E}_CHUNKS=2
one $X ${E}_DBL=1 ${E}_CHUNKS=4
one $M X=0
OPS=softcap,silu,gelu,swiglu,geglu,add,mul,scale,rmsnorm,add_rmsnorm,layernorm,softmax,rope,cast,copy,embedding,argmax,topk
echo "=== main, all ops --mib 256" >> $A
timeout 150 $M bench --backend gpu --mib 256 --ops $OPS >> $A 2>&1
