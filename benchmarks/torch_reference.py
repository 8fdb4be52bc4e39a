# PyTorch timings of the ops `torchless bench` measures, on a CUDA GPU, to set beside torchless in the same
# run (see BENCHMARKS.md). Usage: python3 benchmarks/torch_reference.py [MiB ...] [--json]
# Bytes counted as torchless counts them: everything read plus everything written, once.
import json, sys, time
import torch

F = torch.nn.functional
dev = "cuda"


def bench(f, seconds=0.3):
    f()
    torch.cuda.synchronize()
    runs, t0 = 0, time.perf_counter()
    while True:
        for _ in range(10):
            f()
        runs += 10
        torch.cuda.synchronize()
        if time.perf_counter() - t0 > seconds:
            return (time.perf_counter() - t0) / runs


def memory_ops(mib):
    b = mib << 20
    n1 = b // 8  # unary f32: read + write
    n2 = b // 12  # binary f32: two reads + write
    x = torch.randn(n1, device=dev)
    a, c = torch.randn(n2, device=dev), torch.randn(n2, device=dev)
    cols = 4096
    rows = b // (8 * cols)
    r = torch.randn(rows, cols, device=dev)
    # add_rmsnorm moves four tensors (x and the residual in, the sum and the norm out), so half the rows
    # of the others, as `torchless bench` sizes it.
    arows = b // (16 * cols)
    ra, resa = r[:arows], torch.randn(arows, cols, device=dev)
    w = torch.randn(cols, device=dev)
    bias = torch.randn(cols, device=dev)
    sm_cols = 32768
    s = torch.randn(b // (8 * sm_cols), sm_cols, device=dev)
    out = {}
    out["copy"] = (2 * n1 * 4, bench(lambda: x.clone()))
    softcap = torch.compile(lambda t: 30.0 * torch.tanh(t / 30.0))
    out["softcap (compiled)"] = (2 * n1 * 4, bench(lambda: softcap(x)))
    out["silu"] = (2 * n1 * 4, bench(lambda: F.silu(x)))
    out["gelu"] = (2 * n1 * 4, bench(lambda: F.gelu(x, approximate="tanh")))
    out["scale"] = (2 * n1 * 4, bench(lambda: x * 0.125))
    out["add"] = (3 * n2 * 4, bench(lambda: a + c))
    out["mul"] = (3 * n2 * 4, bench(lambda: a * c))
    out["swiglu"] = (3 * n2 * 4, bench(lambda: F.silu(a) * c))
    out["swiglu (compiled)"] = (3 * n2 * 4, bench(lambda f=torch.compile(lambda u, v: F.silu(u) * v): f(a, c)))
    out["geglu"] = (3 * n2 * 4, bench(lambda: F.gelu(a, approximate="tanh") * c))
    out["rmsnorm"] = (2 * rows * cols * 4, bench(lambda: F.rms_norm(r, (cols,), w, 1e-6)))
    out["add_rmsnorm (compiled)"] = (
        4 * arows * cols * 4,
        bench(lambda f=torch.compile(lambda u, v: (u + v, F.rms_norm(u + v, (cols,), w, 1e-6))): f(ra, resa)),
    )
    out["layernorm"] = (2 * rows * cols * 4, bench(lambda: F.layer_norm(r, (cols,), w, bias, 1e-5)))
    out["softmax"] = (2 * s.numel() * 4, bench(lambda: torch.softmax(s, -1)))
    nc = b // 6  # f32 read (4 bytes) + bf16 write (2 bytes)
    y = torch.randn(nc, device=dev)
    out["cast f32->bf16"] = (6 * nc, bench(lambda: y.to(torch.bfloat16)))
    vocab = 128256
    lrows = max(1, b // (4 * vocab))
    logits = torch.randn(lrows, vocab, device=dev)
    out["argmax"] = (logits.numel() * 4, bench(lambda: logits.argmax(-1)))
    out["topk k=64"] = (logits.numel() * 4, bench(lambda: logits.topk(64, -1)))
    table = torch.randn(vocab, 4096, device=dev)
    ids = torch.randint(0, vocab, (max(1, b // (8 * 4096)),), device=dev)
    out["embedding"] = (2 * ids.numel() * 4096 * 4, bench(lambda: F.embedding(ids, table)))
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    sizes = [int(a) for a in args] or [256, 1024]
    rows = []
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", file=sys.stderr)
    for mib in sizes:
        for op, (nbytes, secs) in memory_ops(mib).items():
            rows.append({"mib": mib, "op": op, "ms": secs * 1e3, "gbps": nbytes / secs / 1e9})
            torch.cuda.empty_cache()
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['mib']:>5} MiB  {r['op']:<24} {r['ms']:9.4f} ms {r['gbps']:8.1f} GB/s")


if __name__ == "__main__":
    main()
