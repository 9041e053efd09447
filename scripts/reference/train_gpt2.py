#!/usr/bin/env python3
"""Write tests/fixtures/train/gpt2_step/: one training step of the GPT-2 in tests/fixtures/gpt2/tiny
as transformers computes it, for transformer-runtime/tests/train_gpt2.rs.

    reference.json     the batch (ids, attention mask; the second sequence right-padded), the
                       causal-LM loss of GPT2LMHeadModel(input_ids, attention_mask,
                       labels=ids with padding as -100), and the losses of STEPS AdamW steps on
                       that batch (torch.optim.AdamW, lr 1e-3, weight decay 0.01 on matrices and
                       embeddings, 0 on biases and LayerNorm weights as transformers' Trainer
                       groups them, clip_grad_norm_(1.0) before each step) with the total grad
                       norm before clipping
    grads.safetensors  the gradient of every parameter after the first backward, under its
                       checkpoint name (the head is tied: its gradient is in transformer.wte.weight)
    after.safetensors  every parameter after the STEPS steps

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_gpt2.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "fixtures" / "gpt2" / "tiny"
OUT = ROOT / "tests" / "fixtures" / "train" / "gpt2_step"

SEQ = 9
REAL = [9, 6]          # tokens of each sequence before right padding
PAD = 511              # the checkpoint's <|endoftext|>, used as padding
STEPS = 3
LR, WEIGHT_DECAY, MAX_NORM = 1e-3, 0.01, 1.0


def batch():
    gen = torch.Generator().manual_seed(18)
    ids = torch.randint(0, 511, (len(REAL), SEQ), generator=gen)
    mask = torch.zeros(len(REAL), SEQ, dtype=torch.int64)
    for b, n in enumerate(REAL):
        ids[b, n:] = PAD
        mask[b, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def no_decay(name):
    # transformers' Trainer: no decay for biases and LayerNorm weights.
    return name.endswith(".bias") or ".ln_" in name or name.startswith("transformer.ln_f")


def main():
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(MODEL, attn_implementation="eager").float()
    model.train()  # the checkpoint's dropouts are all 0: train mode is deterministic
    ids, mask, labels = batch()

    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}

    groups = [
        {"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR)
    losses, norms = [float(out.loss.detach())], []
    for step in range(STEPS):
        if step > 0:
            opt.zero_grad()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            losses.append(float(loss.detach()))
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        opt.step()
    after = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(grads, OUT / "grads.safetensors")
    save_file(after, OUT / "after.safetensors")
    reference = {
        "model": "tests/fixtures/gpt2/tiny",
        "ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
        "loss": losses[0], "losses": losses, "grad_norms": norms,
        "lr": LR, "weight_decay": WEIGHT_DECAY, "max_norm": MAX_NORM,
        "no_decay": sorted(n for n, _ in model.named_parameters() if no_decay(n)),
        "torch": torch.__version__,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"loss {losses}, grad norms {norms}")


if __name__ == "__main__":
    main()
