# The top-k scan modelled per warp: offers, merges, sort stages, and how many tiles' worth of warp-units
# (4 units x 8 warps a tile) hold a candidate, for round schedules and merge points. python3 topk_sim2.py
import numpy as np
rng=np.random.default_rng(1)
N=128256; K=64; WG=256; TILE=4096
def sim(schedule, merge_min=1, CAP=1024, trials=6):
    """schedule(i) -> tiles in round i. Merge at a round end when the buffer holds >= merge_min, or when it overflows."""
    res=np.zeros(4)
    for _ in range(trials):
        x=rng.uniform(-20,20,N).astype(np.float32)
        nt=(N+TILE-1)//TILE
        xp=np.full(nt*TILE,-np.inf,np.float32); xp[:N]=x
        tiles=xp.reshape(nt,4,WG,4)  # tile, unit q, thread, element
        # first tile: thread bests
        best=tiles[0].max(axis=(0,2))
        lst=np.sort(best)[::-1][:K]; T=lst[-1]
        merges=[256]; offers=0; warp_units=0
        buf=0; bufvals=[]
        t=0; i=0
        # rest of tile 0 except bests: approximate by whole tile 0 minus bests (count elements > T not equal best)
        t0=tiles[0].copy()
        for th in range(WG):
            v=t0[:,th,:]; a=np.unravel_index(np.argmax(v),v.shape); t0[a[0],th,a[1]]=-np.inf
        cur=[t0]+[tiles[j] for j in range(1,nt)]
        pos=0; end=1+schedule(0); r=0
        while pos<nt:
            for j in range(pos,min(end,nt)):
                tl=cur[j]; m=tl>T
                c=tl[m]; offers+=len(c); bufvals+=list(c)
                # warp units with any candidate: (q, warp)
                warp_units+=m.reshape(4,WG//32,32*4).any(axis=2).sum()
                if len(bufvals)>CAP:
                    merges.append(CAP); lst=np.sort(np.concatenate([lst,bufvals]))[::-1][:K]; T=lst[-1]; bufvals=[]
            pos=min(end,nt); r+=1; end=pos+schedule(r)
            if len(bufvals)>=merge_min:
                merges.append(1<<int(np.ceil(np.log2(max(2,len(bufvals)))))); lst=np.sort(np.concatenate([lst,bufvals]))[::-1][:K]; T=lst[-1]; bufvals=[]
        if bufvals: merges.append(1<<int(np.ceil(np.log2(max(2,len(bufvals))))))
        stages=sum(np.log2(m)*(np.log2(m)+1)/2 for m in merges)
        res+=np.array([offers, len(merges), stages, warp_units/(4*WG//32)])
    return res/trials
print("offers, merges, sort stages (barriers), tile-equivalents of warp-units with a candidate (of 31 tiles)")
print("committed R=8 half=512", sim(lambda i:8, merge_min=513))
print("R=8 merge any", sim(lambda i:8))
print("R=4 merge>=257", sim(lambda i:4, merge_min=257))
print("doubling 1,2,4.. merge any", sim(lambda i:1<<i))
print("doubling 1,1,2,4.. merge any", sim(lambda i:1 if i == 0 else 1<<(i-1)))
print("R=1 merge>=64", sim(lambda i:1, merge_min=64))
print("R=2 merge>=64", sim(lambda i:2, merge_min=64))
print("doubling merge>=32", sim(lambda i:1<<i, merge_min=32))
