#!/usr/bin/env python3
"""Time Hugging Face GPT-2 (small shape: 12 layers, n_embd 768, 12 heads, vocab 50257,
n_positions 1024; random weights from seed 0, nothing is downloaded or saved) on the CPU.

Workloads (deterministic ids (i*7+3) % vocab, batch 1):
  prefill128  one forward pass over 128 tokens, building the KV cache, with logits for the
              last position only (logits_to_keep=1, which is what generate's prefill does);
              warm-up 1, median of 5 runs
  decode      model.generate(16-token prompt, greedy, max_new_tokens=128, min_new_tokens=128);
              tokens_per_s = 128 / median wall time of the whole call (includes the 16-token
              prefill); warm-up 1, median of 3 runs

Prints to stdout:
    torch prefill128 median_ms=<float>
    torch decode tokens_per_s=<float>
Everything else goes to stderr.

    .cache/venv/bin/python scripts/reference/gpt2_bench.py --threads 2
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import statistics
import sys
import time

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB = 50257
PROMPT_LEN = 16
NEW_TOKENS = 128
PREFILL_LEN = 128


def ids(n, vocab=VOCAB):
    """Same deterministic ids as the Rust bench."""
    return torch.tensor([[(i * 7 + 3) % vocab for i in range(n)]], dtype=torch.long)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="HF attention implementation (sdpa is the default when loading)")
    ap.add_argument("--prefill-warmup", type=int, default=1)
    ap.add_argument("--prefill-runs", type=int, default=5)
    ap.add_argument("--decode-warmup", type=int, default=1)
    ap.add_argument("--decode-runs", type=int, default=3)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=VOCAB, n_positions=1024,
                        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    config._attn_implementation = args.attn
    model = GPT2LMHeadModel(config).eval().float()
    model.generation_config.eos_token_id = None
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads={torch.get_num_threads()}, attn={model.config._attn_implementation}, "
          f"params={sum(p.numel() for p in model.parameters()) / 1e6:.1f}M", file=sys.stderr)

    # os.getloadavg() and the process's CPU time / wall time are printed to stderr: on a
    # machine shared with other jobs (load above the thread count), torch's thread pool is
    # oversubscribed and the numbers are not meaningful.
    print(f"  loadavg before: {os.getloadavg()}", file=sys.stderr)
    cpu0, wall0 = time.process_time(), time.perf_counter()

    # Prefill: one 128-token forward.
    x = ids(PREFILL_LEN)
    times = []
    with torch.inference_mode():
        for k in range(args.prefill_warmup + args.prefill_runs):
            t0 = time.perf_counter()
            out = model(x, use_cache=True, logits_to_keep=1)
            t1 = time.perf_counter()
            assert out.logits.shape == (1, 1, VOCAB), out.logits.shape
            if k >= args.prefill_warmup:
                times.append((t1 - t0) * 1e3)
    print(f"  prefill{PREFILL_LEN}: min={min(times):.3f} ms max={max(times):.3f} ms",
          file=sys.stderr)
    print(f"torch prefill{PREFILL_LEN} median_ms={statistics.median(times):.3f}", flush=True)

    # Decode: greedy generate of exactly NEW_TOKENS tokens after a 16-token prompt.
    p = ids(PROMPT_LEN)
    times = []
    with torch.inference_mode():
        for k in range(args.decode_warmup + args.decode_runs):
            t0 = time.perf_counter()
            seq = model.generate(p, attention_mask=torch.ones_like(p), do_sample=False,
                                 num_beams=1, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, pad_token_id=VOCAB - 1,
                                 eos_token_id=None)
            t1 = time.perf_counter()
            assert seq.shape == (1, PROMPT_LEN + NEW_TOKENS), seq.shape
            if k >= args.decode_warmup:
                times.append(t1 - t0)
    med = statistics.median(times)
    print(f"  decode: {NEW_TOKENS} tokens, min={min(times) * 1e3:.1f} ms "
          f"max={max(times) * 1e3:.1f} ms median={med * 1e3:.1f} ms", file=sys.stderr)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"  loadavg after: {os.getloadavg()}; process cpu/wall = {cpu / wall:.2f} "
          f"(ideal ~{args.threads})", file=sys.stderr)
    print(f"torch decode tokens_per_s={NEW_TOKENS / med:.3f}", flush=True)


if __name__ == "__main__":
    main()
