# A model of the top-k scan (select.wgsl) on random normal rows of 128256 values, k = 64: candidates offered
# and merges a row under different round lengths (R), buffer sizes (CAP) and merge points (half).
# python3 topk_sim.py prints (offers a row, merges a row, a bitonic-sort cost in compare-exchange steps a thread).
import numpy as np, sys
rng=np.random.default_rng(1)
N=128256; K=64; WG=256; TILE=4096
def sim(R=8, CAP=1024, first_tiles=1, half=None, trials=20):
    half = CAP//2 if half is None else half
    tot_off=0; merges=[]; 
    for tr in range(trials):
        x=rng.standard_normal(N).astype(np.float32)
        ntiles=(N+TILE-1)//TILE
        # thread ownership within first_tiles tiles: element i in tile t: thread = ((i%TILE)//4)%WG
        ft=x[:TILE*first_tiles]
        idx=np.arange(len(ft)); thr=((idx%TILE)//4)%WG
        best=np.full(WG,-np.inf); 
        np.maximum.at(best,thr,ft)
        lst=np.sort(best)[::-1][:K]; T=lst[-1] if len(lst)>=K else -np.inf
        merges.append(256)
        off=0; cand=[]
        # remaining elements of first tiles (excluding each thread's best) + rest, in round order
        pos=TILE*first_tiles
        # elements of first tiles except the bests
        rest_first=ft.copy()
        # mark bests
        for t_ in range(WG):
            m=np.where(thr==t_)[0]
            if len(m): rest_first[m[np.argmax(ft[m])]]=-np.inf
        stream=[rest_first]
        t_end=first_tiles+R
        chunks=[]
        chunks.append(np.concatenate([rest_first, x[pos:TILE*min(ntiles,t_end)]]))
        while t_end<ntiles:
            s=t_end; t_end=min(ntiles,t_end+R); chunks.append(x[TILE*s:TILE*t_end])
        buf=[]
        for ch in chunks:
            c=ch[ch>T]
            # overflow handling: merge whenever buffer reaches CAP
            while len(buf)+len(c)>CAP:
                take=CAP-len(buf); buf+=list(c[:take]); c=c[take:]
                off+=take
                merges.append(CAP); allv=np.concatenate([lst,buf]); lst=np.sort(allv)[::-1][:K]; T=lst[-1]; buf=[]
                c=c[c>T]
            buf+=list(c); off+=len(c)
            if len(buf)>half:
                merges.append(1<<int(np.ceil(np.log2(len(buf))))); allv=np.concatenate([lst,buf]); lst=np.sort(allv)[::-1][:K]; T=lst[-1]; buf=[]
        if buf:
            merges.append(1<<int(np.ceil(np.log2(max(2,len(buf)))))); 
        tot_off+=off
    # sort cost ~ size*log2^2/2
    cost=sum(m*np.log2(m)*(np.log2(m)+1)/2/256 for m in merges)/trials
    return tot_off/trials, len(merges)/trials, cost
for args in [dict(R=8),dict(R=4),dict(R=16),dict(R=32),dict(R=8,first_tiles=2),dict(R=8,half=128),dict(R=8,half=64),dict(R=2,half=64),dict(R=4,half=128),dict(R=8, CAP=512, half=256)]:
    print(args, ["%.1f"%v for v in sim(**args, trials=10)])
