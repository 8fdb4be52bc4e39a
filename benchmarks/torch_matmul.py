# PyTorch timings of the shapes BENCHMARKS.md reports for GEMV, GEMM and attention, to set beside
# `torchless bench` in the same run. Usage: python3 benchmarks/torch_matmul.py [--json]
import json, sys, time
import torch

F = torch.nn.functional
dev = "cuda"
torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS f32 is true f32, as torchless's tiled kernel
torch.backends.cudnn.allow_tf32 = False


def bench(f, seconds=1.0):
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


def main():
    rows = []

    def add(op, shape, secs, nbytes=0, flops=0):
        rows.append({"op": op, "shape": shape, "ms": secs * 1e3, "gbps": nbytes / secs / 1e9, "tflops": flops / secs / 1e12})

    x = torch.empty(256 << 18, device=dev)
    y = torch.empty_like(x)
    add("copy", "256 MiB", bench(lambda: y.copy_(x)), 2 * x.numel() * 4)
    for out_f, in_f in [(4096, 4096), (4096, 14336), (14336, 4096), (128256, 4096)]:
        for dt in (torch.bfloat16, torch.float16):
            w = torch.randn(out_f, in_f, device=dev, dtype=dt)
            v = torch.randn(in_f, device=dev, dtype=dt)
            name = "gemv_bf16" if dt == torch.bfloat16 else "gemv_f16"
            add(name, f"{out_f}x{in_f}", bench(lambda: w @ v), out_f * in_f * 2)
            del w
    n = 4096
    for dt, name in [(torch.float32, "gemm_f32"), (torch.float16, "gemm_f16"), (torch.bfloat16, "gemm_bf16")]:
        a = torch.randn(n, n, device=dev, dtype=dt)
        b = torch.randn(n, n, device=dev, dtype=dt)
        add(name, f"{n}^3", bench(lambda: a @ b), flops=2 * n**3)
    H, KVH, HD = 32, 8, 128
    for ctx in (4096, 32768):
        q = torch.randn(1, H, 1, HD, device=dev, dtype=torch.float16)
        k = torch.randn(1, KVH, ctx, HD, device=dev, dtype=torch.float16)
        v = torch.randn(1, KVH, ctx, HD, device=dev, dtype=torch.float16)
        secs = bench(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        add("sdpa_decode", f"ctx {ctx} f16", secs, 2 * ctx * KVH * HD * 2)
    L = 4096
    for dt, tag in [(torch.float16, "f16"), (torch.float32, "f32")]:
        q = torch.randn(1, H, L, HD, device=dev, dtype=dt)
        k = torch.randn(1, KVH, L, HD, device=dev, dtype=dt)
        v = torch.randn(1, KVH, L, HD, device=dev, dtype=dt)
        secs = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        add("flash_attention", f"{L} causal {tag}", secs, flops=2 * H * L * L * HD)  # causal half of 4·L²·HD
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}", file=sys.stderr)
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['op']:<16} {r['shape']:<18} {r['ms']:9.4f} ms {r['gbps']:8.1f} GB/s {r['tflops']:7.2f} TFLOP/s")


if __name__ == "__main__":
    main()
