"""Prints the tables of this folder's device call: decode tok/s per build and mode (r/*.json), GEMV
timings (r/gemv_*.json, xq/*.json). Usage: python3 summarize.py <folder holding r/ and xq/>."""
import glob, json, os, sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
rows = {}
for f in sorted(g for g in glob.glob(os.path.join(root, "r", "*_*_*_*.json")) if "gemv_" not in g):
    name = os.path.basename(f)[:-5]
    model, build, mode, rnd = name.split("_")
    try:
        d = json.load(open(f))
    except Exception:
        print(f"{name}: no result ({open(f[:-5] + '.err').read().strip()[-200:]})")
        continue
    rows.setdefault((model, build, mode), []).append(
        (d["decode_tok_s"], d["pct_of_roofline"], d["decode_record_ms"], d["decode_wait_ms"], d["decode_launches"]))
print("model  build   mode      tok/s (rounds)          % roofline   record/wait ms   launches")
for (model, build, mode), v in sorted(rows.items()):
    print(f"{model:6} {build:7} {mode:9} {' / '.join(f'{x[0]:.1f}' for x in v):24} "
          f"{' / '.join(f'{x[1]:.1f}' for x in v):12} {v[0][2]:.3f}/{v[0][3]:.3f}    {v[0][4]:.0f}")
print()
for f in sorted(glob.glob(os.path.join(root, "r", "gemv_*.json")) + glob.glob(os.path.join(root, "xq", "*.json"))):
    try:
        d = json.load(open(f))
    except Exception:
        print(f"{os.path.basename(f)}: no result")
        continue
    for r in d:
        print(f"{os.path.basename(f):28} {r['op']:14} {r['shape']:32} {r['ms']*1e3:8.1f} µs {r['gbps']:7.0f} GB/s "
              f"{r['pct_of_copy']:5.1f} % ok={r['ok']}")
