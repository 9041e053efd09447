#!/usr/bin/env python3
"""Loads a checkpoint directory a generated trainer wrote (`save_pretrained`) in transformers and
compares its logits with the ones our inference model computes for the same ids.

    TRAINED_GPT2_DIR=/tmp/trained_gpt2 cargo test --test train_generated saves
    .cache/venv/bin/python scripts/reference/check_saved_checkpoint.py /tmp/trained_gpt2

The test leaves the directory (model.safetensors, config.json) and `logits.json`: the ids it ran
and our model's logits. transformers must load the directory with no missing or unexpected tensor,
and its logits must agree within 1e-4.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from transformers import AutoModelForCausalLM

directory = sys.argv[1]
model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
problems = {k: v for k, v in info.items() if v}
assert not problems, f"transformers reports {problems}"
ours = json.load(open(os.path.join(directory, "logits.json")))
ids = torch.tensor(ours["ids"])
mask = torch.tensor(ours["attention_mask"])
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=mask).logits
theirs = logits.reshape(-1, logits.shape[-1])
ours_logits = torch.tensor(ours["logits"])
valid = mask.reshape(-1).bool()
diff = (theirs[valid] - ours_logits[valid]).abs().max().item()
print(f"{type(model).__name__} loaded from {directory}: max |Δ logits| {diff:.3e} over {int(valid.sum())} rows")
assert diff <= 1e-4, diff
