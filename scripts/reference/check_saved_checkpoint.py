#!/usr/bin/env python3
"""Loads checkpoint directories a generated trainer wrote (`save_pretrained`) in transformers and
compares the loss transformers computes with ours on the same batch.

    TRAINED_DIR=/tmp/trained cargo test --test train_generated
    .cache/venv/bin/python scripts/reference/check_saved_checkpoint.py /tmp/trained/*

Each directory holds model.safetensors, config.json and check.json: the batch (input ids,
attention mask, token types when any), the labels as transformers takes them (causal LM: the ids
with -100 at padding, shifted by the model; masked LM: -100 where nothing is masked) and our loss.
transformers must load the directory with no missing or unexpected tensor, through the class its
config names, and its loss must agree within 1e-5 relative.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch
import transformers

for directory in sys.argv[1:]:
    config = json.load(open(os.path.join(directory, "config.json")))
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(directory, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"{directory}: transformers reports {problems}"
    check = json.load(open(os.path.join(directory, "check.json")))
    inputs = {k: torch.tensor(check[k]) for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in check}
    with torch.no_grad():
        loss = model.eval()(**inputs).loss.item()
    error = abs(loss - check["loss"]) / abs(loss)
    print(f"{directory}: {cls.__name__} loaded; loss {loss:.7f} vs ours {check['loss']:.7f} (relative {error:.1e})")
    assert error <= 1e-5, error
