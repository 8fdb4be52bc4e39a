#!/bin/bash
# Device call A: the decode attention's shape swept with TORCHLESS_DECODE_TUNE (LANES,THREADS,ROWS,SPLITS)
# at 1024, 4096 and 32768 keys (f16 cache; f32 at 512, 2048 and 16384), and the row norms of 6997cf3 ("old")
# beside this session's build ("new"), two rounds. Binaries come xz-compressed in target/devgz/.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in new old; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader; } > $R/env.txt
for round in 1 2; do for b in old new; do
  timeout 60 /tmp/$b bench --backend gpu --mib 256 --json --ops copy,rmsnorm,add_rmsnorm,layernorm \
    > $R/norm_${b}_$round.json 2> $R/norm_${b}_$round.err
done; done
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
run() { TORCHLESS_DECODE_TUNE=$1 timeout 30 /tmp/new $BS --mib $2 > $R/sdpa_${2}_$1$3.json 2> $R/sdpa_${2}_$1$3.err; }
for mib in 16 128 4; do
  SPLITS="16 32 64 128"; [ $mib = 4 ] && SPLITS="4 8 16 32"
  run 0,0,0,0 $mib _a
  for th in 128 256; do for rows in 1 2 4; do for sp in $SPLITS; do run 16,$th,$rows,$sp $mib; done; done; done
  for sp in $SPLITS; do run 16,64,4,$sp $mib; done
  for th in 128 256; do for rows in 1 2; do for sp in $SPLITS; do run 8,$th,$rows,$sp $mib; done; done; done
  run 0,0,0,0 $mib _b
done
cd $OUT && tar czf r.tgz r
