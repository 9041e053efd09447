#!/usr/bin/env python3
"""Times training steps in PyTorch eager on the two workloads of examples/bench_train.rs, for
scripts/bench-train-big.sh (issue #18).

- `gpt2`: GPT2LMHeadModel with GPT-2 small's config (124M, tied head), 4 × 64 random tokens per
  step, `labels=input_ids` (next-token cross-entropy).
- `minilm_mlm`: BertForMaskedLM with all-MiniLM-L6-v2's dims (6 layers, 384 wide, 12 heads, inner
  1536, vocabulary 30522, 512 positions, GELU (erf), eps 1e-12), 32 × 128 tokens per step
  (`[CLS]`, 126 random ids, `[SEP]`), 15 % of the other positions labelled (80 % → [MASK],
  10 % random, 10 % kept, as DataCollatorForLanguageModeling), -100 elsewhere.

Random init (the config's `_init_weights`), every dropout 0 (as ours and llm.c), the model's
default attention implementation. Each step: zero_grad, loss, backward,
clip_grad_norm_(1.0), torch.optim.AdamW(lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 0:
llm.c's values) with torch's default CPU implementation. `--warmup` untimed steps, then `--steps`
timed ones. Prints `tokens/s X` and `peak_rss_mb Y` (VmHWM of this process after the last step).

    .cache/venv/bin/python scripts/reference/train_bench_big.py --model gpt2 --threads 1 --steps 5
"""
import argparse
import os
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

parser = argparse.ArgumentParser()
parser.add_argument("--model", choices=["gpt2", "minilm_mlm"], required=True)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

BATCHES = 4  # distinct random batches, cycled through
CLS, SEP, MASK = 101, 102, 103

if args.model == "gpt2":
    B, T = 4, 64
    config = GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=3072,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config).train()
    batches = []
    for _ in range(BATCHES):
        ids = torch.randint(0, config.vocab_size, (B, T))
        batches.append({"input_ids": ids, "labels": ids})
else:
    B, T = 32, 128
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
        layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config).train()
    batches = []
    for _ in range(BATCHES):
        ids = torch.randint(999, config.vocab_size, (B, T))
        ids[:, 0], ids[:, -1] = CLS, SEP
        chosen = torch.rand(B, T) < 0.15
        chosen[:, 0] = chosen[:, -1] = False
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        u = torch.rand(B, T)
        ids = torch.where(chosen & (u < 0.8), torch.full_like(ids, MASK), ids)
        ids = torch.where(chosen & (u >= 0.8) & (u < 0.9), torch.randint(0, config.vocab_size, (B, T)), ids)
        batches.append({"input_ids": ids, "labels": labels})

optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def step(i):
    optimizer.zero_grad(set_to_none=True)
    loss = model(**batches[i % BATCHES]).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


for i in range(args.warmup):
    step(i)
start = time.perf_counter()
for i in range(args.warmup, args.warmup + args.steps):
    step(i)
seconds = time.perf_counter() - start
print(f"tokens/s {args.steps * B * T / seconds:.1f}")
print(f"peak_rss_mb {peak_rss_mb():.1f}")
