# transformers on a model directory (e.g. from scripts/make_random_llama.py): prefill tok/s of a random
# prompt and `generate` decode tok/s, to set beside `torchless bench-model` in the same run.
#   python3 benchmarks/torch_llama.py DIR [--prefill 2048] [--context 512] [--decode 64]
import argparse, time
import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--prefill", type=int, default=2048)
ap.add_argument("--context", type=int, default=512)
ap.add_argument("--decode", type=int, default=64)
args = ap.parse_args()
t0 = time.time()
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda", attn_implementation="sdpa")
torch.cuda.synchronize()
print(f"transformers load: {time.time() - t0:.1f} s")
vocab = model.config.vocab_size
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    warm = torch.randint(0, vocab, (1, 64), generator=g).cuda()
    model(warm)
    ids = torch.randint(0, vocab, (1, args.prefill), generator=g).cuda()
    torch.cuda.synchronize()
    t = time.perf_counter()
    model(ids, logits_to_keep=1)
    torch.cuda.synchronize()
    print(f"transformers prefill {args.prefill}: {args.prefill / (time.perf_counter() - t):.1f} tok/s")
    ctx = torch.randint(0, vocab, (1, args.context), generator=g).cuda()
    model.generate(ctx, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(ctx, max_new_tokens=args.decode, min_new_tokens=args.decode, do_sample=False)
    torch.cuda.synchronize()
    el = time.perf_counter() - t
    print(f"transformers generate: {args.decode} tokens after {args.context} in {el:.2f} s = {args.decode / el:.1f} tok/s (includes its prefill)")
