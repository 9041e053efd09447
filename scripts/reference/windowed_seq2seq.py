#!/usr/bin/env python3
"""Write tests/fixtures/seq2seq/transformer_windowed.json: the `transformer` encoder-decoder of
scripts/reference/seq2seq.py (torch.nn.Transformer as in the paper, its committed weights
tests/fixtures/seq2seq/transformer/model.safetensors) run with local attention windows given to
torch as float masks:

    encoder  window ENCODER_WINDOW (even) in every layer, centred: the query at p sees key j iff
             |j - p| <= w / 2 (Longformer's `attention_window`); passed as `src_mask` [S, S]
    decoder  windows DECODER_WINDOWS per layer (None: global), trailing and causal: the query at p
             sees key j iff p - w < j <= p (Mistral's sliding window); each decoder layer is called
             with its own `tgt_mask` [T, T] (nn.TransformerDecoder would give all layers one mask)
    cross-attention stays global.

Each source runs alone (no padding: with a band mask a padded query can see no real key, which
torch turns into NaN rows). Written: the sources, decoder inputs and their logits, and greedy
generation of each source alone (full recompute per step). The script asserts that the windows
matter: the logits move by more than MIN_EFFECT when the windows are dropped, when the encoder's
window is one key wider on each side, and when the decoder's windowed layer is the other one;
and that every greedy step's top1 - top2 margin is >= MIN_MARGIN.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/windowed_seq2seq.py
"""
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import json
import pathlib

import torch
from safetensors.torch import load_file

import seq2seq as S

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "seq2seq" / "transformer"
OUT = ROOT / "tests" / "fixtures" / "seq2seq" / "transformer_windowed.json"

ENCODER_WINDOW = 4
DECODER_WINDOWS = [3, None]
SOURCES = [[5, 17, 42, 8, 99, 23, 61, 7, 30, 12, 54, 3], [9, 71, 26, 44, 15, 88, 6]]
DECODER_INPUTS = [[1, 33, 20, 75, 48, 11, 64, 29, 90], [1, 57, 14, 82, 38, 70]]
MAX_NEW_TOKENS = 12
MIN_EFFECT = 1e-2
MIN_MARGIN = 1e-3


def band(n, window, causal, wider=0):
    """[n, n] float mask: 0 where the query (row) sees the key (column), -inf elsewhere."""
    p = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    visible = j <= p if causal else torch.ones(n, n, dtype=torch.bool)
    if window is not None:
        visible &= (j > p - window) if causal else ((j - p).abs() <= window // 2 + wider)
    return torch.zeros(n, n).masked_fill(~visible, float("-inf"))


@torch.no_grad()
def logits(model, src, tgt, enc_window=ENCODER_WINDOW, dec_windows=DECODER_WINDOWS, wider=0):
    s, t = torch.tensor([src]), torch.tensor([tgt])
    memory = model.transformer.encoder(model.embed(s), mask=band(len(src), enc_window, False, wider))
    x = model.embed(t)
    for layer, w in zip(model.transformer.decoder.layers, dec_windows):
        x = layer(x, memory, tgt_mask=band(len(tgt), w, True))
    return model.generator(model.transformer.decoder.norm(x))[0]


@torch.no_grad()
def greedy(model, src, start):
    tgt, margin = [start], float("inf")
    for _ in range(MAX_NEW_TOKENS):
        last = logits(model, src, tgt)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        tgt.append(int(last.argmax()))
    return tgt[1:], margin


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.backends.mha.set_fastpath_enabled(False)
    config = json.loads((FIXTURE / "config.json").read_text())
    model = S.Seq2Seq(config)
    model.load_state_dict(load_file(str(FIXTURE / "model.safetensors")))
    model.eval()
    start = config["decoder_start_token_id"]
    out = {"generator": "scripts/reference/windowed_seq2seq.py", "torch": torch.__version__,
           "weights": "tests/fixtures/seq2seq/transformer/model.safetensors",
           "encoder_window": ENCODER_WINDOW, "decoder_windows": DECODER_WINDOWS,
           "sources": SOURCES, "decoder_inputs": DECODER_INPUTS, "decoder_logits": [],
           "greedy": [], "effects": {}}
    effects = {"global": [], "encoder_one_wider": [], "decoder_windows_swapped": []}
    margins = []
    for src, tgt in zip(SOURCES, DECODER_INPUTS):
        ref = logits(model, src, tgt)
        out["decoder_logits"].append([[float(v) for v in row] for row in ref])
        alts = {
            "global": logits(model, src, tgt, None, [None, None]),
            "encoder_one_wider": logits(model, src, tgt, wider=1),
            "decoder_windows_swapped": logits(model, src, tgt, dec_windows=DECODER_WINDOWS[::-1]),
        }
        for name, alt in alts.items():
            effects[name].append(float((alt - ref).abs().max()))
        tokens, margin = greedy(model, src, start)
        out["greedy"].append(tokens)
        margins.append(margin)
    out["effects"] = {name: min(v) for name, v in effects.items()}
    out["min_margin"] = min(margins)
    print(json.dumps({k: out[k] for k in ("effects", "min_margin", "greedy")}))
    for name, effect in out["effects"].items():
        assert effect > MIN_EFFECT, (name, effect)
    assert out["min_margin"] >= MIN_MARGIN, out["min_margin"]
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
