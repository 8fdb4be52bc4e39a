#!/usr/bin/env python3
"""Converts tiny Hugging Face fixtures (crates/torchless/tests/fixtures/<name>, float32 safetensors) into GGUF
files the way llama.cpp's convert_hf_to_gguf.py does, with the `gguf` Python package (pip install gguf numpy).

For arch llama (LlamaModel) the converter permutes the rows of q_proj and k_proj inside each head from
Hugging Face's half-split order to interleaved pairs:

    permute(W, n_head, n_head_kv) = W.reshape(n_h, 2, rows // n_h // 2, *rest).swapaxes(1, 2).reshape(W.shape)

with n_h = n_head for Q and n_head_kv for K; this script applies exactly that, so the Rust loader's inverse
permutation is tested against the untouched HF weights' golden logits. Qwen2 (NEOX rope) is not permuted.
Gemma 2 (Gemma2Model, NEOX rope, not permuted) gets 1 added to every `*norm.weight` (llama.cpp multiplies by
the norm weight where transformers multiplies by 1 + w), its soft caps and sliding window as metadata, and
no rope keys (llama.cpp's defaults: theta 10000, the whole head rotated).
Llama-3 rope scaling becomes the `rope_freqs.weight` tensor (LlamaModel.generate_extra_tensors).
Matrices are written in the requested type (F32, F16 or Q8_0 through gguf.quants.quantize); 1-D tensors stay
F32 as llama.cpp keeps them. Tied embeddings: no output.weight.

    python3 scripts/make_gguf_fixture.py        # writes crates/torchless/tests/fixtures/gguf/*.gguf
"""

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/torchless/tests/fixtures"
OUT = FIX / "gguf"


def read_safetensors(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[base + a : base + b], dtype=np.float32).reshape(info["shape"]).copy()
    return out


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py LlamaModel.permute, verbatim.
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg, rp):
    # convert_hf_to_gguf.py LlamaModel.generate_extra_tensors, in float32 like torch there.
    base = rp.get("rope_theta", 10000.0)
    dim = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factor = rp.get("factor", 8.0)
    low = rp.get("low_freq_factor", 1.0)
    high = rp.get("high_freq_factor", 4.0)
    old = rp.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    out = []
    for f in freqs.astype(np.float32):
        wl = 2 * math.pi / float(f)
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def convert(name, qtype, out_name):
    src = FIX / name
    cfg = json.loads((src / "config.json").read_text())
    w = read_safetensors(src / "model.safetensors")
    arch = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma2": "gemma2"}[cfg["model_type"]]
    gemma = arch == "gemma2"
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    dim = cfg["hidden_size"]
    hd = cfg.get("head_dim", dim // n_head)
    rp = cfg.get("rope_parameters") or {}
    theta = cfg.get("rope_theta", rp.get("rope_theta", 10000.0))

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / out_name
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_name(f"torchless {name} fixture")
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(dim)
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    if arch == "phi3":
        # Phi3Model writes int(partial_rotary_factor * n_embd) // n_head rotated dims.
        wr.add_rope_dimension_count(int(rp.get("partial_rotary_factor", 1.0) * dim) // n_head)
    elif not gemma:
        wr.add_rope_dimension_count(hd)
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_key_length(hd)
    wr.add_value_length(hd)
    if gemma:
        wr.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        wr.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        wr.add_sliding_window(cfg["sliding_window"])
    else:
        wr.add_rope_freq_base(theta)
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_vocab_size(cfg["vocab_size"])
    wr.add_file_type({T.F32: 0, T.F16: 1, T.Q8_0: 7}[qtype])
    wr.add_bos_token_id(cfg["bos_token_id"])
    wr.add_eos_token_id(cfg["eos_token_id"])

    def add(gname, t):
        if gemma and gname.endswith("norm.weight"):
            t = t + np.float32(1.0)
        if t.ndim == 1 or qtype == T.F32:
            wr.add_tensor(gname, t.astype(np.float32))
        elif qtype == T.F16:
            wr.add_tensor(gname, t.astype(np.float16))
        else:
            q = gguf.quants.quantize(t.astype(np.float32), qtype)
            wr.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=qtype)

    if rp.get("rope_type") == "llama3":
        wr.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg, rp))
    add("token_embd.weight", w["model.embed_tokens.weight"])
    add("output_norm.weight", w["model.norm.weight"])
    if not cfg.get("tie_word_embeddings", False) and "lm_head.weight" in w:
        add("output.weight", w["lm_head.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        add(f"blk.{i}.attn_norm.weight", w[f"{p}.input_layernorm.weight"])
        if arch == "phi3":
            # Phi-3 keeps its fused projections: attn_qkv [q; k; v] and ffn_up [gate; up].
            add(f"blk.{i}.attn_qkv.weight", w[f"{p}.self_attn.qkv_proj.weight"])
        else:
            q = w[f"{p}.self_attn.q_proj.weight"]
            k = w[f"{p}.self_attn.k_proj.weight"]
            if arch == "llama":
                q, k = permute(q, n_head, n_head), permute(k, n_head, n_kv)
            add(f"blk.{i}.attn_q.weight", q)
            add(f"blk.{i}.attn_k.weight", k)
            add(f"blk.{i}.attn_v.weight", w[f"{p}.self_attn.v_proj.weight"])
        for nm in ("q_norm", "k_norm"):
            key = f"{p}.self_attn.{nm}.weight"
            if key in w:
                add(f"blk.{i}.attn_{nm}.weight", w[key])
        for b in ("q", "k", "v"):
            key = f"{p}.self_attn.{b}_proj.bias"
            if key in w:
                bias = w[key]
                if arch == "llama" and b in ("q", "k"):
                    bias = permute(bias, n_head, n_head if b == "q" else n_kv)
                add(f"blk.{i}.attn_{b}.bias", bias)
        add(f"blk.{i}.attn_output.weight", w[f"{p}.self_attn.o_proj.weight"])
        if gemma:
            add(f"blk.{i}.post_attention_norm.weight", w[f"{p}.post_attention_layernorm.weight"])
            add(f"blk.{i}.ffn_norm.weight", w[f"{p}.pre_feedforward_layernorm.weight"])
            add(f"blk.{i}.post_ffw_norm.weight", w[f"{p}.post_feedforward_layernorm.weight"])
        else:
            add(f"blk.{i}.ffn_norm.weight", w[f"{p}.post_attention_layernorm.weight"])
        if arch == "phi3":
            add(f"blk.{i}.ffn_up.weight", w[f"{p}.mlp.gate_up_proj.weight"])
        else:
            add(f"blk.{i}.ffn_gate.weight", w[f"{p}.mlp.gate_proj.weight"])
            add(f"blk.{i}.ffn_up.weight", w[f"{p}.mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", w[f"{p}.mlp.down_proj.weight"])

    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def make_fuzz_seeds():
    """Small valid files for the cargo-fuzz target's seed corpus (crates/torchless/fuzz/corpus/gguf_reader)."""
    out = ROOT / "crates/torchless/fuzz/corpus/gguf_reader"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def write(name, arch, fill):
        wr = gguf.GGUFWriter(str(out / name), arch)
        fill(wr)
        wr.write_header_to_file()
        wr.write_kv_data_to_file()
        wr.write_tensors_to_file()
        wr.close()

    def every_type(wr):
        wr.add_uint8("t.u8", 7)
        wr.add_int8("t.i8", -7)
        wr.add_uint16("t.u16", 700)
        wr.add_int16("t.i16", -700)
        wr.add_uint32("t.u32", 70000)
        wr.add_int32("t.i32", -70000)
        wr.add_float32("t.f32", 1.5)
        wr.add_bool("t.bool", True)
        wr.add_string("t.str", "héllo")
        wr.add_uint64("t.u64", 1 << 40)
        wr.add_int64("t.i64", -(1 << 40))
        wr.add_float64("t.f64", 2.25)
        wr.add_array("t.arr_i32", [1, 2, 3])
        wr.add_array("t.arr_str", ["a", "bc", ""])
        wr.add_tensor("a", rng.standard_normal((2, 3)).astype(np.float32))
        wr.add_tensor("b", rng.standard_normal((4,)).astype(np.float16))
        q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), T.Q8_0)
        wr.add_tensor("c", q, raw_shape=q.shape, raw_dtype=T.Q8_0)

    def tiny_llama(wr):
        dim, ff, vocab, heads = 32, 64, 8, 2
        wr.add_context_length(16)
        wr.add_embedding_length(dim)
        wr.add_block_count(1)
        wr.add_feed_forward_length(ff)
        wr.add_head_count(heads)
        wr.add_head_count_kv(1)
        wr.add_rope_freq_base(10000.0)
        wr.add_layer_norm_rms_eps(1e-5)
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre("smollm")
        wr.add_token_list(["<|end|>", "a", "b", "ab", "\u0120", "\u0120ab", "1", "2"])
        wr.add_token_types([3, 1, 1, 1, 1, 1, 1, 1])
        wr.add_token_merges(["a b", "\u0120 ab"])
        wr.add_eos_token_id(0)
        wr.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
        f = lambda *s: rng.standard_normal(s).astype(np.float32)
        wr.add_tensor("token_embd.weight", f(vocab, dim))
        wr.add_tensor("output_norm.weight", f(dim))
        wr.add_tensor("blk.0.attn_norm.weight", f(dim))
        wr.add_tensor("blk.0.attn_q.weight", f(dim, dim))
        wr.add_tensor("blk.0.attn_k.weight", f(dim // heads, dim))
        wr.add_tensor("blk.0.attn_v.weight", f(dim // heads, dim))
        wr.add_tensor("blk.0.attn_output.weight", f(dim, dim))
        wr.add_tensor("blk.0.ffn_norm.weight", f(dim))
        wr.add_tensor("blk.0.ffn_gate.weight", f(ff, dim))
        wr.add_tensor("blk.0.ffn_up.weight", f(ff, dim))
        wr.add_tensor("blk.0.ffn_down.weight", f(dim, ff))

    write("every_type.gguf", "test", every_type)
    write("tiny_llama.gguf", "llama", tiny_llama)
    write("metadata_only.gguf", "llama", lambda wr: wr.add_uint32("llama.block_count", 1))
    print(f"wrote fuzz seeds to {out.relative_to(ROOT)}")


def main():
    convert("llama", T.F32, "llama_f32.gguf")
    convert("llama", T.F16, "llama_f16.gguf")
    convert("llama", T.Q8_0, "llama_q8_0.gguf")
    convert("llama3", T.F32, "llama3_f32.gguf")
    convert("qwen2", T.F32, "qwen2_f32.gguf")
    convert("qwen3", T.F32, "qwen3_f32.gguf")
    convert("phi3", T.F32, "phi3_f32.gguf")
    convert("phi3", T.Q8_0, "phi3_q8_0.gguf")
    convert("gemma2", T.F32, "gemma2_f32.gguf")
    make_fuzz_seeds()
    from importlib.metadata import version
    print(f"gguf {version('gguf')}, numpy {np.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
