#!/bin/bash
# GPU machine, carry [".gl", "target/exp/i"]: held rmsnorm (4fc347d's kernel) beside torch.compile's fused
# add + rms_norm, sized as benchmarks/torch_reference.py sizes it at 256 MiB ([8192, 4096]; ours counts
# 256 MiB of traffic at [4096, 4096]).
source .gl/setup.sh; D=target/exp/i; xz -dk $D/held.xz
for i in 1 2; do $D/held bench --backend gpu --mib 256 --ops add_rmsnorm,rmsnorm 2>&1 | grep -E "^(add|rms)|copy"; done > $OUT/ours.txt 2>&1
timeout 80 python3 -c "
import torch,time
F=torch.nn.functional
cols=4096; rows=(256<<20)//(8*cols)
r=torch.randn(rows,cols,device='cuda'); res=torch.randn(rows,cols,device='cuda'); w=torch.randn(cols,device='cuda')
f=torch.compile(lambda u,v:(u+v,F.rms_norm(u+v,(cols,),w,1e-6)))
for _ in range(3): f(r,res)
for k in range(3):
  torch.cuda.synchronize(); t=time.perf_counter(); n=0
  while time.perf_counter()-t<0.3:
    for _ in range(10): f(r,res)
    n+=10; torch.cuda.synchronize()
  s=(time.perf_counter()-t)/n; print('torch.compile add_rmsnorm [%d,%d] %.4f ms %.1f GB/s'%(rows,cols,s*1e3,4*rows*cols*4/s/1e9))
" > $OUT/torch.txt 2>&1
