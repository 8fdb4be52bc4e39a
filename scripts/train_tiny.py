#!/usr/bin/env python3
"""Build torchless's built-in tiny models: a corpus from Debian's fortunes, a byte-level BPE tokenizer, and a
tiny Llama (and a tiny xLSTM) trained on it.

Steps (each a subcommand; see scripts/README.md for how they were run):

  corpus     [--src /usr/share/games/fortunes] [--out target/fortunes/fortunes.json]
             reads every fortune file (apt-get install fortunes fortunes-min), drops ascii-art, removes
             backspace overstrikes, splits on the '%' lines into documents, de-duplicates, shuffles with a
             fixed seed and writes a JSON list of strings.  CPU, seconds.
  tokenizer  [--corpus ...] [--vocab 4096] [--out crates/torchless/assets/tiny-llama]
             trains a byte-level BPE (tokenizers package) with <|endoftext|> (id 0) as BOS and EOS; writes
             tokenizer.json and tokenizer_config.json.  CPU, seconds.
  train      --arch llama|xlstm [--corpus ...] [--tokenizer DIR] [--out DIR] [--max-steps N] [--max-seconds S]
             trains on the GPU (bf16 autocast, AdamW, warmup + cosine), keeps the weights with the best
             validation loss, saves config.json + model.safetensors in bfloat16 + generation_config.json +
             the tokenizer files, then reloads what it saved and writes sample.txt with greedy and sampled
             continuations.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import time

EOT = "<|endoftext|>"
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ASSETS = os.path.join(REPO, "crates", "torchless", "assets")
SKIP_FILES = {"ascii-art"}  # pictures, not text
VAL_FRACTION = 0.02
CONTEXT = 256


# ----------------------------------------------------------------------------------------------- corpus
def build_corpus(src, out):
    docs, seen = [], set()
    per_file = {}
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith((".dat", ".u8")) or name in SKIP_FILES or not os.path.isfile(path):
            continue
        text = open(path, "rb").read().decode("utf-8")
        text = re.sub(r".\x08", "", text)  # "_\bx" / "x\bx" overstrikes (underline/bold for a terminal)
        text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)  # any other control characters but \t and \n
        n = 0
        for doc in re.split(r"^%$", text, flags=re.M):
            doc = "\n".join(line.rstrip() for line in doc.split("\n")).strip("\n")
            if not doc.strip() or doc in seen:
                continue
            seen.add(doc)
            docs.append(doc)
            n += 1
        per_file[name] = n
    random.Random(0).shuffle(docs)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(docs, f, ensure_ascii=False)
    chars = sum(len(d) for d in docs)
    print(f"corpus: {len(docs)} documents, {chars} characters from {len(per_file)} files -> {out}")
    print("documents per file:", per_file)


def load_docs(path):
    docs = json.load(open(path))
    n_val = max(1, int(len(docs) * VAL_FRACTION))
    return docs[n_val:], docs[:n_val]  # the corpus is already shuffled: the first 2% are validation


# -------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(corpus, vocab, out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    train_docs, _ = load_docs(corpus)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_docs, trainer=trainer)
    eot = tok.token_to_id(EOT)
    assert eot == 0, eot
    # encode() prepends <|endoftext|> as BOS (like Llama 3's tokenizer.json); decode() skips it.
    tok.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B",
                                                       special_tokens=[(EOT, eot)])
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    write_tokenizer_config(out)

    # Round trip on every document.
    all_docs = json.load(open(corpus))
    bad = 0
    n_tokens = 0
    for enc, doc in zip(tok.encode_batch(all_docs), all_docs):
        n_tokens += len(enc.ids) - 1
        if tok.decode(enc.ids) != doc:
            bad += 1
    probe = "Héllo, wörld! \t tabs\n  and  spaces \U0001F600 -- Terry Pratchett"
    assert tok.decode(tok.encode(probe).ids) == probe
    print(f"tokenizer: vocab {tok.get_vocab_size()}, {n_tokens} tokens over {len(all_docs)} documents "
          f"({sum(len(d) for d in all_docs) / n_tokens:.2f} chars/token), round-trip failures: {bad}")
    print("example:", tok.encode("The meaning of life is").tokens)
    assert bad == 0


def write_tokenizer_config(out):
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": CONTEXT,
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------------------------------------------ train
def make_config(arch, vocab):
    import transformers

    if arch == "llama":
        return transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=256, intermediate_size=704, num_hidden_layers=6,
            num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=CONTEXT,
            rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attention_bias=False,
            mlp_bias=False, hidden_act="silu", initializer_range=0.02,
        )
    if arch == "xlstm":
        # hidden*qk_dim_factor and hidden*v_dim_factor are multiples of 64, as transformers' xLSTMCache needs.
        return transformers.xLSTMConfig(
            vocab_size=vocab, hidden_size=256, embedding_dim=256, num_hidden_layers=6, num_blocks=6,
            num_heads=4, qk_dim_factor=0.5, v_dim_factor=1.0, ffn_proj_factor=2.667,
            ffn_round_up_to_multiple_of=64, gate_soft_cap=15.0, output_logit_soft_cap=30.0,
            weight_mode="single", use_bias=False, add_out_norm=True, norm_eps=1e-6, eps=1e-6,
            norm_reduction_force_float32=True, tie_word_embeddings=False, mode="train",
            chunkwise_kernel="chunkwise--native_autograd", sequence_kernel="native_sequence__native",
            step_kernel="native", chunk_size=64, autocast_kernel_dtype="bfloat16",
            inference_state_dtype="float32", return_last_states=True, bos_token_id=0, eos_token_id=0,
            pad_token_id=0,
        )
    raise ValueError(arch)


def tokenize_stream(tok, docs):
    import numpy as np

    ids = [0]
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(0)  # <|endoftext|> ends one document and begins the next
    return np.array(ids, dtype=np.int64)


def train(args):
    import numpy as np
    import torch
    import transformers
    from tokenizers import Tokenizer

    t_start = time.time()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} transformers {transformers.__version__} device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else ""))
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    train_docs, val_docs = load_docs(args.corpus)
    train_ids = torch.from_numpy(tokenize_stream(tok, train_docs))
    val_ids = torch.from_numpy(tokenize_stream(tok, val_docs))
    print(f"train tokens {len(train_ids)}, val tokens {len(val_ids)}")

    config = make_config(args.arch, tok.get_vocab_size())
    cls = transformers.LlamaForCausalLM if args.arch == "llama" else transformers.xLSTMForCausalLM
    model = cls(config).to(dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.arch}: {n_params} parameters")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=(dev == "cuda"))
    B, T = args.batch, CONTEXT
    gen = torch.Generator().manual_seed(args.seed)

    def batch(ids):
        ix = torch.randint(0, len(ids) - T - 1, (B,), generator=gen)
        x = torch.stack([ids[i:i + T] for i in ix])
        y = torch.stack([ids[i + 1:i + T + 1] for i in ix])
        return x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)

    def loss_of(x, y):
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=(dev == "cuda")):
            logits = model(input_ids=x, use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))

    @torch.no_grad()
    def val_loss():
        model.eval()
        losses = []
        # fixed, non-overlapping windows over the whole validation stream
        n = (len(val_ids) - 1) // T
        for s in range(0, n, B):
            idx = range(s, min(n, s + B))
            x = torch.stack([val_ids[i * T:(i + 1) * T] for i in idx]).to(dev)
            y = torch.stack([val_ids[i * T + 1:(i + 1) * T + 1] for i in idx]).to(dev)
            losses.append(loss_of(x, y).item() * len(idx))
        model.train()
        return sum(losses) / n

    total = args.max_steps
    warmup = min(100, total // 10)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        p = (step - warmup) / max(1, total - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))

    best = (float("inf"), None, -1)
    history = []
    t0 = time.time()
    step = 0
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = batch(train_ids)
        loss = loss_of(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if dev == "cuda" and step in (30, 60):
            # Time steps 30..60 (no evaluation among them); shrink the schedule if it would not fit.
            torch.cuda.synchronize()
            if step == 30:
                t_cal = time.time()
            else:
                per = (time.time() - t_cal) / 30
                fit = 60 + int((args.max_seconds - (time.time() - t0)) / (per * 1.05))
                if fit < total:
                    print(f"{per * 1e3:.1f} ms/step: {total} steps do not fit in {args.max_seconds}s, using {fit}")
                    total = max(fit, 200)
                    warmup = min(warmup, total // 10)
                else:
                    print(f"{per * 1e3:.1f} ms/step, {total} steps, about {per * total:.0f}s")
        last = step == total - 1
        if step % args.eval_every == 0 or last:
            vl = val_loss()
            history.append({"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(vl, 4),
                            "lr": round(lr_at(step), 6), "seconds": round(time.time() - t0, 1),
                            "tokens_seen": (step + 1) * B * T})
            print(json.dumps(history[-1]), flush=True)
            if vl < best[0]:
                best = (vl, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, step)
        if last:
            break
        if time.time() - t0 > args.max_seconds * 1.15:
            print("time budget exceeded, stopping")
            vl = val_loss()
            history.append({"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(vl, 4),
                            "seconds": round(time.time() - t0, 1), "tokens_seen": (step + 1) * B * T})
            if vl < best[0]:
                best = (vl, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}, step)
            break
    train_seconds = time.time() - t0
    print(f"trained {step + 1} steps in {train_seconds:.0f}s; best val loss {best[0]:.4f} at step {best[2]} "
          f"({(step + 1) * B * T / len(train_ids):.1f} epochs)")
    model.load_state_dict(best[1])

    # ---- save in bfloat16
    out = args.out
    if os.path.exists(out):
        for fn in ("config.json", "model.safetensors", "generation_config.json"):
            if os.path.exists(os.path.join(out, fn)):
                os.remove(os.path.join(out, fn))
    os.makedirs(out, exist_ok=True)
    if args.arch == "xlstm":
        model.config.mode = "inference"
        model.config.autocast_kernel_dtype = "float32"
    model.config.use_cache = True
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=0, eos_token_id=0, pad_token_id=0, do_sample=True, temperature=0.8, top_k=40,
        top_p=0.95, max_length=CONTEXT)
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(out, safe_serialization=True)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.abspath(args.tokenizer) != os.path.abspath(out):
            shutil.copy(os.path.join(args.tokenizer, fn), os.path.join(out, fn))
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump({"arch": args.arch, "parameters": n_params, "transformers": transformers.__version__,
                   "torch": torch.__version__,
                   "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                   "corpus": "Debian fortunes + fortunes-min (all files but ascii-art), see README.md",
                   "train_tokens": len(train_ids), "val_tokens": len(val_ids), "context": T, "batch": B,
                   "steps": step + 1, "peak_lr": args.lr, "schedule": f"linear warmup {warmup}, cosine to 10%",
                   "optimizer": "AdamW betas (0.9, 0.95), weight decay 0.1 on matrices, grad clip 1.0",
                   "precision": "bf16 autocast, f32 master weights; saved as bfloat16",
                   "best_val_loss": round(best[0], 4), "best_step": best[2],
                   "train_seconds": round(train_seconds, 1), "history": history}, f, indent=1)
    del model

    # ---- reload what was saved and write samples
    model = cls.from_pretrained(out, dtype=torch.float32).to(dev).eval()
    write_samples(model, tok, os.path.join(out, "sample.txt"), args, dev)
    print(f"total {time.time() - t_start:.0f}s; files: " + ", ".join(
        f"{fn} {os.path.getsize(os.path.join(out, fn))}" for fn in sorted(os.listdir(out))))


def write_samples(model, tok, path, args, dev):
    import torch

    prompts = ["", "The meaning of life is", "A computer", "Q: What do you call", "Love is", "Linux"]
    lines = [f"# {args.arch}: continuations from transformers, weights as saved (bfloat16) upcast to float32.",
             "# Each prompt is encoded with the tokenizer (which prepends <|endoftext|>, id 0); greedy = do_sample",
             "# False; sampled = temperature 0.8, top_k 40, top_p 0.95, torch.manual_seed(0). Up to 80 new tokens,",
             "# stopping at <|endoftext|>.", ""]
    for prompt in prompts:
        ids = torch.tensor([tok.encode(prompt).ids], device=dev)
        for mode in ("greedy", "sampled"):
            torch.manual_seed(0)
            kw = dict(do_sample=False) if mode == "greedy" else dict(do_sample=True, temperature=0.8, top_k=40,
                                                                     top_p=0.95)
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=80, eos_token_id=0, pad_token_id=0, **kw)[0].tolist()
            new = out[ids.shape[1]:]
            text = tok.decode(out)
            lines.append(f"=== {mode} | prompt {prompt!r} | new token ids {new[:12]}{'...' if len(new) > 12 else ''}")
            lines.append(text)
            lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--src", default="/usr/share/games/fortunes")
    c.add_argument("--out", default=os.path.join(REPO, "target", "fortunes", "fortunes.json"))
    t = sub.add_parser("tokenizer")
    t.add_argument("--corpus", default=os.path.join(REPO, "target", "fortunes", "fortunes.json"))
    t.add_argument("--vocab", type=int, default=4096)
    t.add_argument("--out", default=os.path.join(ASSETS, "tiny-llama"))
    r = sub.add_parser("train")
    r.add_argument("--arch", choices=["llama", "xlstm"], required=True)
    r.add_argument("--corpus", default=os.path.join(REPO, "target", "fortunes", "fortunes.json"))
    r.add_argument("--tokenizer", default=os.path.join(ASSETS, "tiny-llama"))
    r.add_argument("--out", default=None)
    r.add_argument("--max-steps", type=int, default=1500)
    r.add_argument("--max-seconds", type=float, default=110)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--lr", type=float, default=2e-3)
    r.add_argument("--eval-every", type=int, default=100)
    r.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "corpus":
        build_corpus(args.src, args.out)
    elif args.cmd == "tokenizer":
        train_tokenizer(args.corpus, args.vocab, args.out)
    else:
        args.out = args.out or os.path.join(ASSETS, "tiny-" + args.arch)
        train(args)


if __name__ == "__main__":
    main()
