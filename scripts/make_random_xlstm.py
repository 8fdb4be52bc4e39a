# Writes a Hugging Face xLSTM model directory (model_type "xlstm", xLSTMForCausalLM weight names, weight_mode
# "single") with random bf16 weights of xLSTM-7B's shapes, for speed measurements: config.json, sharded
# model-0000k-of-0000n.safetensors + model.safetensors.index.json. No tokenizer (torchless bench-model feeds
# random token ids). Needs only numpy: the safetensors files are written by hand, tensor by tensor. Where
# PyTorch sees a CUDA GPU the random values are drawn there (about 10x faster than numpy for 7B values).
#   python3 scripts/make_random_xlstm.py --out /tmp/xlstm-7b-random              # 13.7 GB, xLSTM-7B shapes
#   python3 scripts/make_random_xlstm.py --out /tmp/xlstm-tiny --hidden 128 --blocks 2 --heads 2 --vocab 512
import argparse, json, os, struct, time

import numpy as np

# xLSTM-7B (NX-AI/xLSTM-7b): hidden 4096, 32 blocks, 8 heads, qk_dim_factor 0.5, v_dim_factor 1.0.
DEFAULTS = dict(hidden=4096, blocks=32, heads=8, vocab=50304, qk_dim_factor=0.5, v_dim_factor=1.0,
                ffn_proj_factor=2.667, ffn_round_up_to_multiple_of=64)


def bf16_bytes(x):
    """float32 array -> bfloat16 bytes, rounded to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return u.astype("<u2").tobytes()


def normal_source(rng, seed):
    """A function shape -> bytes of N(0, 0.02^2) bf16 values: on a CUDA GPU through PyTorch where there is
    one, else numpy."""
    try:
        import torch
        if torch.cuda.is_available():
            gen = torch.Generator(device="cuda").manual_seed(seed)

            def draw(shape):
                t = torch.randn(shape, device="cuda", dtype=torch.float32, generator=gen) * 0.02
                return t.to(torch.bfloat16).view(torch.int16).cpu().numpy().astype("<i2").tobytes()
            return draw
    except ImportError:
        pass
    return lambda shape: bf16_bytes(rng.standard_normal(shape, dtype=np.float32) * 0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    ap.add_argument("--shard-gb", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    d, nh = a.hidden, a.heads
    qk, v = int(d * a.qk_dim_factor), int(d * a.v_dim_factor)
    m = a.ffn_round_up_to_multiple_of
    ffn = int(((d * a.ffn_proj_factor + m - 1) // m) * m)  # transformers' round_up_to_next_multiple_of
    if qk % nh or v % nh:
        raise SystemExit(f"qk_dim {qk} and v_dim {v} must be multiples of --heads {nh}")
    config = {
        "architectures": ["xLSTMForCausalLM"], "model_type": "xlstm", "dtype": "bfloat16",
        "vocab_size": a.vocab, "hidden_size": d, "embedding_dim": d, "num_blocks": a.blocks,
        "num_hidden_layers": a.blocks, "num_heads": nh, "qk_dim_factor": a.qk_dim_factor,
        "v_dim_factor": a.v_dim_factor, "ffn_proj_factor": a.ffn_proj_factor,
        "ffn_round_up_to_multiple_of": m, "gate_soft_cap": 15.0, "output_logit_soft_cap": 30.0,
        "use_bias": False, "add_out_norm": True, "norm_eps": 1e-6, "eps": 1e-6,
        "norm_reduction_force_float32": True, "tie_word_embeddings": False, "weight_mode": "single",
        "mode": "inference", "chunk_size": 64, "chunkwise_kernel": "chunkwise--native_autograd",
        "sequence_kernel": "native_sequence__native", "step_kernel": "native",
        "autocast_kernel_dtype": "bfloat16", "inference_state_dtype": "float32", "return_last_states": True,
        "max_inference_chunksize": 16384, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }
    # (name, shape, init): "w" N(0, 0.02^2), "one" ones, "ibias" -10 (transformers' init: input gates mostly
    # shut), "fbias" linspace(3, 6) (forget gates mostly open).
    tensors = [("backbone.embeddings.weight", (a.vocab, d), "w")]
    for i in range(a.blocks):
        p, ml = f"backbone.blocks.{i}", f"backbone.blocks.{i}.mlstm_layer"
        tensors += [
            (f"{p}.norm_mlstm.weight", (d,), "one"),
            (f"{ml}.q.weight", (qk, d), "w"), (f"{ml}.k.weight", (qk, d), "w"), (f"{ml}.v.weight", (v, d), "w"),
            (f"{ml}.ogate_preact.weight", (v, d), "w"),
            (f"{ml}.igate_preact.weight", (nh, d), "w"), (f"{ml}.igate_preact.bias", (nh,), "ibias"),
            (f"{ml}.fgate_preact.weight", (nh, d), "w"), (f"{ml}.fgate_preact.bias", (nh,), "fbias"),
            (f"{ml}.multihead_norm.weight", (v,), "one"), (f"{ml}.out_proj.weight", (d, v), "w"),
            (f"{p}.norm_ffn.weight", (d,), "one"),
            (f"{p}.ffn.proj_up_gate.weight", (ffn, d), "w"), (f"{p}.ffn.proj_up.weight", (ffn, d), "w"),
            (f"{p}.ffn.proj_down.weight", (d, ffn), "w"),
        ]
    tensors += [("backbone.out_norm.weight", (d,), "one"), ("lm_head.weight", (a.vocab, d), "w")]

    # Group into shards of about --shard-gb.
    shards, cur, cur_bytes = [], [], 0
    for t in tensors:
        cur.append(t)
        cur_bytes += int(np.prod(t[1])) * 2
        if cur_bytes >= a.shard_gb * 1e9:
            shards.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        shards.append(cur)

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    rng = np.random.default_rng(a.seed)
    normal_bf16_bytes = normal_source(rng, a.seed)
    t0, total, weight_map = time.time(), 0, {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, _ in shard:
            n = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = fname
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)  # the data starts 8-byte aligned
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for name, shape, init in shard:
                if init == "one":
                    x = np.ones(shape, np.float32)
                elif init == "ibias":
                    x = np.full(shape, -10.0, np.float32)
                elif init == "fbias":
                    x = np.linspace(3.0, 6.0, shape[0], dtype=np.float32)
                else:  # row blocks keep the float32 temporary small
                    rows = max(1, (1 << 24) // shape[1])
                    for r in range(0, shape[0], rows):
                        f.write(normal_bf16_bytes((min(rows, shape[0] - r), shape[1])))
                    continue
                f.write(bf16_bytes(x))
        total += offset
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"wrote {a.out}: hidden {d}, {a.blocks} blocks, {nh} heads, qk {qk}, v {v}, ffn {ffn}, vocab {a.vocab}: "
          f"{total / 1e9:.2f} GB in {len(shards)} shards, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
