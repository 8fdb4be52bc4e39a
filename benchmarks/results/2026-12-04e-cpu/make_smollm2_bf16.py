import json, os, struct
H, I, L, NH, KV, V = 576, 1536, 30, 9, 3, 49152
hd = H // NH
shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
for l in range(L):
    p = f"model.layers.{l}."
    shapes.update({p+"input_layernorm.weight": [H], p+"post_attention_layernorm.weight": [H],
        p+"self_attn.q_proj.weight": [NH*hd, H], p+"self_attn.k_proj.weight": [KV*hd, H],
        p+"self_attn.v_proj.weight": [KV*hd, H], p+"self_attn.o_proj.weight": [H, NH*hd],
        p+"mlp.gate_proj.weight": [I, H], p+"mlp.up_proj.weight": [I, H], p+"mlp.down_proj.weight": [H, I]})
table = bytes((b & 0x80) | 0x3C for b in range(256))
header, off, blobs = {}, 0, []
for name, shape in shapes.items():
    n = 1
    for d in shape: n *= d
    data = bytearray(os.urandom(2 * n))
    data[1::2] = data[1::2].translate(table)
    header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + 2 * n]}
    off += 2 * n; blobs.append(data)
h = json.dumps(header).encode(); h += b" " * (-len(h) % 8)
with open("/tmp/smolbf16/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for b in blobs: f.write(b)
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
    "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH,
    "num_key_value_heads": KV, "vocab_size": V, "tie_word_embeddings": True, "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "hidden_act": "silu"}, open("/tmp/smolbf16/config.json", "w"))
