#!/usr/bin/env python3
"""Build tiny random-weight models with Hugging Face transformers and write golden outputs.

For each fixture NAME this writes crates/torchless/tests/fixtures/NAME/ with
  config.json, model.safetensors   exactly as save_pretrained(..., safe_serialization=True) writes them
  golden.json                      token ids, full-forward logits, a 32-token greedy decode, versions

The goldens are computed from the model reloaded from the files just written (so they describe the files,
not the in-memory model), on the CPU, in float32, eval mode, attn_implementation="eager".

Usage:  python3 scripts/make_fixtures.py [--out crates/torchless/tests/fixtures] [--only NAME,...]
Needs:  torch, transformers (5.x; the xLSTM fixtures need xLSTMConfig), safetensors, numpy.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from transformers import GenerationConfig

SEED = 1234
VOCAB = 256
N_NEW = 32  # greedy tokens
STD = 0.2  # weight init std (much larger than the default 0.02, so logits are far from uniform)
# Gemma2 ties lm_head to the embedding and scales the embedding by sqrt(hidden) = 8, so with std 0.2 the
# residual stream is dominated by the input embedding and the random model only ever repeats one token.
# A smaller embedding std and norm weights w ~ 1 (used as 1 + w ~ 2) give a varied greedy decode while the
# final soft cap 3.0 stays strongly active (|pre-cap logits| reach ~5-10).
GEMMA_NORM_CENTRE = 1.0
GEMMA_EMBED_STD = 0.1

# Fields shared by the llama-family fixtures.
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,  # not a power of two on purpose: ragged matmul sizes
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def spec_list():
    """(name, config class name, model class name, config kwargs, options). Built lazily so that a
    transformers without some class still makes the others."""
    specs = []
    specs.append((
        "llama", "LlamaConfig", "LlamaForCausalLM",
        dict(BASE, num_key_value_heads=4, tie_word_embeddings=False,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, note="multi-head attention (4 q heads, 4 kv heads), untied lm_head"),
    ))
    specs.append((
        "llama3", "LlamaConfig", "LlamaForCausalLM",
        dict(BASE, tie_word_embeddings=True,
             rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 64}),
        dict(n_tokens=40, note="llama3 rope scaling; 40 prompt tokens + 32 greedy tokens reach position 71 "
             "(> original_max_position_embeddings 64). The llama3 scaling changes the rotary frequencies "
             "themselves, so it affects every position > 0. Tied embeddings."),
    ))
    specs.append((
        "mistral", "MistralConfig", "MistralForCausalLM",
        dict(BASE, sliding_window=4, tie_word_embeddings=True, head_dim=16,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, note="sliding_window 4 on every layer: query i sees keys j with i-4 < j <= i "
             "(itself and the 3 before it), transformers' convention"),
    ))
    specs.append((
        "qwen2", "Qwen2Config", "Qwen2ForCausalLM",
        dict(BASE, tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, note="bias on q_proj/k_proj/v_proj (Qwen2 always has it), none on o_proj/MLP"),
    ))
    specs.append((
        "qwen3", "Qwen3Config", "Qwen3ForCausalLM",
        dict(BASE, head_dim=32, tie_word_embeddings=True, use_sliding_window=False, sliding_window=None,
             attention_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, note="q_norm/k_norm (RMSNorm over head_dim, weight w, not 1+w) applied per head "
             "before rope; head_dim 32 != hidden/heads 16 (q_proj 64->128, o_proj 128->64)"),
    ))
    specs.append((
        "gemma2", "Gemma2Config", "Gemma2ForCausalLM",
        dict(BASE, num_hidden_layers=3, head_dim=16, hidden_activation="gelu_pytorch_tanh",
             attn_logit_softcapping=5.0, final_logit_softcapping=3.0, query_pre_attn_scalar=32,
             sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
             tie_word_embeddings=True, rms_norm_eps=1e-6,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, note="Gemma2: embeddings scaled by sqrt(hidden)=8 (computed in the activation "
             "dtype), RMSNorm weight used as (1+w) (weights initialised around 0 here), 4 norms per layer "
             "(input, post_attention, pre_feedforward, post_feedforward), gelu_pytorch_tanh MLP, attention "
             "scores scaled by query_pre_attn_scalar**-0.5 = 32**-0.5 (not head_dim 16) then "
             "5*tanh(s/5), final logits 3*tanh(x/3); layers 0 and 2 use sliding window 4, layer 1 is global"),
    ))
    specs.append((
        "phi3", "Phi3Config", "Phi3ForCausalLM",
        dict(BASE, num_key_value_heads=2, tie_word_embeddings=False, original_max_position_embeddings=512,
             sliding_window=None, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
        dict(n_tokens=16, note="fused qkv_proj ([q; k; v] rows: 64 + 32 + 32 = 128 outputs) and fused "
             "gate_up_proj ([gate; up] rows: 96 + 96); partial_rotary_factor 0.5: rope on the first 8 of each "
             "head's 16 dims (rotate_half within those 8), the last 8 pass through"),
    ))
    specs.append((
        "llama_bf16", "LlamaConfig", "LlamaForCausalLM",
        dict(BASE, num_key_value_heads=4, tie_word_embeddings=False,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, bf16=True, same_weights_as="llama",
             note="the llama fixture's weights (same seed), rounded to bfloat16 and saved in bfloat16; the "
             "golden logits and greedy decode come from those bf16-rounded weights upcast to float32, with "
             "the whole forward in float32"),
    ))
    specs.append((
        "gqa", "LlamaConfig", "LlamaForCausalLM",
        dict(BASE, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        dict(n_tokens=16, note="grouped-query attention with a single kv head shared by 4 query heads"),
    ))
    xlstm_common = dict(
        vocab_size=VOCAB, hidden_size=64, embedding_dim=64, num_hidden_layers=2, num_blocks=2, num_heads=2,
        qk_dim_factor=1.0, v_dim_factor=2.0, ffn_proj_factor=1.0, ffn_round_up_to_multiple_of=64,
        gate_soft_cap=15.0, output_logit_soft_cap=30.0, use_bias=False, add_out_norm=True,
        norm_eps=1e-6, eps=1e-6, norm_reduction_force_float32=True, tie_word_embeddings=False,
        mode="inference", chunkwise_kernel="chunkwise--native_autograd",
        sequence_kernel="native_sequence__native", step_kernel="native", chunk_size=64,
        autocast_kernel_dtype="float32", inference_state_dtype="float32", return_last_states=True,
        max_inference_chunksize=16384, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    xlstm_note = ("pure-PyTorch kernels (no triton, no `xlstm` package): with 16 tokens < chunk_size 64 the "
                  "prefill runs mlstm_recurrent_sequence_native (a step-by-step recurrence) and each decode "
                  "step mlstm_recurrent_step_native, in float32. qk_dim_factor 1.0 / v_dim_factor 2.0 give "
                  "qk head dim 32 and v head dim 64 (the same qk:v = 1:2 ratio as xLSTM-7B's 0.5/1.0): "
                  "transformers' xLSTMCache sizes its state from config.qk_dim, which rounds "
                  "hidden*qk_dim_factor up to a multiple of 64, while the layer uses int(hidden*qk_dim_factor); "
                  "with hidden 64 and qk_dim_factor 0.5 the two disagree (32 vs 64) and generate() fails, so "
                  "hidden*qk_dim_factor and hidden*v_dim_factor are kept multiples of 64. "
                  "Input-gate weights use std 0.1 (the stabiliser m stays near 0, so max(|q.n|, exp(-m)) stays "
                  "away from 0), forget-gate and lm_head weights std 1.0 (others 0.2), so gate_soft_cap 15 and "
                  "output_logit_soft_cap 30 change the outputs measurably.")
    specs.append((
        "xlstm", "xLSTMConfig", "xLSTMForCausalLM", dict(xlstm_common, weight_mode="single"),
        dict(n_tokens=16, xlstm=True, note=xlstm_note + " weight_mode single: separate q, k, v, ogate_preact, "
             "igate_preact, fgate_preact, proj_up_gate, proj_up"),
    ))
    specs.append((
        "xlstm_fused", "xLSTMConfig", "xLSTMForCausalLM", dict(xlstm_common, weight_mode="fused"),
        dict(n_tokens=16, xlstm=True, same_weights_as="xlstm",
             note=xlstm_note + " weight_mode fused: qkv_opreact rows [q 64; k 64; v 128; o 128], ifgate_preact "
             "rows [i 2; f 2] (soft cap applied to both), proj_up_gate_z rows [gate 64; z 64]. Its weights are "
             "the xlstm fixture's, concatenated, so both fixtures describe the same function."),
    ))
    specs.append((
        "xlstm_qk_half", "xLSTMConfig", "xLSTMForCausalLM",
        dict(xlstm_common, hidden_size=128, embedding_dim=128, qk_dim_factor=0.5, v_dim_factor=1.0,
             weight_mode="single"),
        dict(n_tokens=16, xlstm=True, note=xlstm_note.split(" qk_dim_factor 1.0")[0] + " xLSTM-7B's factors: "
             "qk_dim_factor 0.5 and v_dim_factor 1.0 with hidden_size 128 give qk_dim 64 (qk head dim 32) and "
             "v_dim 128 (v head dim 64); 64 is already a multiple of 64, so transformers' xLSTMCache (sized from "
             "config.qk_dim, rounded up to 64) agrees with the layer (int(hidden * qk_dim_factor)) and generate() "
             "works. weight_mode single; FFN 128 (ffn_proj_factor 1.0). "
             + xlstm_note[xlstm_note.index("Input-gate weights"):]),
    ))
    return specs


def is_norm(name, p):
    return p.ndim == 1 and "norm" in name


def init_weights(model, gen, kind):
    """Deterministic re-initialisation of every parameter (named_parameters order)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if is_norm(name, p):
                centre = GEMMA_NORM_CENTRE if kind == "gemma2" else 1.0
                p.copy_(centre + STD * noise)
            elif kind == "xlstm" and "igate_preact" in name:
                p.copy_(XLSTM_IGATE_STD * noise)
            elif kind == "xlstm" and ("fgate_preact" in name or "lm_head" in name):
                p.copy_(1.0 * noise)
            elif kind == "gemma2" and "embed_tokens" in name:
                p.copy_(GEMMA_EMBED_STD * noise)
            else:
                p.copy_(STD * noise)


def f32_str(x):
    s = str(np.float32(x))  # shortest string that reads back as the same float32
    assert np.isfinite(np.float32(x)), s
    return s


def golden_json(d):
    """json.dumps, but logits written as shortest-round-trip float32 strings, one row per line."""
    rows = d.pop("logits")
    body = json.dumps(d, indent=1)[:-2]  # drop "\n}"
    lines = ["[" + ",".join(f32_str(v) for v in row) + "]" for row in rows]
    return body + ',\n "logits": [\n' + ",\n".join(lines) + "\n ]\n}\n"


def make_one(name, cfg_cls_name, model_cls_name, cfg_kwargs, opts, out_root, gen_tokens):
    cfg_cls = getattr(transformers, cfg_cls_name, None)
    model_cls = getattr(transformers, model_cls_name, None)
    if cfg_cls is None or model_cls is None:
        print(f"[{name}] SKIPPED: transformers {transformers.__version__} has no {cfg_cls_name}/{model_cls_name}")
        return None
    kind = "xlstm" if opts.get("xlstm") else ("gemma2" if name == "gemma2" else "llama")
    seed_name = opts.get("same_weights_as", name)
    base_seed = SEED + sum(ord(c) * (i + 1) for i, c in enumerate(seed_name))

    patched = patch_xlstm_fused_init() if opts.get("xlstm") and cfg_kwargs.get("weight_mode") == "fused" else None
    try:
        if seed_name in ACCEPTED_SEEDS:
            seeds = [ACCEPTED_SEEDS[seed_name]]
        elif seed_name in PINNED_SEEDS and not SEARCH_SEEDS:
            seeds = [PINNED_SEEDS[seed_name]]
        else:
            seeds = [base_seed + 1000 * k for k in range(MAX_SEED_TRIES if kind == "xlstm" else 1)]
        for seed in seeds:
            g = _make_one(name, cfg_cls, model_cls, cfg_kwargs, opts, out_root, gen_tokens, kind, seed)
            if kind != "xlstm" or well_conditioned(g) or len(seeds) == 1:
                break
            print(f"[{name}] seed {seed} is ill-conditioned (float32 vs float64 {g['f64_check']}, min top-2 margin "
                  f"{g['greedy_min_top2_margin']}); trying the next seed")
        else:
            raise RuntimeError(f"{name}: no well-conditioned seed in {len(seeds)} tries")
        if kind == "xlstm" and not well_conditioned(g):
            print(f"[{name}] NOTE: seed {seed}: float32 vs float64 {g['f64_check']}, min top-2 margin "
                  f"{g['greedy_min_top2_margin']}: outside F64_TOL {F64_TOL} / MIN_MARGIN {MIN_MARGIN} on this "
                  "machine's float32 rounding")
        ACCEPTED_SEEDS.setdefault(seed_name, seed)
        return g
    finally:
        if patched is not None:
            patched()


# xLSTM input gates are kept small so that the stabiliser m stays within a few units of 0 and the
# denominator max(|q.n|, exp(-m)) is bounded away from 0; forget gates (std 1.0, pre-activations ~8) keep
# gate_soft_cap 15 relevant, lm_head std 1.0 keeps output_logit_soft_cap 30 relevant.
XLSTM_IGATE_STD = 0.1
# Seeds accepted so far (xlstm_fused reuses xlstm's, so both hold the same weights).
ACCEPTED_SEEDS = {}
# The search below, run on the device machine's CPU, accepted the second seed tried for xlstm (3924: float32
# vs float64 5.3e-5 on the prompt, 8.1e-5 on the greedy path). Other CPUs round float32 differently (here:
# 7.3e-5 / 1.3e-4 for the same seed, and the search there would go on to another seed), so the seed is
# pinned; --search-seeds runs the search instead.
PINNED_SEEDS = {"xlstm": 3924, "xlstm_qk_half": 12725}
SEARCH_SEEDS = False
# The mLSTM output h = C^T q / max(|q.n|, exp(-m)) goes through a per-head LayerNorm, which is blind to the
# scale of h; when the terms of C^T q nearly cancel (q almost orthogonal to the keys seen so far) its
# direction, and so the logits, become ill-conditioned: with random weights the float32 reference itself can
# be off by 1e-4..1e-2 against float64. For the xLSTM fixtures, seeds are tried in turn until the float32
# golden agrees with a float64 evaluation (prompt logits and the whole greedy path; logits here reach ~25)
# within F64_TOL and the greedy decode has a top-2 margin >= MIN_MARGIN.
MAX_SEED_TRIES = 40
F64_TOL = 1e-4
MIN_MARGIN = 0.02


def well_conditioned(g):
    c = g["f64_check"]
    return (c["prompt_logits_max_abs_diff"] <= F64_TOL and c["greedy_path_logits_max_abs_diff"] <= F64_TOL
            and c["greedy_same_in_float64"] and g["greedy_min_top2_margin"] >= MIN_MARGIN)


def float64_logits(model_cls, out, ids):
    """The same saved weights evaluated in float64 (xLSTM: states and kernels in float64 too)."""
    cfg = transformers.AutoConfig.from_pretrained(out)
    if cfg.model_type == "xlstm":
        # the config's validator only admits 16/32-bit names; the kernels take any torch dtype
        cfg.__dict__["inference_state_dtype"] = "float64"
        cfg.__dict__["autocast_kernel_dtype"] = "float64"
    m64 = model_cls.from_pretrained(out, config=cfg, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        return m64(torch.tensor([ids]), use_cache=False).logits[0].double()


def patch_xlstm_fused_init():
    """transformers 5.17's xLSTMPreTrainedModel._init_weights fails for weight_mode="fused": its fused branch
    matches every Linear whose name contains "gate", subtracts a num_heads slice of ifgate_preact.bias from
    a 2*num_heads tensor (shape error) and indexes the bias of ffn.proj_up_gate_z, which has none; so neither
    the constructor nor from_pretrained works. Every weight is re-drawn or loaded afterwards anyway, so skip
    the default init for those modules. Returns an undo."""
    from transformers.models.xlstm import modeling_xlstm as mx
    orig = mx.xLSTMPreTrainedModel._init_weights

    def _init_weights(self, module):
        if isinstance(module, torch.nn.Linear) and "gate" in self._module_name_map(module):
            return
        return orig(self, module)

    mx.xLSTMPreTrainedModel._init_weights = _init_weights

    def undo():
        mx.xLSTMPreTrainedModel._init_weights = orig

    return undo


def fuse_xlstm_weights(single, fused):
    src = dict(single.named_parameters())
    cat = lambda *names: torch.cat([src[n] for n in names], dim=0)
    with torch.no_grad():
        for name, p in fused.named_parameters():
            if ".qkv_opreact." in name:
                pre = name.split("qkv_opreact.")[0]
                kind = name.rsplit(".", 1)[1]
                p.copy_(cat(*(pre + m + "." + kind for m in ("q", "k", "v", "ogate_preact"))))
            elif ".ifgate_preact." in name:
                pre = name.split("ifgate_preact.")[0]
                kind = name.rsplit(".", 1)[1]
                p.copy_(cat(pre + "igate_preact." + kind, pre + "fgate_preact." + kind))
            elif ".proj_up_gate_z." in name:
                pre = name.split("proj_up_gate_z.")[0]
                p.copy_(cat(pre + "proj_up_gate.weight", pre + "proj_up.weight"))
            else:
                p.copy_(src[name])


def _make_one(name, cfg_cls, model_cls, cfg_kwargs, opts, out_root, gen_tokens, kind, seed):
    model_cls_name = model_cls.__name__
    config = cfg_cls(**cfg_kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    if cfg_kwargs.get("weight_mode") == "fused":
        # The same weights as the "single" fixture (same seed), concatenated into the fused layout, so the
        # two fixtures must give the same logits.
        single = model_cls(cfg_cls(**dict(cfg_kwargs, weight_mode="single"))).to(torch.float32).eval()
        init_weights(single, torch.Generator().manual_seed(seed), kind)
        fuse_xlstm_weights(single, model)
    else:
        gen = torch.Generator().manual_seed(seed)
        init_weights(model, gen, kind)

    out = os.path.join(out_root, name)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    if opts.get("bf16"):
        model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    for extra in os.listdir(out):
        if extra not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(out, extra))  # e.g. generation_config.json
    del model

    # Reload from disk so the goldens describe the files; float32 compute (bf16 weights are upcast).
    model = model_cls.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    tokens = gen_tokens(opts["n_tokens"])
    ids = torch.tensor([tokens], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits[0].float()
        gcfg = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, min_new_tokens=0, eos_token_id=None,
                                bos_token_id=None, pad_token_id=0, num_beams=1, use_cache=True)
        model.generation_config = gcfg  # no eos: generate() would otherwise take eos_token_id from config.json
        seq = model.generate(ids, generation_config=gcfg)[0].tolist()
    greedy = seq[len(tokens):]
    assert len(greedy) == N_NEW, (name, len(greedy))

    # Self-check: a full forward over prompt + greedy tokens must pick the same tokens, and report how close
    # the top-2 logits came along the greedy path (a near-tie would make a correct engine disagree).
    with torch.no_grad():
        full = model(torch.tensor([seq[:-1]]), use_cache=False).logits[0].float()
    path = full[len(tokens) - 1:]
    top2 = torch.topk(path, 2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()
    argmax = path.argmax(-1).tolist()
    consistent = argmax == greedy
    max_dev = float((full[: len(tokens)] - logits).abs().max())
    l64 = float64_logits(model_cls, out, seq[:-1])
    f64_check = {
        "prompt_logits_max_abs_diff": float(f"{(l64[: len(tokens)] - logits.double()).abs().max().item():.3g}"),
        "greedy_path_logits_max_abs_diff": float(f"{(l64 - full.double()).abs().max().item():.3g}"),
        "greedy_same_in_float64": l64[len(tokens) - 1:].argmax(-1).tolist() == greedy,
    }

    g = {
        "name": name,
        "model_class": model_cls_name,
        "model_type": model.config.model_type,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "weights_dtype": "bfloat16" if opts.get("bf16") else "float32",
        "compute": ("float32 on the CPU, eval mode, attn_implementation=eager"
                    + ("; weights rounded to bfloat16 as saved, upcast to float32" if opts.get("bf16") else "")),
        "note": opts.get("note", ""),
        "seed": seed,
        "init": ("all parameters re-drawn from N(0, 0.2^2); norm weights 1 + N(0, 0.2^2)"
                 + ("; Gemma: embedding N(0, 0.1^2), norm weights 1 + N(0, 0.2^2) used as 1 + w ~ 2"
                    if kind == "gemma2" else "")
                 + (f"; igate_preact weight/bias N(0, {XLSTM_IGATE_STD}^2), fgate_preact weight/bias and lm_head "
                    "N(0, 1); seed = first of base, base+1000, ... whose float32 logits agree with float64 "
                    f"within {F64_TOL} and whose greedy top-2 margin >= {MIN_MARGIN}" if kind == "xlstm" else "")),
        "n_tokens": len(tokens),
        "tokens": tokens,
        "greedy": greedy,
        "greedy_checked_by_full_forward": consistent,
        "greedy_min_top2_margin": round(min(margins), 6),
        "greedy_top2_margins": [round(m, 5) for m in margins],
        "full_forward_vs_prompt_logits_max_abs_diff": max_dev,
        "f64_check": f64_check,
        "logits_shape": list(logits.shape),
        "logits_std": round(float(logits.std()), 4),
        "logits_max_abs": round(float(logits.abs().max()), 4),
        "logits": logits.tolist(),
    }
    with open(os.path.join(out, "golden.json"), "w") as f:
        f.write(golden_json(g))
    sizes = {fn: os.path.getsize(os.path.join(out, fn)) for fn in sorted(os.listdir(out))}
    print(f"[{name}] params={sum(p.numel() for p in model.parameters())} sizes={sizes} "
          f"logits std={g['logits_std']} max|.|={g['logits_max_abs']} greedy_consistent={consistent} "
          f"min_margin={g['greedy_min_top2_margin']:.4g} prefix_dev={max_dev:.3g} f64={f64_check}")
    print(f"[{name}] greedy={greedy}")
    return g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates",
                                                  "torchless", "tests", "fixtures"))
    ap.add_argument("--only", default="")
    ap.add_argument("--search-seeds", action="store_true", help="search the xLSTM seed instead of the pinned one")
    args = ap.parse_args()
    global SEARCH_SEEDS
    SEARCH_SEEDS = args.search_seeds
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # reproducible float32 reductions on the CPU
    print(f"python {sys.version.split()[0]} torch {torch.__version__} transformers {transformers.__version__} "
          f"numpy {np.__version__}")
    print("has xLSTMConfig:", hasattr(transformers, "xLSTMConfig"), "Phi3:", hasattr(transformers, "Phi3Config"),
          "Gemma2:", hasattr(transformers, "Gemma2Config"), "Qwen3:", hasattr(transformers, "Qwen3Config"))
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    tok_gen = torch.Generator().manual_seed(SEED)
    # One fixed token list (prefix-consistent across fixtures): ids 3..255, away from bos/eos/pad.
    all_tokens = torch.randint(3, VOCAB, (64,), generator=tok_gen).tolist()
    summary = {}
    failed = []
    for name, cc, mc, kw, opts in spec_list():
        if only and name not in only:
            continue
        try:
            g = make_one(name, cc, mc, kw, opts, args.out, lambda n: all_tokens[:n])
        except Exception as e:  # keep going: one broken class must not cost the others
            import traceback
            traceback.print_exc()
            print(f"[{name}] FAILED: {e!r}")
            failed.append(name)
            continue
        if g is not None:
            summary[name] = {k: g[k] for k in ("model_class", "weights_dtype", "n_tokens",
                                               "greedy_checked_by_full_forward", "greedy_min_top2_margin")}
    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total fixture bytes: {total}")
    print(json.dumps(summary, indent=1))
    if failed:
        print("FAILED:", failed)
        sys.exit(1)


if __name__ == "__main__":
    main()
