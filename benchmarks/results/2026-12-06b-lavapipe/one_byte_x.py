#!/usr/bin/env python3
"""What a one-byte x would cost in accuracy (2026-12-06b): SmolLM2-135M-Instruct Q4_1's logits over nine
8-token windows of mixed text (8 rows of x: the GEMV path), on the GPU with x as committed (two bytes a
value) and with TORCHLESS_EXP_QGEMV=1 (x's hi bytes only: an 8-bit x with one scale per 32 values, as
llama.cpp's q8_1), each against the CPU backend. Needs a build with
../2026-12-06-h100/qexp_switches.diff applied and models/ from scripts/fetch_smollm2.sh. Any GPU adapter
(lavapipe here): the numbers are the arithmetic's, not the device's."""
import json, os, subprocess
import numpy as np

M = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
# `torchless tokenize` of: "The quick brown fox jumps over the lazy dog. In 1905 Albert Einstein published
# four papers that changed physics. def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2). Paris is
# the capital and most populous city of France, with an estimated population of two million."
IDS = [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 533, 216, 33, 41, 32, 37, 14338, 16211, 2587,
       1876, 5057, 338, 4247, 6944, 30, 753, 3987, 24, 94, 727, 1003, 304, 585, 304, 2067, 216, 34, 1745, 3987,
       24, 94, 731, 216, 33, 25, 1232, 3987, 24, 94, 731, 216, 34, 595, 7042, 314, 260, 3575, 284, 768, 35488,
       2240, 282, 4649, 28, 351, 354, 5183, 2155, 282, 827, 2215, 30]


def logits(tokens, backend, exp):
    env = dict(os.environ, TORCHLESS_EXP_QGEMV=str(exp))
    cmd = ["./target/release/torchless", "logits", "--model", M, "--tokens", ",".join(map(str, tokens)),
           "--backend", backend, "--json"]
    return np.array(json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)["logits"])


rows = []
for w in range(0, len(IDS) - 7, 8):
    t = [1] + IDS[w:w + 7]
    c, g2, g1 = logits(t, "cpu", 0), logits(t, "gpu", 0), logits(t, "gpu", 1)
    rows.append([abs(g - c).max() for g in (g2, g1)] + [abs(g - c).mean() for g in (g2, g1)]
                + [(g.argmax(1) == c.argmax(1)).sum() for g in (g2, g1)] + [len(t)])
r = np.array(rows)
for name, k in (("two-byte x (committed)", 0), ("one-byte x", 1)):
    print(f"{name}: max |Δlogit| {r[:, k].max():.4f}, mean {r[:, 2 + k].mean():.5f}, "
          f"top-1 as the CPU {int(r[:, 4 + k].sum())}/{int(r[:, 6].sum())}")
