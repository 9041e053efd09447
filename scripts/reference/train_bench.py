#!/usr/bin/env python3
"""Times training steps of examples/train_gpt.rs's ByteGpt in PyTorch, for scripts/bench-train.sh.

The same model as the example's declaration — GPT2LMHeadModel with vocabulary 256, 128 positions,
width 128, 4 layers of 4 heads, inner width 512, tied head, no dropout — the same batch shape
(16 sequences of 128 bytes), the same loss (next-token cross-entropy), clip_grad_norm_(1.0) and
torch.optim.AdamW (betas 0.9/0.95, weight decay 0.1). Prints one line: `tokens/s <value>`.

    .cache/venv/bin/python scripts/reference/train_bench.py --steps 30 --threads 2
"""
import argparse
import os
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from transformers import GPT2Config, GPT2LMHeadModel

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--batch", type=int, default=16)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

SEQ = 128
config = GPT2Config(
    vocab_size=256, n_positions=SEQ, n_embd=128, n_layer=4, n_head=4, n_inner=512,
    activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    layer_norm_epsilon=1e-5, tie_word_embeddings=True,
)
model = GPT2LMHeadModel(config).train()
decay = [p for n, p in model.named_parameters() if p.dim() == 2]
no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
    lr=2e-3, betas=(0.9, 0.95), eps=1e-8,
)
ids = torch.randint(0, 256, (args.batch, SEQ))


def step():
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(args.steps):
    step()
seconds = time.perf_counter() - start
print(f"tokens/s {args.steps * args.batch * SEQ / seconds:.1f}")
