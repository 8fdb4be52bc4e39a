#!/usr/bin/env python3
"""Reference data for torchless's quantized block formats, from gguf-py (llama.cpp's Python package).

Writes crates/torchless-kernels/tests/fixtures/quant/:
  manifest.json          one entry per fixture: name, ggml type, rows, cols, files, gguf version
  <type>.random.bin      ggml blocks of random bytes (every bit pattern; f16 fields set to finite values)
  <type>.random.f32      their dequantization by gguf.quants.dequantize (little-endian f32, row-major)
  <type>.rtn.input.f32   random f32 values (legacy types, which gguf-py can quantize)
  <type>.rtn.bin         gguf.quants.quantize of those values (ggml blocks)
  <type>.rtn.f32         their dequantization
  blocks.gguf            a GGUF v3 file with one tensor per fixture (named like its .bin), for GGUF readers

Tests read the .bin/.f32 files directly (no GGUF reader needed) and check the Rust decoders bit for bit,
the quantizers byte for byte, and the CPU and GPU quantized GEMV against the f64 product.

Usage:  python3 scripts/make_quant_fixtures.py [--out crates/torchless-kernels/tests/fixtures/quant]
Needs:  gguf (PyPI), numpy.
"""

import argparse
import json
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

SEED = 20261201
ROWS, COLS = 4, 512

TYPES = {
    "q8_0": T.Q8_0,
    "q4_0": T.Q4_0,
    "q4_1": T.Q4_1,
    "q5_0": T.Q5_0,
    "q5_1": T.Q5_1,
    "q4_k": T.Q4_K,
    "q5_k": T.Q5_K,
    "q6_k": T.Q6_K,
}
# gguf-py has quantize_blocks for these.
QUANTIZABLE = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}
# Byte offsets of the f16 fields of each block.
F16_FIELDS = {
    "q8_0": [0],
    "q4_0": [0],
    "q4_1": [0, 2],
    "q5_0": [0],
    "q5_1": [0, 2],
    "q4_k": [0, 2],
    "q5_k": [0, 2],
    "q6_k": [208],
}


def random_blocks(rng, name, qtype):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * COLS // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for at in F16_FIELDS[name]:
        # Scales of either sign and a wide range of magnitudes (K-quant d/dmin are positive in practice).
        mag = np.exp(rng.uniform(np.log(1e-4), np.log(0.1), size=n_blocks))
        sign = np.where(rng.random(n_blocks) < 0.25, -1.0, 1.0)
        raw[:, at : at + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(ROWS, -1)


def write(out, fname, array):
    with open(os.path.join(out, fname), "wb") as f:
        f.write(np.ascontiguousarray(array).tobytes())
    return fname


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="crates/torchless-kernels/tests/fixtures/quant")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    entries = []
    gguf_tensors = []
    for name, qtype in TYPES.items():
        raw = random_blocks(rng, name, qtype)
        deq = dequantize(raw, qtype).astype("<f4")
        assert deq.shape == (ROWS, COLS) and np.isfinite(deq).all(), name
        entries.append({
            "name": f"{name}.random",
            "type": name,
            "ggml_type": int(qtype),
            "rows": ROWS,
            "cols": COLS,
            "blocks": write(args.out, f"{name}.random.bin", raw),
            "dequantized": write(args.out, f"{name}.random.f32", deq),
        })
        gguf_tensors.append((f"{name}.random", raw, qtype))
        if name in QUANTIZABLE:
            # A mix of scales, an offset row, and an all-zero block.
            x = rng.uniform(-1.0, 1.0, size=(ROWS, COLS)).astype(np.float32)
            x[1] *= 0.01
            x[2] = x[2] * 0.1 + 0.5
            x[3, :32] = 0.0
            q = quantize(x, qtype)
            deq_q = dequantize(q, qtype).astype("<f4")
            entries.append({
                "name": f"{name}.rtn",
                "type": name,
                "ggml_type": int(qtype),
                "rows": ROWS,
                "cols": COLS,
                "input": write(args.out, f"{name}.rtn.input.f32", x.astype("<f4")),
                "blocks": write(args.out, f"{name}.rtn.bin", q),
                "dequantized": write(args.out, f"{name}.rtn.f32", deq_q),
            })
            gguf_tensors.append((f"{name}.rtn", q, qtype))

    writer = gguf.GGUFWriter(os.path.join(args.out, "blocks.gguf"), arch="quant-fixtures")
    for tname, raw, qtype in gguf_tensors:
        writer.add_tensor(tname, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    manifest = {
        "generator": "scripts/make_quant_fixtures.py",
        "gguf_version": getattr(gguf, "__version__", None) or _pkg_version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "gguf_file": "blocks.gguf",
        "fixtures": entries,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, p)) for p in os.listdir(args.out))
    print(f"wrote {len(entries)} fixtures to {args.out} ({total} bytes)")


def _pkg_version(name):
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
