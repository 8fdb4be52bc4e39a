# Markdown tables for BENCHMARKS.md from one device run's results folder (what device_kernels.sh and
# device_model.sh write). Usage: python3 benchmarks/tables.py benchmarks/results/<run>
import json, os, sys


def json_rows(path):
    """Every object of a file holding one JSON value or several concatenated ones (one per bench call)."""
    if not os.path.exists(path):
        return []
    text, dec, i, rows = open(path).read(), json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return rows
        value, i = dec.raw_decode(text, i)
        rows += value if isinstance(value, list) else [value]


def memory_ops(d):
    torch = {(r["mib"], r["op"].replace(" (compiled)", "").replace(" k=64", "").replace(" f32->bf16", "")): r["gbps"]
             for r in json_rows(f"{d}/torch_mem.json")}
    runs = {mib: {r["op"]: r for r in json_rows(f"{d}/bench_mem_{mib}.json")} for mib in (256, 1024)}
    print("| op | shape at 256 MiB | torchless GB/s (% of copy) 256 MiB | 1 GiB | PyTorch GB/s 256 MiB | 1 GiB |")
    print("|---|---|---|---|---|---|")
    for op, r in runs[256].items():
        big = runs[1024].get(op)
        cell = lambda r: f"{r['gbps']:.0f} ({r['pct_of_copy']:.0f} %)" if r else "–"
        t = [torch.get((mib, op)) for mib in (256, 1024)]
        tcell = lambda v: f"{v:.0f}" if v else "–"
        print(f"| {op} | {r['shape']} | {cell(r)} | {cell(big)} | {tcell(t[0])} | {tcell(t[1])} |")


def matmul_ops(d):
    print("| op | shape | ms | GB/s (% of copy) | TFLOP/s | max abs err |")
    print("|---|---|---|---|---|---|")
    for r in json_rows(f"{d}/bench_matmul.json") + json_rows(f"{d}/bench_quant.json"):
        print(f"| {r['op']} | {r['shape']} | {r['ms']:.4f} | {r['gbps']:.0f} ({r['pct_of_copy']:.0f} %) | "
              f"{r.get('tflops', 0):.1f} | {r['max_abs_err']:.2g} |")
    print("\nPyTorch, same run:\n")
    print("| op | shape | ms | GB/s | TFLOP/s |")
    print("|---|---|---|---|---|")
    for r in json_rows(f"{d}/torch_matmul.json"):
        print(f"| {r['op']} | {r['shape']} | {r['ms']:.4f} | {r['gbps']:.0f} | {r['tflops']:.1f} |")


if __name__ == "__main__":
    d = sys.argv[1]
    memory_ops(d)
    print()
    matmul_ops(d)
