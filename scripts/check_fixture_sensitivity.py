#!/usr/bin/env python3
"""Check that the fixtures written by make_fixtures.py catch the mistakes they are meant to catch.

For each fixture it reloads the model, applies one deliberate mistake (wrong rope layout, missing soft cap,
wrong norm variant, no sliding window, ...) and prints the largest change of any logit against golden.json.
Every change should be far above the 1e-3 tolerance a test would use; the script exits 1 otherwise.
It also checks that the reloaded model reproduces golden.json.

Usage: python3 scripts/check_fixture_sensitivity.py [fixtures dir]   (CPU, a few seconds)
"""

import json
import os
import sys

import torch
import transformers

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                          "crates", "torchless", "tests", "fixtures")


def load(name, **cfg_changes):
    d = os.path.join(ROOT, name)
    cfg = transformers.AutoConfig.from_pretrained(d)
    for k, v in cfg_changes.items():
        setattr(cfg, k, v)
    cls = getattr(transformers, json.load(open(os.path.join(d, "golden.json")))["model_class"])
    return cls.from_pretrained(d, config=cfg, dtype=torch.float32, attn_implementation="eager").eval()


def logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor([tokens]), use_cache=False).logits[0].float()


def interleave_rows(w, n_heads, head_dim, rot=None):
    """Permute each head's rows from the half-split rope layout to the interleaved one (what an engine that
    applies interleaved (GPT-J) rope to Hugging Face weights effectively computes)."""
    rot = rot or head_dim
    perm = []
    for i in range(rot // 2):
        perm += [i, i + rot // 2]
    perm += list(range(rot, head_dim))
    w = w.view(n_heads, head_dim, -1)[:, perm]
    return w.reshape(n_heads * head_dim, -1)


def rope_layout(model):
    c = model.config
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    with torch.no_grad():
        for layer in model.model.layers:
            a = layer.self_attn
            a.q_proj.weight.copy_(interleave_rows(a.q_proj.weight, c.num_attention_heads, hd))
            a.k_proj.weight.copy_(interleave_rows(a.k_proj.weight, c.num_key_value_heads, hd))
            if getattr(a.q_proj, "bias", None) is not None:
                a.q_proj.bias.copy_(interleave_rows(a.q_proj.bias[:, None], c.num_attention_heads, hd)[:, 0])
                a.k_proj.bias.copy_(interleave_rows(a.k_proj.bias[:, None], c.num_key_value_heads, hd)[:, 0])
    return model


def norms_minus_one(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 1 and "norm" in n:
                p.sub_(1.0)
    return model


def zero_bias(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    return model


def qk_norm_off(model):
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.fill_(1.0)
            layer.self_attn.k_norm.weight.fill_(1.0)
    return model


def rope_params(name, **changes):
    cfg = transformers.AutoConfig.from_pretrained(os.path.join(ROOT, name))
    rp = dict(cfg.rope_parameters)
    rp.update(changes)
    return rp


CHECKS = {
    "llama": [("rope interleaved instead of half-split", lambda: rope_layout(load("llama"))),
              ("rope_theta 500000", lambda: load("llama", rope_parameters=rope_params("llama", rope_theta=5e5)))],
    "llama3": [("no llama3 rope scaling", lambda: load("llama3", rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0}))],
    "mistral": [("no sliding window", lambda: load("mistral", sliding_window=512)),
                ("rope interleaved", lambda: rope_layout(load("mistral")))],
    "qwen2": [("q/k/v bias dropped", lambda: zero_bias(load("qwen2"))),
              ("rope interleaved (bias permuted too)", lambda: rope_layout(load("qwen2")))],
    "qwen3": [("q_norm/k_norm weights ignored", lambda: qk_norm_off(load("qwen3")))],
    "gemma2": [("no attention soft cap", lambda: load("gemma2", attn_logit_softcapping=None)),
               ("no final soft cap", lambda: load("gemma2", final_logit_softcapping=None)),
               ("scale by head_dim instead of query_pre_attn_scalar", lambda: load("gemma2", query_pre_attn_scalar=16)),
               ("RMSNorm weight w instead of 1 + w", lambda: norms_minus_one(load("gemma2"))),
               ("no sliding window", lambda: load("gemma2", sliding_window=512,
                                                  layer_types=["full_attention"] * 3))],
    "phi3": [("full rotary instead of partial 0.5", lambda: load("phi3", rope_parameters=rope_params(
        "phi3", partial_rotary_factor=1.0)))],
    "gqa": [("rope interleaved", lambda: rope_layout(load("gqa")))],
    "xlstm": [("no output logit soft cap", lambda: load("xlstm", output_logit_soft_cap=1e9)),
              ("no gate soft cap", lambda: load("xlstm", gate_soft_cap=1e9))],
    "xlstm_fused": [("no gate soft cap", lambda: load("xlstm_fused", gate_soft_cap=1e9))],
}


def main():
    torch.set_num_threads(1)
    bad = []
    for name in sorted(os.listdir(ROOT)):
        gpath = os.path.join(ROOT, name, "golden.json")
        if not os.path.exists(gpath):
            continue
        g = json.load(open(gpath))
        ref = torch.tensor(g["logits"])
        if name == "xlstm_fused":
            from make_fixtures import patch_xlstm_fused_init
            patch_xlstm_fused_init()
        d0 = (logits(load(name), g["tokens"]) - ref).abs().max().item()
        print(f"{name:12s} reload vs golden: {d0:.2e}")
        # Another CPU's float32 rounding: ~1e-6 for the Llama family, up to ~2e-4 for the xLSTM (see
        # tests/fixtures/README.md, "Tolerances to use").
        if d0 > (1e-3 if g["model_type"] == "xlstm" else 1e-4):
            bad.append((name, "reload", d0))
        for what, make in CHECKS.get(name, []):
            d = (logits(make(), g["tokens"]) - ref).abs().max().item()
            print(f"{name:12s} {what:52s} max |dlogit| = {d:.3f}")
            if d < 0.05:
                bad.append((name, what, d))
    if "llama" in os.listdir(ROOT) and "llama_bf16" in os.listdir(ROOT):
        a = torch.tensor(json.load(open(os.path.join(ROOT, "llama", "golden.json")))["logits"])
        b = torch.tensor(json.load(open(os.path.join(ROOT, "llama_bf16", "golden.json")))["logits"])
        print(f"llama vs llama_bf16 (bf16 rounding of the same weights): max |dlogit| = {(a - b).abs().max():.4f}")
    print("BAD:" if bad else "all mistakes change the logits by more than 0.05", bad if bad else "")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
