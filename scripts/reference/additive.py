#!/usr/bin/env python3
"""Write additive / location attention reference fixtures under tests/fixtures/additive/{bahdanau,
location,location_sensitive}/, computed with plain PyTorch on the CPU.

No library ships these as transformer sublayers, so each fixture is a small encoder-decoder
written in this file (Seq2Seq): a one-layer transformer encoder and a one-layer pre-norm decoder
whose cross-attention sublayer is the attention kind under test. The Rust side
(transformer-runtime/tests/additive_parity.rs) assembles the same model from runtime pieces.

Each directory holds:
    model.safetensors  the module's state_dict (float32, nn.Linear layout [out, in]); random
                       weights from a fixed seed (see init_weights)
    config.json        the dims and the kind
    reference.json     teacher-forced cases (source ids, target ids, logits of the real target
                       rows), greedy generations (each source alone and both as one padded
                       batch), versions, `notes` spelling out every convention, and the
                       self-check numbers (float64 drift, wrong-convention sensitivities, greedy
                       margins)

The model (dims in CONFIG; M = encoder width, D = decoder width, A = attention width):
    encoder: x = embed(src) + pos[0..S]; one nn.TransformerEncoderLayer (post-norm, ReLU,
             2 heads, padding mask); memory h = x  [S, M]
    decoder: x = embed(tgt) + pos[0..T]
             x = x + o_proj(causal_self_attention(q/k/v_proj(self_norm(x))))   (2 heads)
             x = x + cross_out(context(cross_norm(x), h))                       (the kind)
             x = x + fc_out(relu(fc_in(ffn_norm(x))))
             logits = lm_head(final_norm(x))                   (untied head, no bias)
The cross-attention kinds (s = the query row cross_norm(x_t), masks from the source padding):
    bahdanau            e_j = energy · tanh(query(s) + key(h_j))   (key has the bias b)
                        α = softmax over the sequence's real source rows; c = Σ α_j h_j
    location            Luong's "location" scoring: α = softmax(location(s)) where location is
                        nn.Linear(D, max_source) (with bias), restricted to the sequence's real
                        source positions j < len and renormalised over them (the logits of
                        j >= len are dropped, not zeroed after a softmax); c = Σ α_j h_j
    location_sensitive  Chorowski et al. 2015 / Tacotron 2: f = location_conv(α_cat), a Conv1d
                        over source positions, in_channels 2 = [α_{t-1}, Σ_{i<t} α_i] (previous
                        and cumulative alignment), `filters` out channels, odd `kernel`, zero
                        padding (kernel-1)/2 on both sides (centred), no bias;
                        e_j = energy · tanh(query(s) + key(h_j) + location_dense(f_j));
                        α_t = masked softmax; α_{-1} = cumulative = 0 before the first target
                        position; after position t: prev = α_t, cum += α_t.  The alignment recurs
                        over target positions, so the teacher-forced forward is a loop over t.
    Values: the context is the raw memory rows (no value projection; cross_out follows it).
    Constant terms that cancel in the softmax (a bias on `energy`) are not parameters.

Self-checks (asserted; numbers in reference.json):
  * the float64 copy of the module matches the float32 logits to <= MAX_F32_DRIFT;
  * plausible wrong conventions move the batched case's logits by > MIN_ALTERNATIVE:
      bahdanau: no source mask; no tanh;
      location: softmax over all max_source logits without renormalising over the real
                positions; renormalising over the batch's padded length instead of each
                sequence's length;
      location_sensitive: alignment not carried (α_{t-1} = 0 at every step); conv not
                centred (all padding on the left); no cumulative channel; cumulative lagging
                one step (updated after the conv of the next step would read it);
  * greedy generation of MAX_NEW_TOKENS from BOS gives the same tokens for each source alone
    and in the padded batch, and every step's top1 - top2 logit margin is >= MIN_MARGIN.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/additive.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import hashlib
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

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "additive"

MAX_NEW_TOKENS = 12
MIN_MARGIN = 1e-2        # min top1 - top2 logit over greedy steps (parity needs >> 1e-4)
MIN_DISTINCT = 5        # distinct tokens in each greedy continuation
MAX_F32_DRIFT = 2e-5     # max |float32 logits - float64 logits|
MIN_ALTERNATIVE = 1e-2   # a wrong convention must move the logits by more than this
INPUT_SEED = 20250601    # numpy default_rng seed of the ids
PAD_ID, BOS_ID, FIRST_ID = 0, 1, 3

CONFIG = dict(
    vocab_size=48,
    memory_dim=24,        # M: encoder width
    d_model=32,           # D: decoder width
    encoder_heads=2,
    decoder_heads=2,
    d_ff=64,
    attention_dim=16,     # A: width of the additive scoring MLP
    max_source=16,        # rows of the encoder position table and of Luong's location layer
    max_target=32,
    filters=4,
    kernel=5,
    norm_eps=1e-5,
    pad_id=PAD_ID,
    bos_id=BOS_ID,
)
GAIN = {"query": 3.0, "key": 3.0, "energy": 3.0, "location": 3.0, "location_conv": 3.0,
        "location_dense": 3.0, "cross_out": 3.0, "lm_head": 3.0}
KINDS = {"bahdanau": 0, "location": 1, "location_sensitive": 3}  # kind -> weight seed (--search-seeds 40)

# Teacher-forced cases: (name, source lengths, target lengths); targets start with BOS.
CASES = [("single", [9], [10]), ("padded_batch", [11, 6], [8, 12])]
# Greedy generation: each source alone, then both as one padded batch.
GENERATION_SOURCES = [13, 7]


# ----------------------------------------------------------------------------- the model

class Bahdanau(nn.Module):
    def __init__(self, cfg, variant=None):
        super().__init__()
        D, M, A = cfg["d_model"], cfg["memory_dim"], cfg["attention_dim"]
        self.variant = variant
        self.query = nn.Linear(D, A, bias=False)
        self.key = nn.Linear(M, A, bias=True)
        self.energy = nn.Linear(A, 1, bias=False)

    def forward(self, s, memory, mask):
        """s [B, T, D], memory [B, S, M], mask [B, S] bool -> context [B, T, M]."""
        q = self.query(s)[:, :, None, :]                       # [B, T, 1, A]
        k = self.key(memory)[:, None, :, :]                    # [B, 1, S, A]
        pre = q + k if self.variant == "no_tanh" else torch.tanh(q + k)
        e = self.energy(pre)[..., 0]                           # [B, T, S]
        if self.variant != "no_mask":
            e = e.masked_fill(~mask[:, None, :], float("-inf"))
        return torch.softmax(e, dim=-1) @ memory


class Location(nn.Module):
    def __init__(self, cfg, variant=None):
        super().__init__()
        self.variant = variant
        self.location = nn.Linear(cfg["d_model"], cfg["max_source"], bias=True)

    def forward(self, s, memory, mask):
        S = memory.shape[1]
        logits = self.location(s)                              # [B, T, max_source]
        if self.variant == "no_renormalisation":
            # Softmax over every position of the table, then keep the real positions' weights.
            alpha = torch.softmax(logits, dim=-1)[..., :S] * mask[:, None, :]
        elif self.variant == "padded_length":
            alpha = torch.softmax(logits[..., :S], dim=-1)
        else:
            alpha = torch.softmax(logits[..., :S].masked_fill(~mask[:, None, :], float("-inf")), -1)
        return alpha @ memory


class LocationSensitive(nn.Module):
    def __init__(self, cfg, variant=None):
        super().__init__()
        D, M, A = cfg["d_model"], cfg["memory_dim"], cfg["attention_dim"]
        self.variant = variant
        self.kernel = cfg["kernel"]
        self.query = nn.Linear(D, A, bias=False)
        self.key = nn.Linear(M, A, bias=True)
        self.energy = nn.Linear(A, 1, bias=False)
        self.location_conv = nn.Conv1d(2, cfg["filters"], cfg["kernel"], padding=0, bias=False)
        self.location_dense = nn.Linear(cfg["filters"], A, bias=False)

    def conv(self, cat):
        """cat [B, 2, S] -> [B, S, filters]; zero padding centred (or all on the left)."""
        k = self.kernel
        pad = (k - 1, 0) if self.variant == "not_centred" else ((k - 1) // 2, (k - 1) // 2)
        return self.location_conv(F.pad(cat, pad)).transpose(1, 2)

    def forward(self, s, memory, mask):
        B, T, _ = s.shape
        S = memory.shape[1]
        q = self.query(s)                                      # [B, T, A]
        k = self.key(memory)                                   # [B, S, A]
        prev = memory.new_zeros(B, S)
        cum = memory.new_zeros(B, S)
        lagged = memory.new_zeros(B, S)
        contexts = []
        for t in range(T):
            if self.variant == "not_carried":
                prev = memory.new_zeros(B, S)
            cum_in = {"no_cumulative": memory.new_zeros(B, S), "cumulative_lags": lagged}.get(
                self.variant, cum)
            f = self.conv(torch.stack([prev, cum_in], dim=1))  # [B, S, filters]
            e = self.energy(torch.tanh(q[:, t, None, :] + k + self.location_dense(f)))[..., 0]
            alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
            contexts.append(alpha[:, None, :] @ memory)
            lagged = cum.clone()
            prev, cum = alpha, cum + alpha
        return torch.cat(contexts, dim=1)


ATTENTION = {"bahdanau": Bahdanau, "location": Location, "location_sensitive": LocationSensitive}


class DecoderSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        D = cfg["d_model"]
        self.H = cfg["decoder_heads"]
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x):
        B, T, D = x.shape
        H, hd = self.H, D // self.H
        split = lambda y: y.view(B, T, H, hd).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        ctx = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, D)
        return self.o_proj(ctx)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        M = cfg["memory_dim"]
        self.embed = nn.Embedding(cfg["vocab_size"], M)
        self.pos = nn.Embedding(cfg["max_source"], M)
        self.layer = nn.TransformerEncoderLayer(M, cfg["encoder_heads"], cfg["d_ff"], dropout=0.0,
                                                activation="relu", layer_norm_eps=cfg["norm_eps"],
                                                batch_first=True, norm_first=False)

    def forward(self, src, mask):
        x = self.embed(src) + self.pos.weight[: src.shape[1]]
        return self.layer(x, src_key_padding_mask=~mask)


class Decoder(nn.Module):
    def __init__(self, cfg, kind, variant):
        super().__init__()
        D, M = cfg["d_model"], cfg["memory_dim"]
        eps = cfg["norm_eps"]
        self.embed = nn.Embedding(cfg["vocab_size"], D)
        self.pos = nn.Embedding(cfg["max_target"], D)
        self.self_norm = nn.LayerNorm(D, eps=eps)
        self.self_attn = DecoderSelfAttention(cfg)
        self.cross_norm = nn.LayerNorm(D, eps=eps)
        self.cross_attn = ATTENTION[kind](cfg, variant)
        self.cross_out = nn.Linear(M, D)
        self.ffn_norm = nn.LayerNorm(D, eps=eps)
        self.fc_in = nn.Linear(D, cfg["d_ff"])
        self.fc_out = nn.Linear(cfg["d_ff"], D)
        self.final_norm = nn.LayerNorm(D, eps=eps)
        self.lm_head = nn.Linear(D, cfg["vocab_size"], bias=False)

    def forward(self, tgt, memory, mask):
        x = self.embed(tgt) + self.pos.weight[: tgt.shape[1]]
        x = x + self.self_attn(self.self_norm(x))
        x = x + self.cross_out(self.cross_attn(self.cross_norm(x), memory, mask))
        x = x + self.fc_out(F.relu(self.fc_in(self.ffn_norm(x))))
        return self.lm_head(self.final_norm(x))


class Seq2Seq(nn.Module):
    def __init__(self, cfg, kind, variant=None):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, kind, variant)

    def forward(self, src, src_mask, tgt):
        return self.decoder(tgt, self.encoder(src, src_mask), src_mask)


# ----------------------------------------------------------------------------- weights and data

@torch.no_grad()
def init_weights(model, seed):
    """Drawn in sorted-name order from one torch.Generator(seed): LayerNorm weights 1 + N(0, 0.1),
    biases N(0, 0.1), embeddings and position tables N(0, 1), weight matrices and the conv
    N(0, gain / sqrt(fan_in)) with the gains of GAIN (large for the scoring layers: sharp
    alignments, so the kind's conventions show in the logits; and for cross_out, so the source
    steers the generation) and 1 elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda t: t[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        parts = name.split(".")
        if "norm" in parts[-2] and parts[-1] == "weight":
            val = 1.0 + 0.1 * noise
        elif parts[-1].endswith("bias"):
            val = 0.1 * noise
        elif parts[-2] in ("embed", "pos"):
            val = noise
        else:
            fan_in = p[0].numel()
            gain = GAIN.get(parts[-2], 1.0)
            val = noise * (gain / math.sqrt(fan_in))
        p.copy_(val)


def ids(rng, n):
    return [int(x) for x in rng.integers(FIRST_ID, CONFIG["vocab_size"], size=n)]


def padded(seqs):
    """Right-padded ids [B, L] and mask [B, L] (bool)."""
    L = max(len(s) for s in seqs)
    t = torch.full((len(seqs), L), PAD_ID, dtype=torch.long)
    m = torch.zeros(len(seqs), L, dtype=torch.bool)
    for b, s in enumerate(seqs):
        t[b, : len(s)] = torch.tensor(s)
        m[b, : len(s)] = True
    return t, m


def make_cases():
    cases = []
    for k, (name, src_lens, tgt_lens) in enumerate(CASES):
        rng = np.random.default_rng(INPUT_SEED + k)
        sources = [ids(rng, n) for n in src_lens]
        targets = [[BOS_ID] + ids(rng, n - 1) for n in tgt_lens]
        cases.append(dict(name=name, sources=sources, targets=targets))
    return cases


def generation_sources():
    rng = np.random.default_rng(INPUT_SEED + 100)
    return [ids(rng, n) for n in GENERATION_SOURCES]


@torch.no_grad()
def case_logits(model, case):
    """Logits of the real target rows, sequence after sequence: [sum(target lengths), V]."""
    src, src_mask = padded(case["sources"])
    tgt, _ = padded(case["targets"])
    out = model(src, src_mask, tgt.to(src.device))
    return torch.cat([out[b, : len(t)] for b, t in enumerate(case["targets"])])


@torch.no_grad()
def greedy(model, sources, steps):
    """Greedy continuation of BOS for a batch of sources (full recompute per step); returns the
    new tokens per source and the smallest top1 - top2 margin."""
    src, src_mask = padded(sources)
    tgt = torch.full((len(sources), 1), BOS_ID, dtype=torch.long)
    margin = float("inf")
    for _ in range(steps):
        last = model(src, src_mask, tgt)[:, -1]
        top = torch.topk(last, 2, dim=-1).values
        margin = min(margin, float((top[:, 0] - top[:, 1]).min()))
        tgt = torch.cat([tgt, last.argmax(-1, keepdim=True)], dim=1)
    return tgt[:, 1:].tolist(), margin


VARIANTS = {
    "bahdanau": ["no_mask", "no_tanh"],
    "location": ["no_renormalisation", "padded_length"],
    "location_sensitive": ["not_carried", "not_centred", "no_cumulative", "cumulative_lags"],
}


def build(kind, seed, variant=None):
    model = Seq2Seq(CONFIG, kind, variant)
    init_weights(model, seed)
    return model.eval()


def evaluate(kind, seed):
    model = build(kind, seed)
    cases = make_cases()
    logits = [case_logits(model, c) for c in cases]
    drift = max(float((case_logits(build(kind, seed).double(), c) - l.double()).abs().max())
                for c, l in zip(cases, logits))
    alternatives = {}
    for variant in VARIANTS[kind]:
        wrong = build(kind, seed, variant)
        alternatives[variant] = max(float((case_logits(wrong, c) - l).abs().max())
                                    for c, l in zip(cases, logits))
    sources = generation_sources()
    alone, margins = [], []
    for s in sources:
        tokens, m = greedy(model, [s], MAX_NEW_TOKENS)
        alone.append(tokens[0])
        margins.append(m)
    batched, m = greedy(model, sources, MAX_NEW_TOKENS)
    margins.append(m)
    return dict(model=model, cases=cases, logits=logits, drift=drift, alternatives=alternatives,
                sources=sources, alone=alone, batched=batched, margin=min(margins))


def check(kind, res):
    assert res["drift"] <= MAX_F32_DRIFT, (kind, res["drift"])
    for variant, diff in res["alternatives"].items():
        assert diff > MIN_ALTERNATIVE, (kind, variant, diff)
    assert res["batched"] == res["alone"], (kind, res["batched"], res["alone"])
    assert res["margin"] >= MIN_MARGIN, (kind, res["margin"])
    for tokens in res["alone"]:
        assert len(set(tokens)) >= MIN_DISTINCT, (kind, tokens)
    assert res["alone"][0] != res["alone"][1], (kind, "the source must steer the generation")


NOTES = {
    "encoder": "x = encoder.embed[src] + encoder.pos[0..S]; torch.nn.TransformerEncoderLayer "
               "(batch_first, post-norm, ReLU, dropout 0, fast path disabled) with "
               "src_key_padding_mask = ~mask: x = norm1(x + out_proj(mha(x))); "
               "x = norm2(x + linear2(relu(linear1(x)))); the memory h is x, padding rows included "
               "(they are never attended).",
    "decoder": "x = decoder.embed[tgt] + decoder.pos[0..T]; pre-norm: x += self_attn.o_proj(causal "
               "2-head attention of self_attn.{q,k,v}_proj(self_norm(x)), scale 1/sqrt(16)); "
               "x += cross_out(context(cross_norm(x), h, source mask)); x += fc_out(relu(fc_in("
               "ffn_norm(x)))); logits = decoder.lm_head.weight final_norm(x) (untied, no bias). "
               "Targets are right-padded in a batch; padded target rows are not recorded.",
    "bahdanau": "e_j = energy.weight . tanh(query.weight s + key.weight h_j + key.bias); "
                "alpha = softmax over the sequence's real source positions (padding -inf); "
                "c = sum_j alpha_j h_j (raw memory rows).",
    "location": "Luong location: l = location.weight s + location.bias (max_source logits); "
                "alpha_j = exp(l_j) / sum_{i < len} exp(l_i) for j < len (the sequence's own real "
                "source length), 0 for padding: the logits of positions >= len are dropped and "
                "the softmax is renormalised over the real ones; c = sum_j alpha_j h_j.",
    "location_sensitive": "Per target position t: f = location_conv([prev, cum]) (Conv1d, "
                          "channels [previous alignment, cumulative alignment], zero padding "
                          "(kernel-1)/2 each side, no bias) -> [S, filters]; e_j = energy.weight "
                          ". tanh(query.weight s_t + key.weight h_j + key.bias + "
                          "location_dense.weight f_j); alpha_t = masked softmax; c_t = sum_j "
                          "alpha_t,j h_j; then prev = alpha_t, cum += alpha_t. prev = cum = 0 "
                          "before t = 0. Padding source positions have alpha 0 (so they add 0 to "
                          "the conv input).",
    "generation": f"greedy from [bos_id]: each step recomputes the whole target prefix and "
                  f"appends argmax of the last row; {MAX_NEW_TOKENS} new tokens, no EOS stop; "
                  "sources alone and as one right-padded batch (identical tokens).",
}


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def f32_list(a):
    return [[float(x) for x in row] for row in np.asarray(a, dtype=np.float32)]


def acceptable(kind, res):
    try:
        check(kind, res)
        return True
    except AssertionError:
        return False


def search_seeds(n):
    for kind in KINDS:
        for seed in range(n):
            res = evaluate(kind, seed)
            if acceptable(kind, res):
                print(f"{kind}: seed {seed} (margin {res['margin']:.3e}, alone {res['alone']})")
                break
        else:
            print(f"{kind}: no seed in 0..{n}")


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
        config = dict(CONFIG, kind=kind, cumulative_alignment=kind == "location_sensitive")
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        with safe_open(out_dir / "model.safetensors", "np") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}
        doc = {
            "generator": "scripts/reference/additive.py",
            "kind": kind,
            "versions": {"torch": torch.__version__, "safetensors": safetensors.__version__,
                         "numpy": np.__version__},
            "seed": seed,
            "torch_threads": threads,
            "init": init_weights.__doc__,
            "notes": {k: NOTES[k] for k in ("encoder", "decoder", kind, "generation")},
            "cases": [dict(name=c["name"], sources=c["sources"], targets=c["targets"],
                           logits=f32_list(l.numpy())) for c, l in zip(res["cases"], res["logits"])],
            "generation": {"sources": res["sources"], "max_new_tokens": MAX_NEW_TOKENS,
                           "alone": res["alone"], "batched": res["batched"],
                           "min_margin": res["margin"]},
            "float64_max_abs_diff": res["drift"],
            "alternatives": {"what": "max |logits with one convention changed - logits| over "
                                     "the teacher-forced cases (torch, float32)",
                             **res["alternatives"]},
            "files": {"model.safetensors": {"sha256": sha256(out_dir / "model.safetensors"),
                                            "tensors": shapes}},
        }
        (out_dir / "reference.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        for f in out_dir.iterdir():
            f.chmod(0o644)  # save_file leaves 0600
        total = sum(f.stat().st_size for f in out_dir.iterdir())
        print(f"  {total} bytes")
        assert total < 300_000, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
