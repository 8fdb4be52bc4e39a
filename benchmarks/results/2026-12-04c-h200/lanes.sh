#!/bin/bash
# Device call E: an f32 KV cache read by 16 lanes a row and 256-thread workgroups (`lanes`) against 8
# lanes and 128 threads (`new`, call D's build), sdpa_decode at 512/2k/16k keys f32 (1k/4k/32k f16, the
# same plan in both), twice, alternating.
source .gl/setup.sh
R=$OUT/r; mkdir -p $R
for b in new lanes; do xz -dc target/devgz/$b.xz > /tmp/$b; chmod +x /tmp/$b; done
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > $R/env.txt
BS="bench --backend gpu --json --seconds 0.3 --warmup 0.3 --ops sdpa_decode,sdpa_decode_f32"
for round in 1 2; do for mib in 128 16 4; do for b in new lanes; do
  timeout 30 /tmp/$b $BS --mib $mib > $R/sdpa_${mib}_${b}_$round.json 2> $R/sdpa_${mib}_${b}_$round.err
done; done; done
cd $OUT && tar czf r.tgz r
