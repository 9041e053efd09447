#!/usr/bin/env python3
"""Write tests/fixtures/windowed_minilm.json: all-MiniLM-L6-v2 (real weights) run by Hugging Face
transformers' BertModel with Longformer-style *centred* local attention or per-layer block-sparse
layouts, given to BertModel as a 3-D attention mask `[batch, query, key]`, so the reference is HF's
own attention code.

Centred window w (even): the query at index p sees key j iff j is a real token and |j - p| <= w/2
(Longformer's `attention_window = w`: w/2 keys on either side). Block-sparse (Sparse Transformer,
bidirectional, blocks of 64 positions, I = p // 64, J = j // 64): `strided` stride l sees J iff
|I - J| < l or |I - J| % l == 0; `fixed` stride l, summary c sees J iff J // l == I // l or
J % l >= l - c. Configs:
    window16      every layer windowed (w = 16)
    mixed         layers typed local / global alternately: [16, global, 16, global, 16, global]
    sparse_mixed  [strided 2, dense, fixed 2 summary 1, dense, strided 2, dense] (GPT-3's
                  alternating dense and sparse layers)

For each config: the long sentence (253 tokens) and two short ones alone, and the three as one
right-padded batch. Stored per sequence: the mean-pooled, L2-normalised embedding (the
sentence-transformers pipeline) and the last hidden state at a handful of positions (start, both
sides of window edges, the middle, the end). The script asserts that the window matters (the
unwindowed model, a window one key wider on each side, and the mixed pattern shifted by one layer
all give clearly different outputs), so the parity test pins the exact rule.

Run through scripts/setup-reference.sh's venv (the model comes from scripts/fetch-model.sh):
    .cache/venv/bin/python scripts/reference/windowed_minilm.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import pathlib
import sys

import numpy as np
import torch
import transformers
from transformers import BertModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / ".cache" / "models" / "all-MiniLM-L6-v2"
IDS_FROM = ROOT / "tests" / "fixtures" / "minilm_reference.json"
OUT = ROOT / "tests" / "fixtures" / "windowed_minilm.json"

SENTENCES = [11, 10, 6]  # indices into minilm_reference.json: 253, 45 and 35 tokens
POSITIONS = [0, 1, 7, 8, 9, 16, 17, 30, 100, 126, 200, 243, 244, 251, 252]
CONFIGS = {
    "window16": [16] * 6,
    "mixed": [16, None, 16, None, 16, None],
}
BLOCK = 64
STRIDED = ("strided", 2, 0)
FIXED = ("fixed", 2, 1)
SPARSE_CONFIGS = {
    "sparse_mixed": [STRIDED, None, FIXED, None, STRIDED, None],
}


def block_sees(pattern, i, j):
    """The Sparse Transformer's layouts over blocks, bidirectional."""
    kind, stride, summary = pattern
    if kind == "strided":
        d = abs(i - j)
        return d < stride or d % stride == 0
    return j // stride == i // stride or j % stride >= stride - summary


def layout_mask(lengths, width, pattern):
    """[batch, width, width] of 1 (visible) / 0: real keys in blocks the pattern lets the query's
    block see (None: every real key)."""
    p = np.arange(width)[:, None]
    j = np.arange(width)[None, :]
    out = []
    for n in lengths:
        real = (j < n) & (p >= 0)
        if pattern is not None:
            sees = np.vectorize(lambda a, b: block_sees(pattern, a, b))(p // BLOCK, j // BLOCK)
            real = real & sees
        out.append(real.astype(np.int64))
    return torch.tensor(np.stack(out))


def band_mask(lengths, width, window, one_wider=False):
    """[batch, width, width] of 1 (visible) / 0: real keys within the centred window."""
    p = np.arange(width)[:, None]
    j = np.arange(width)[None, :]
    out = []
    for n in lengths:
        real = (j < n) & (p >= 0)
        if window is not None:
            reach = window // 2 + (1 if one_wider else 0)
            real = real & (np.abs(j - p) <= reach)
        out.append(real.astype(np.int64))
    return torch.tensor(np.stack(out))


def run(model, ids_list, windows, one_wider=False):
    lengths = [len(ids) for ids in ids_list]
    width = max(lengths)
    return run_masks(model, ids_list, [band_mask(lengths, width, w, one_wider) for w in windows])


def run_sparse(model, ids_list, patterns):
    lengths = [len(ids) for ids in ids_list]
    width = max(lengths)
    return run_masks(model, ids_list, [layout_mask(lengths, width, p) for p in patterns])


@torch.inference_mode()
def run_masks(model, ids_list, layer_masks):
    """Each layer of BertModel attends through its own [batch, query, key] mask."""
    lengths = [len(ids) for ids in ids_list]
    width = max(lengths)
    ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in ids_list])
    types = torch.zeros_like(ids)
    # BertModel applies one mask to every layer; a hook swaps in each layer's own extended mask
    # (HF's get_extended_attention_mask: (1 - mask) * finfo.min, shape [batch, 1, q, k]).
    hooks = []
    for layer, mask in zip(model.encoder.layer, layer_masks):
        ext = model.get_extended_attention_mask(mask, ids.shape)

        def swap(module, args, kwargs, ext=ext):
            # BertEncoder passes the mask positionally (hidden_states, attention_mask, ...).
            if len(args) > 1:
                args = (args[0], ext) + tuple(args[2:])
            else:
                kwargs["attention_mask"] = ext
            return args, kwargs

        hooks.append(layer.register_forward_pre_hook(swap, with_kwargs=True))
    try:
        first = layer_masks[0]
        hidden = model(input_ids=ids, token_type_ids=types, attention_mask=first).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    out = []
    for b, n in enumerate(lengths):
        h = hidden[b, :n]
        pooled = h.mean(0)
        out.append((h.numpy(), (pooled / pooled.norm()).numpy()))
    return out


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    if not (MODEL_DIR / "model.safetensors").is_file():
        sys.exit(f"model not found in {MODEL_DIR}; run scripts/fetch-model.sh first")
    model = BertModel.from_pretrained(MODEL_DIR, attn_implementation="eager", add_pooling_layer=False).eval()
    reference = json.loads(IDS_FROM.read_text())
    ids_list = [reference["sentences"][i]["input_ids"] for i in SENTENCES]

    # The hook is exercised: with the same window everywhere it must equal the plain 3-D mask.
    with torch.inference_mode():
        lengths = [len(ids) for ids in ids_list]
        width = max(lengths)
        ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in ids_list])
        plain = model(input_ids=ids, token_type_ids=torch.zeros_like(ids),
                      attention_mask=band_mask(lengths, width, 16)).last_hidden_state
    hooked = run(model, ids_list, [16] * 6)
    hook_diff = max(float(np.abs(plain[b, :n].numpy() - hooked[b][0]).max())
                    for b, n in enumerate(lengths))
    assert hook_diff == 0.0, hook_diff

    doc = {
        "generator": "scripts/reference/windowed_minilm.py",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (scripts/fetch-model.sh), BertModel, "
                 "attn_implementation=eager, float32, 1 thread",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
        "rule": "query p sees key j iff j is a real token and |j - p| <= window / 2 (Longformer's "
                "attention_window); a `null` window is global attention; block-sparse layouts as in "
                "the module docstring; given to BertModel as a 3-D [batch, query, key] mask, per "
                "layer through a forward pre-hook",
        "pipeline": "last_hidden_state -> mean over real tokens -> L2 normalise",
        "positions": POSITIONS,
        "configs": {},
    }
    unwindowed = run(model, ids_list, [None] * 6)
    # The per-layer hook really swaps masks: the mixed pattern is neither all-local nor all-global.
    mixed = run(model, [ids_list[0]], CONFIGS["mixed"])[0][0]
    assert np.abs(mixed - hooked[0][0]).max() > 1e-2 and np.abs(mixed - unwindowed[0][0]).max() > 1e-2
    for name, windows in CONFIGS.items():
        alone = [run(model, [ids], windows)[0] for ids in ids_list]
        batched = run(model, ids_list, windows)
        batch_diff = max(float(np.abs(a[0] - b[0]).max()) for a, b in zip(alone, batched))
        assert batch_diff < 1e-4, batch_diff
        # The rule matters: no window, one key wider, and the pattern shifted by a layer differ.
        long_hidden = alone[0][0]
        wider = run(model, [ids_list[0]], windows, one_wider=True)[0][0]
        shifted = run(model, [ids_list[0]], windows[1:] + windows[:1])[0][0]
        checks = {
            "max_abs_diff_no_window": float(np.abs(long_hidden - unwindowed[0][0]).max()),
            "max_abs_diff_one_key_wider": float(np.abs(long_hidden - wider).max()),
            "max_abs_diff_pattern_shifted_by_a_layer": (
                None if len(set(windows)) == 1 else float(np.abs(long_hidden - shifted).max())),
            "max_abs_diff_alone_vs_batched": batch_diff,
        }
        assert checks["max_abs_diff_no_window"] > 1e-2, checks
        assert checks["max_abs_diff_one_key_wider"] > 1e-2, checks
        if checks["max_abs_diff_pattern_shifted_by_a_layer"] is not None:
            assert checks["max_abs_diff_pattern_shifted_by_a_layer"] > 1e-2, checks
        print(f"{name}: {checks}")
        sequences = []
        for ids, (hidden, embedding) in zip(ids_list, alone):
            sequences.append({
                "input_ids": ids,
                "embedding": [float(x) for x in embedding],
                "hidden": {str(p): [float(x) for x in hidden[p]] for p in POSITIONS if p < len(ids)},
            })
        doc["configs"][name] = {"windows": windows, "checks": checks, "sequences": sequences}
    for name, patterns in SPARSE_CONFIGS.items():
        alone = [run_sparse(model, [ids], patterns)[0] for ids in ids_list]
        batched = run_sparse(model, ids_list, patterns)
        batch_diff = max(float(np.abs(a[0] - b[0]).max()) for a, b in zip(alone, batched))
        assert batch_diff < 1e-4, batch_diff
        # The layouts matter: dense everywhere, the mix shifted by a layer, strided and fixed
        # swapped, and one sparse layer everywhere all differ on the long sentence.
        long_hidden = alone[0][0]
        swapped = [{STRIDED: FIXED, FIXED: STRIDED}.get(p) for p in patterns]
        checks = {
            "max_abs_diff_dense": float(np.abs(long_hidden - unwindowed[0][0]).max()),
            "max_abs_diff_pattern_shifted_by_a_layer": float(np.abs(
                long_hidden - run_sparse(model, [ids_list[0]], patterns[1:] + patterns[:1])[0][0]).max()),
            "max_abs_diff_strided_fixed_swapped": float(np.abs(
                long_hidden - run_sparse(model, [ids_list[0]], swapped)[0][0]).max()),
            "max_abs_diff_strided_every_layer": float(np.abs(
                long_hidden - run_sparse(model, [ids_list[0]], [STRIDED] * 6)[0][0]).max()),
            "max_abs_diff_alone_vs_batched": batch_diff,
        }
        for key, value in checks.items():
            assert key == "max_abs_diff_alone_vs_batched" or value > 1e-2, checks
        print(f"{name}: {checks}")
        sequences = []
        for ids, (hidden, embedding) in zip(ids_list, alone):
            sequences.append({
                "input_ids": ids,
                "embedding": [float(x) for x in embedding],
                "hidden": {str(p): [float(x) for x in hidden[p]] for p in POSITIONS if p < len(ids)},
            })
        layers = [None if p is None else {"pattern": p[0], "block": BLOCK, "stride": p[1],
                                          "summary": p[2]} for p in patterns]
        doc["configs"][name] = {"layouts": layers, "checks": checks, "sequences": sequences}
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
