#!/usr/bin/env python3
"""Write fixtures for encoder-decoders whose cross-attention is additive or location-based, under
tests/fixtures/additive_seq2seq/{bahdanau,location,location_sensitive}/, computed with plain
PyTorch on the CPU.

The model is torch.nn.Transformer "as in the paper" (the `weights: torch` scheme of `model!`: a
shared token embedding scaled by sqrt(d_model), fixed sinusoidal positions, post-norm ReLU layers,
a final norm per stack, a `generator` head with bias) whose decoder layers replace
`multihead_attn` by an attention module of scripts/reference/additive.py (imported, not copied):

    transformer.encoder   nn.TransformerEncoder (nn.TransformerEncoderLayer, post-norm, ReLU,
                          batch_first, padding mask) with its final `norm`; memory h = its output
    transformer.decoder.layers.{i}   AdditiveDecoderLayer below:
        x = norm1(x + self_attn(x, x, x, causal mask))          (nn.MultiheadAttention, in_proj)
        x = norm2(x + cross_out(cross_attn(x, h, source mask))) (the kind; context = Σ α_j h_j)
        x = norm3(x + linear2(relu(linear1(x))))
    transformer.decoder.norm; logits = generator(x)

The attention kinds and their conventions are additive.py's (Bahdanau; Luong's "location" with
`max_source` = the model's max_positions, renormalised over each sequence's real positions;
location-sensitive with previous and cumulative alignment channels, recurring over target
positions). Weights: additive.init_weights (sorted-name order from one torch.Generator(seed)).

Each directory holds model.safetensors (the state_dict; nn.Linear layout), config.json (the dims)
and reference.json (teacher-forced cases with the logits of every real target row, greedy
generations alone and batched, the self-checks: float64 drift, wrong-convention sensitivities
from additive.py's variants, greedy margins).

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/additive_seq2seq.py
"""
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import math
import pathlib
import shutil

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import additive as A

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "additive_seq2seq"

CONFIG = dict(
    vocab_size=A.CONFIG["vocab_size"],  # additive.py's ids and cases are reused
    d_model=32,
    memory_dim=32,          # the encoder's width: nn.Transformer has one d_model
    heads=4,
    d_ff=48,
    encoder_layers=2,
    decoder_layers=2,
    attention_dim=16,
    max_positions=32,       # sinusoid rows, and Luong's location logits (max_source)
    filters=4,
    kernel=5,
    norm_eps=1e-5,
    pad_id=A.PAD_ID,
    decoder_start=A.BOS_ID,
)
KINDS = {"bahdanau": 30, "location": 23, "location_sensitive": 1}  # kind -> seed (--search-seeds 60;
# location: the first seed also meeting 3 distinct tokens)
# Post-norm stacks with sharp alignments settle into short cycles: additive.py asks for 5
# distinct tokens per 12-token continuation, this model for 2 (its other criteria unchanged).
MIN_DISTINCT = 2


def sinusoid_table(n_pos, d):
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    ang = pos / np.power(10000.0, np.arange(0, d, 2, dtype=np.float64)[None, :] / d)
    pe = np.zeros((n_pos, d))
    pe[:, 0::2], pe[:, 1::2] = np.sin(ang), np.cos(ang)
    return torch.from_numpy(pe).to(torch.float32)


def attention_config(cfg):
    """The dims additive.py's modules read."""
    return dict(d_model=cfg["d_model"], memory_dim=cfg["memory_dim"],
                attention_dim=cfg["attention_dim"], max_source=cfg["max_positions"],
                filters=cfg["filters"], kernel=cfg["kernel"])


class AdditiveDecoderLayer(nn.Module):
    """nn.TransformerDecoderLayer (post-norm, ReLU) with `multihead_attn` replaced by an additive
    or location attention `cross_attn` and its output projection `cross_out` (memory → d_model)."""

    def __init__(self, cfg, kind, variant):
        super().__init__()
        D, eps = cfg["d_model"], cfg["norm_eps"]
        self.self_attn = nn.MultiheadAttention(D, cfg["heads"], dropout=0.0, batch_first=True)
        self.cross_attn = A.ATTENTION[kind](attention_config(cfg), variant)
        self.cross_out = nn.Linear(cfg["memory_dim"], D)
        self.linear1 = nn.Linear(D, cfg["d_ff"])
        self.linear2 = nn.Linear(cfg["d_ff"], D)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(D, eps=eps) for _ in range(3))

    def forward(self, x, memory, mask):
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=x.dtype)
        x = self.norm1(x + self.self_attn(x, x, x, attn_mask=causal, need_weights=False)[0])
        x = self.norm2(x + self.cross_out(self.cross_attn(x, memory, mask)))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class Decoder(nn.Module):
    def __init__(self, cfg, kind, variant):
        super().__init__()
        self.layers = nn.ModuleList(AdditiveDecoderLayer(cfg, kind, variant)
                                    for _ in range(cfg["decoder_layers"]))
        self.norm = nn.LayerNorm(cfg["d_model"], eps=cfg["norm_eps"])

    def forward(self, x, memory, mask):
        for layer in self.layers:
            x = layer(x, memory, mask)
        return self.norm(x)


class Transformer(nn.Module):
    def __init__(self, cfg, kind, variant):
        super().__init__()
        D = cfg["d_model"]
        layer = nn.TransformerEncoderLayer(D, cfg["heads"], cfg["d_ff"], dropout=0.0,
                                           activation="relu", layer_norm_eps=cfg["norm_eps"],
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, cfg["encoder_layers"],
                                             norm=nn.LayerNorm(D, eps=cfg["norm_eps"]),
                                             enable_nested_tensor=False)
        self.decoder = Decoder(cfg, kind, variant)


class Seq2Seq(nn.Module):
    """State-dict names: embedding.*, transformer.{encoder,decoder}.*, generator.*."""

    def __init__(self, cfg, kind, variant=None):
        super().__init__()
        self.d_model = cfg["d_model"]
        self.embedding = nn.Embedding(cfg["vocab_size"], cfg["d_model"])
        self.transformer = Transformer(cfg, kind, variant)
        self.generator = nn.Linear(cfg["d_model"], cfg["vocab_size"])
        pe = sinusoid_table(cfg["max_positions"], cfg["d_model"])
        self.register_buffer("pe", pe, persistent=False)

    def embed(self, ids):
        return self.embedding(ids) * math.sqrt(self.d_model) + self.pe[: ids.shape[1]].to(
            self.embedding.weight.dtype)

    def forward(self, src, src_mask, tgt):
        memory = self.transformer.encoder(self.embed(src), src_key_padding_mask=~src_mask)
        return self.generator(self.transformer.decoder(self.embed(tgt), memory, src_mask))


def build(kind, seed, variant=None):
    model = Seq2Seq(CONFIG, kind, variant)
    A.init_weights(model, seed)
    return model.eval()


def evaluate(kind, seed):
    """additive.evaluate's measurements, on this model."""
    model = build(kind, seed)
    cases = A.make_cases()
    logits = [A.case_logits(model, c) for c in cases]
    drift = max(float((A.case_logits(build(kind, seed).double(), c) - l.double()).abs().max())
                for c, l in zip(cases, logits))
    alternatives = {}
    for variant in A.VARIANTS[kind]:
        wrong = build(kind, seed, variant)
        alternatives[variant] = max(float((A.case_logits(wrong, c) - l).abs().max())
                                    for c, l in zip(cases, logits))
    sources = A.generation_sources()
    alone, margins = [], []
    for s in sources:
        tokens, m = A.greedy(model, [s], A.MAX_NEW_TOKENS)
        alone.append(tokens[0])
        margins.append(m)
    batched, m = A.greedy(model, sources, A.MAX_NEW_TOKENS)
    margins.append(m)
    return dict(model=model, cases=cases, logits=logits, drift=drift, alternatives=alternatives,
                sources=sources, alone=alone, batched=batched, margin=min(margins))


NOTES = {
    "model": __doc__.split("The attention kinds")[0].split("a `generator` head with bias)")[1]
    .strip(),
    "embeddings": "x = embedding[ids] * sqrt(d_model) + PE[0..S] (sinusoidal, not saved), for "
                  "sources and targets alike.",
    "generation": f"greedy from [decoder_start]: each step recomputes the whole target prefix "
                  f"and appends argmax of the last row; {A.MAX_NEW_TOKENS} new tokens, no stop "
                  "token; sources alone and as one right-padded batch (identical tokens).",
}


def check(kind, res):
    """additive.check with MIN_DISTINCT of this model."""
    saved, A.MIN_DISTINCT = A.MIN_DISTINCT, MIN_DISTINCT
    try:
        A.check(kind, res)
    finally:
        A.MIN_DISTINCT = saved


def acceptable(kind, res):
    try:
        check(kind, res)
        return True
    except AssertionError:
        return False


def write(out_root, threads):
    out_root.mkdir(parents=True, exist_ok=True)
    for kind, seed in KINDS.items():
        res = evaluate(kind, seed)
        print(f"== {kind} (seed {seed})")
        print(f"  float64 drift {res['drift']:.3e}  greedy margin {res['margin']:.3e}")
        print(f"  wrong conventions (max |d logits|): {json.dumps(res['alternatives'])}")
        print(f"  greedy alone {res['alone']}")
        check(kind, res)
        out_dir = out_root / kind
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        state = {k: v.contiguous() for k, v in res["model"].state_dict().items()}
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        (out_dir / "config.json").write_text(json.dumps(dict(CONFIG, kind=kind), indent=2) + "\n")
        with safe_open(out_dir / "model.safetensors", "np") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}
        doc = {
            "generator": "scripts/reference/additive_seq2seq.py",
            "kind": kind,
            "versions": {"torch": torch.__version__, "safetensors": safetensors.__version__,
                         "numpy": np.__version__},
            "seed": seed,
            "torch_threads": threads,
            "init": A.init_weights.__doc__,
            "notes": dict(NOTES, attention=A.NOTES[kind]),
            "cases": [dict(name=c["name"], sources=c["sources"], targets=c["targets"],
                           logits=A.f32_list(l.numpy()))
                      for c, l in zip(res["cases"], res["logits"])],
            "generation": {"sources": res["sources"], "max_new_tokens": A.MAX_NEW_TOKENS,
                           "alone": res["alone"], "batched": res["batched"],
                           "min_margin": res["margin"]},
            "float64_max_abs_diff": res["drift"],
            "alternatives": {"what": "max |logits with one convention changed - logits| over "
                                     "the teacher-forced cases (torch, float32)",
                             **res["alternatives"]},
            "files": {"model.safetensors": {"sha256": A.sha256(out_dir / "model.safetensors"),
                                            "tensors": shapes}},
        }
        (out_dir / "reference.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        for f in out_dir.iterdir():
            f.chmod(0o644)  # save_file leaves 0600
        total = sum(f.stat().st_size for f in out_dir.iterdir())
        print(f"  {total} bytes")
        assert total < 300_000, total


def search_seeds(n):
    for kind in KINDS:
        for seed in range(n):
            res = evaluate(kind, seed)
            if acceptable(kind, res):
                print(f"{kind}: seed {seed} (margin {res['margin']:.3e}, alone {res['alone']})")
                break
        else:
            print(f"{kind}: no seed in 0..{n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--search-seeds", type=int, metavar="N", default=0)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.backends.mha.set_fastpath_enabled(False)
    if args.search_seeds:
        search_seeds(args.search_seeds)
    else:
        write(pathlib.Path(args.out), args.threads)


if __name__ == "__main__":
    main()
