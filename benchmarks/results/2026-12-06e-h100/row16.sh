#!/bin/bash
# GPU machine, carry [".gl", "target/exp"] with row-tune.xz (branch row-tune, prepare_row.sh): the row
# kernels (rmsnorm, add_rmsnorm, layernorm, softmax) at 256 MiB and 1 GiB with forced shapes
# (TORCHLESS_EXP_ROW=TPR,WG: threads a row, threads a workgroup) against the automatic one (X=0, twice),
# then PyTorch's figures in the same call. $OUT/row.txt, $OUT/torch_mem.json. ~4 min.
source .gl/setup.sh
[ -f target/exp/row-tune ] || xz -dk target/exp/row-tune.xz
A=$OUT/row.txt
for mib in 256 1024; do
  for s in X 256,512 512,512 1024,1024 128,256 128,512 64,256 256,1024 X; do
    echo "=== $s --mib $mib" >> $A
    if [ $s = X ]; then e=X=0; else e=TORCHLESS_EXP_ROW=$s; fi
    env $e timeout 60 ./target/exp/row-tune bench --backend gpu --mib $mib --ops rmsnorm,add_rmsnorm,layernorm,softmax 2>&1 \
      | grep -E "^(copy|rmsnorm|add_rmsnorm|layernorm|softmax)" >> $A
  done
done
timeout 80 python3 benchmarks/torch_reference.py 256 1024 --json > $OUT/torch_mem.json 2> $OUT/torch_mem.err
