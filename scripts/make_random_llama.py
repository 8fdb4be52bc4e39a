# Writes a Hugging Face Llama model directory with random bf16 weights of Llama-3-8B's shapes (or a
# smaller preset), for speed measurements: config.json, sharded model.safetensors + index. No tokenizer
# (torchless bench-model feeds random token ids). Run on the GPU machine:
#   python3 scripts/make_random_llama.py --out /tmp/llama3-8b-random [--preset llama3-8b|llama3-1b|smollm2-135m]
#     [--layers N]
import argparse, json, os, time
import torch
from safetensors.torch import save_file

PRESETS = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "llama3-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    # SmolLM2-135M's shapes (the GGUF file of issue 6 is too large to carry to the GPU machine; quantize this
    # one on load instead to time its decode there).
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         rope_theta=100000.0, rope_scaling=None),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    ap.add_argument("--shard-gb", type=float, default=4.0)
    ap.add_argument("--layers", type=int, help="fewer layers than the preset's (profiles by launch: quick to make)")
    args = ap.parse_args()
    p = dict(PRESETS[args.preset])
    if args.layers is not None:
        if not 1 <= args.layers <= p["num_hidden_layers"]:
            ap.error(f"--layers must be 1 to {p['num_hidden_layers']} for {args.preset}")
        p["num_hidden_layers"] = args.layers
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
        "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "bos_token_id": 128000, "eos_token_id": 128001,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        **p,
    }
    config = {k: v for k, v in config.items() if v is not None}
    d, ff, hd = p["hidden_size"], p["intermediate_size"], p["hidden_size"] // p["num_attention_heads"]
    q, kv = p["num_attention_heads"] * hd, p["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (p["vocab_size"], d), "model.norm.weight": (d,)}
    if not p["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (p["vocab_size"], d)
    for i in range(p["num_hidden_layers"]):
        pre = f"model.layers.{i}"
        shapes.update({
            f"{pre}.input_layernorm.weight": (d,), f"{pre}.post_attention_layernorm.weight": (d,),
            f"{pre}.self_attn.q_proj.weight": (q, d), f"{pre}.self_attn.k_proj.weight": (kv, d),
            f"{pre}.self_attn.v_proj.weight": (kv, d), f"{pre}.self_attn.o_proj.weight": (d, q),
            f"{pre}.mlp.gate_proj.weight": (ff, d), f"{pre}.mlp.up_proj.weight": (ff, d),
            f"{pre}.mlp.down_proj.weight": (d, ff),
        })
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    torch.manual_seed(0)
    t0 = time.time()
    shards, cur, cur_bytes = [], {}, 0
    for name, shape in shapes.items():
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        if len(shape) == 1:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, device=dev, dtype=torch.bfloat16) * 0.02).cpu()
        cur[name] = t
        cur_bytes += t.numel() * 2
        if cur_bytes >= args.shard_gb * 1e9:
            shards.append(cur)
            cur, cur_bytes = {}, 0
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(args.out, fname), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * 2
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"wrote {args.out}: {total / 1e9:.2f} GB in {len(shards)} shards, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
