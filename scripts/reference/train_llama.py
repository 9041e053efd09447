#!/usr/bin/env python3
"""Write tests/fixtures/train/llama_step/: one training step, then STEPS AdamW steps, of the LLaMA in
tests/fixtures/llama/llama (2 layers, width 64, 4 heads / 2 KV heads, SwiGLU, RMSNorm, RoPE,
untied head, vocab 320) as transformers computes them, for a Rust test written like
transformer-runtime/tests/train_gpt2.rs.

    reference.json     the batch (ids, attention mask; the second sequence right-padded with
                       PAD), labels (the ids with padding as -100; LlamaForCausalLM shifts them
                       itself), the causal-LM loss of LlamaForCausalLM(input_ids,
                       attention_mask, labels) (mean over the 13 predicted tokens), and the
                       losses of STEPS steps on that batch, each loss taken before its step
                       (losses[0] == loss), with the total gradient norm before clipping
                       (clip_grad_norm_(MAX_NORM), then torch.optim.AdamW with BETAS, EPS, LR,
                       weight decay WEIGHT_DECAY on the 2-D weights (projections, embed_tokens,
                       lm_head) and 0 on the RMSNorm weights: the names of each group are
                       listed under `decay` and `no_decay`), every hyper-parameter, and
                       `final_loss`, the loss of the weights in after.safetensors
    grads.safetensors  the gradient of every parameter after the first backward, under its
                       checkpoint name (lm_head.weight and model.embed_tokens.weight are
                       separate tensors: the head is untied)
    after.safetensors  every parameter after the STEPS steps

Positions are 0..SEQ-1 in both sequences (no position_ids are passed; right padding keeps every
real token at its own index); the padded keys are masked, the padded queries are not (their
outputs carry no loss, so they get no gradient). attention_dropout is 0 and there is no other
dropout: train mode is deterministic.

Tolerances a Rust test should use: the loss within 1e-5 relative; each gradient's max|Δ| at most
1e-4 of that tensor's max|g|; the STEPS losses and grad norms within 1e-4 relative, and the final
weights within 1e-4 (as updates after − before, on the elements whose first gradient stands above
f32 rounding, as train_gpt2.rs compares them: Adam turns rounding noise into ±lr steps). Measured
against a float64 run of this script: losses 9e-7 and grad norms 2.5e-6 relative, gradients 3e-6
of max|g|, final weights 2.6e-5 absolute.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_llama.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import pathlib

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "fixtures" / "llama" / "llama"
OUT = ROOT / "tests" / "fixtures" / "train" / "llama_step"

SEQ = 9
REAL = [9, 5]          # tokens of each sequence before right padding
PAD = 0                # the checkpoint has no pad token; 0 as llama.py pads (ids are drawn from [3, vocab))
FIRST_ID = 3           # 0/1/2 = pad/bos/eos
SEED = 18
STEPS = 10
LR, BETAS, EPS, WEIGHT_DECAY, MAX_NORM = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0


def batch(vocab):
    gen = torch.Generator().manual_seed(SEED)
    ids = torch.randint(FIRST_ID, vocab, (len(REAL), SEQ), generator=gen)
    mask = torch.zeros(len(REAL), SEQ, dtype=torch.int64)
    for b, n in enumerate(REAL):
        ids[b, n:] = PAD
        mask[b, :n] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def no_decay(param):
    # Weight decay on matrices (2-D) only: here that leaves out exactly the RMSNorm weights.
    return param.dim() < 2


def main():
    torch.set_num_threads(1)  # the reductions' order, so that a re-run writes the same bytes
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(MODEL, attn_implementation="eager").float()
    model.train()  # attention_dropout is 0 and nothing else drops: train mode is deterministic
    ids, mask, labels = batch(model.config.vocab_size)

    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}

    params = list(model.named_parameters())
    groups = [
        {"params": [p for _, p in params if not no_decay(p)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for _, p in params if no_decay(p)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
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
    with torch.no_grad():
        final_loss = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(grads, OUT / "grads.safetensors")
    save_file(after, OUT / "after.safetensors")
    reference = {
        "model": "tests/fixtures/llama/llama",
        "ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
        "pad": PAD, "seed": SEED,
        "loss": losses[0], "losses": losses, "grad_norms": norms, "final_loss": final_loss,
        "steps": STEPS, "lr": LR, "betas": list(BETAS), "eps": EPS,
        "weight_decay": WEIGHT_DECAY, "max_norm": MAX_NORM,
        "decay": sorted(n for n, p in params if not no_decay(p)),
        "no_decay": sorted(n for n, p in params if no_decay(p)),
        "torch": torch.__version__, "transformers": transformers.__version__, "torch_threads": 1,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"loss {losses}, grad norms {norms}, final loss {final_loss}")


if __name__ == "__main__":
    main()
