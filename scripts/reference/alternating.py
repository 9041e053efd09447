#!/usr/bin/env python3
"""Write an "alternating" decoder reference fixture (sliding-window attention on the even layers,
global causal attention on the odd ones; parallel residual with ONE shared LayerNorm per layer,
GPT-J / PaLM style; rotary positions; grouped-query attention; biases everywhere; exact GELU;
untied head) under tests/fixtures/alternating/, computed with plain PyTorch on the CPU.

No Hugging Face preset covers this architecture, so the model is a small torch.nn.Module written
in this file (AlternatingLM): no transformers class is involved. The directory holds:
    model.safetensors  the module's state_dict (float32, nn.Linear layout [out, in]), tensor
                       names: embed_tokens.weight, layers.{i}.norm.{weight,bias},
                       layers.{i}.attn.{q,k,v,o}_proj.{weight,bias},
                       layers.{i}.mlp.{fc_in,fc_out}.{weight,bias}, norm.{weight,bias},
                       lm_head.weight; random weights from a fixed seed (see init_weights)
    config.json        the dims and conventions below, with this script's own keys (named
                       after the transformer::model! keys where one exists)
    reference.json     same keys as tests/fixtures/llama/*/reference.json (written by
                       scripts/reference/llama.py): prompts (token ids only: no tokenizer, the ids
                       come from a seeded RNG), logits of a forward pass, greedy continuations
                       (alone and as a left-padded batch), greedy top1-top2 margins, versions,
                       and `notes` that spell out the conventions (which layers are windowed and
                       the window rule, RoPE pairing, GQA head mapping, the shared-norm parallel
                       residual, positions under left padding) plus the self-check numbers

Config: vocab 256, max_positions 64, d_model 64, 4 heads of 16, 2 KV heads (query head h uses
KV head h // 2), 4 layers, d_ff 256, LayerNorm eps 1e-5 (with bias), rope_theta 10000 over the
whole head (rotate_half pairing: dim j with j + 8), window 8 on layers 0 and 2 (key j visible to
query i iff j <= i and i - j < 8, Mistral's rule), layers 1 and 3 global causal; per layer
    h = norm(x); x = x + o_proj(attn(rope(q_proj(h)), rope(k_proj(h)), v_proj(h)))
                      + fc_out(gelu_erf(fc_in(h)))
then logits = lm_head(norm(x)) (untied, no bias). float32. Greedy generation in the reference is
a full recompute of the whole sequence at every step (no KV cache on the torch side).

Self-checks (the script fails loudly if one is violated; the numbers go to reference.json):
  - an independent float64 numpy forward (numpy_forward) written from `notes` matches the torch
    float32 logits to <= 1e-5 (every prompt, the longest prompt + its continuation, and the
    left-padded batch), and the torch module run in float64 matches it to ~1e-12;
  - the conventions matter: all layers global, the windows on the odd layers instead of the even
    ones, the window one key wider, a sequential residual (same shared norm), GQA mapping h % 2
    instead of h // 2, interleaved RoPE pairs: each changes the logits by > 1e-3 (the window
    variants only at positions >= 8: they are identical before);
  - SDPA attention (torch.nn.functional.scaled_dot_product_attention) gives the same greedy
    tokens as the explicit softmax used for the fixture.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/alternating.py
The seed is fixed in SEED; --search-seeds N re-runs the seed search (prints the first seed in
0..N-1 that satisfies the margin / diversity / float32-drift criteria) instead of writing the
fixture.
"""
import os

# Never touch a model hub (nothing here would, but keep the house rule explicit).
os.environ["HF_HUB_OFFLINE"] = "1"

import argparse
import hashlib
import json
import math
import pathlib
import platform
import shutil
import sys

import numpy as np
import safetensors
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from scipy.special import erf
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "alternating"
NAME = "alternating"

# 32 new tokens, like every other decoder fixture: the Rust parity tests generate with
# GenerateOptions { max_new_tokens: 32, .. }, so the same test reads this fixture unchanged.
MAX_NEW_TOKENS = 32
# Acceptance criteria for a seed (checked for every prompt, alone and batched).
# The parity tests need margins >= 1e-3 (logits agree to 1e-4); 3e-2 leaves a wide berth for
# float32 accumulation-order differences over 32 KV-cached steps through 4 layers.
MIN_MARGIN = 3e-2          # min over steps of (top1 logit - top2 logit)
MIN_DISTINCT = 12          # distinct tokens among the 32 generated ones
MAX_F32_DRIFT = 1e-5       # max |torch float32 logits - numpy float64 logits| (all check seqs)
PAD_ID = 0                 # left padding id of the batched run (masked out; prompts avoid it)
FIRST_PROMPT_ID = 3        # prompt ids are drawn from [3, vocab): 0/1/2 kept free (pad/bos/eos)
PROMPT_SEED = 20250401     # numpy default_rng seed of the prompt ids (prompt i: + i)
# Every prompt is longer than the window; the longest + 32 new tokens = 60 <= max_positions.
PROMPT_LENGTHS = [9, 12, 20, 28]
SEED = 46  # chosen by --search-seeds 200 (first seed meeting the criteria)

CONFIG = dict(
    architecture="alternating",
    vocab_size=256,
    max_positions=64,
    d_model=64,
    heads=4,
    head_dim=16,
    kv_heads=2,
    layers=4,
    d_ff=256,
    activation="gelu_erf",
    norm="layer_norm",
    norm_eps=1e-5,
    norm_placement="pre",
    residual="parallel_shared_norm",
    positions="rope",
    rope_theta=10000.0,
    rotary_dims=16,
    rope_pairing="rotate_half",
    attention="causal",
    window=8,
    window_layers=[0, 2],
    global_layers=[1, 3],
    attention_bias=True,
    mlp_bias=True,
    lm_head="untied",
    dtype="float32",
)
EMBED_STD = 1.0  # embed_tokens ~ N(0, EMBED_STD)
# Linear weights ~ N(0, gain / sqrt(fan_in)).
LINEAR_GAIN = {"q_proj": 1.0, "k_proj": 1.0, "v_proj": 1.0, "o_proj": 1.0, "fc_in": 1.0,
               "fc_out": 1.0, "lm_head": 3.0}


# ----------------------------------------------------------------------------- the model

def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg, windowed, kv_map, impl):
        super().__init__()
        C, H, KV, D = cfg["d_model"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
        self.H, self.KV, self.D = H, KV, D
        self.window = cfg["window"] if windowed else None
        self.theta = cfg["rope_theta"]
        self.impl = impl
        self.q_proj = nn.Linear(C, H * D, bias=True)
        self.k_proj = nn.Linear(C, KV * D, bias=True)
        self.v_proj = nn.Linear(C, KV * D, bias=True)
        self.o_proj = nn.Linear(H * D, C, bias=True)
        rep = H // KV
        kv_of = [h // rep for h in range(H)] if kv_map == "h//2" else [h % KV for h in range(H)]
        self.register_buffer("kv_of", torch.tensor(kv_of), persistent=False)

    def rope(self, x, pos):
        """x [B, heads, L, D], pos [B, L] int -> rotated (HF Llama rotate_half convention).
        Frequencies and angles in x's dtype: float32 for the fixture (as HF computes them),
        float64 for the float64 cross-check against numpy."""
        D = self.D
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, D, 2, dtype=torch.int64)
                                         .to(x.dtype) / D))
        freqs = pos[:, :, None].to(x.dtype) * inv_freq[None, None, :]        # [B, L, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        return x * cos + rotate_half(x) * sin

    def forward(self, h, pos, key_mask):
        B, L, _ = h.shape
        q = self.q_proj(h).view(B, L, self.H, self.D).transpose(1, 2)
        k = self.k_proj(h).view(B, L, self.KV, self.D).transpose(1, 2)
        v = self.v_proj(h).view(B, L, self.KV, self.D).transpose(1, 2)
        q, k = self.rope(q, pos), self.rope(k, pos)
        k, v = k[:, self.kv_of], v[:, self.kv_of]                       # [B, H, L, D]
        i = torch.arange(L)[:, None]
        j = torch.arange(L)[None, :]
        allowed = (j <= i)
        if self.window is not None:
            allowed = allowed & (i - j < self.window)
        allowed = allowed[None] & key_mask[:, None, :].bool()           # [B, L, L]
        # A (left) pad query has no visible key; let it see itself so its row stays finite.
        # Real queries never see pads, so this does not touch any real row.
        allowed = allowed | torch.eye(L, dtype=torch.bool)[None]
        if self.impl == "sdpa":
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        else:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.D)
            scores = scores.masked_fill(~allowed[:, None], float("-inf"))
            ctx = torch.softmax(scores, dim=-1) @ v
        ctx = ctx.transpose(1, 2).reshape(B, L, self.H * self.D)
        return self.o_proj(ctx)


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc_in = nn.Linear(cfg["d_model"], cfg["d_ff"], bias=True)
        self.fc_out = nn.Linear(cfg["d_ff"], cfg["d_model"], bias=True)

    def forward(self, h):
        return self.fc_out(F.gelu(self.fc_in(h)))  # approximate="none": exact erf GELU


class Layer(nn.Module):
    def __init__(self, cfg, windowed, residual, kv_map, impl):
        super().__init__()
        self.residual = residual
        self.norm = nn.LayerNorm(cfg["d_model"], eps=cfg["norm_eps"])
        self.attn = Attention(cfg, windowed, kv_map, impl)
        self.mlp = Mlp(cfg)

    def forward(self, x, pos, key_mask):
        h = self.norm(x)
        if self.residual == "parallel":
            return x + self.attn(h, pos, key_mask) + self.mlp(h)
        # Variant used only by the self-checks: sequential, same (shared) norm module.
        x = x + self.attn(h, pos, key_mask)
        return x + self.mlp(self.norm(x))


class AlternatingLM(nn.Module):
    """window_layers: "even" (the fixture), "odd", "none", "all"; residual: "parallel" (the
    fixture) or "sequential"; kv_map: "h//2" (the fixture) or "h%2"; impl: "eager" or "sdpa".
    Only the stated defaults are the fixture's model; the others exist for the self-checks."""

    def __init__(self, cfg, window_layers="even", residual="parallel", kv_map="h//2",
                 impl="eager"):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["d_model"])
        self.layers = nn.ModuleList(
            Layer(cfg, windowed(window_layers, i), residual, kv_map, impl)
            for i in range(cfg["layers"]))
        self.norm = nn.LayerNorm(cfg["d_model"], eps=cfg["norm_eps"])
        self.lm_head = nn.Linear(cfg["d_model"], cfg["vocab_size"], bias=False)

    def forward(self, ids, attention_mask=None):
        """ids [B, L] -> logits [B, L, vocab]. attention_mask [B, L] of 0/1 (left padding);
        positions = cumsum(mask) - 1 with pads set to 1 (what HF generate passes)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        pos = attention_mask.long().cumsum(-1) - 1
        pos = pos.masked_fill(attention_mask == 0, 1)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, pos, attention_mask)
        return self.lm_head(self.norm(x))


def windowed(window_layers, i):
    return {"even": i % 2 == 0, "odd": i % 2 == 1, "none": False, "all": True}[window_layers]


# ----------------------------------------------------------------------------- helpers

def f32(x):
    return float(np.float32(x))


def f32_list(a):
    """Nested lists of floats with exactly float32 precision."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        return [float(x) for x in a]
    return [f32_list(row) for row in a]


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def make_prompts(vocab_size):
    prompts = []
    for i, n in enumerate(PROMPT_LENGTHS):
        rng = np.random.default_rng(PROMPT_SEED + i)
        prompts.append([int(x) for x in rng.integers(FIRST_PROMPT_ID, vocab_size, size=n)])
    return prompts


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic random weights, chosen so every tensor matters (PyTorch's default init
    has zero-ish biases and unit LayerNorm weights): LayerNorm weights 1 + N(0, 0.1), all
    biases (LayerNorm and Linear) N(0, 0.1), embed_tokens N(0, EMBED_STD), Linear weights
    N(0, gain/sqrt(fan_in)) with the per-module gains of LINEAR_GAIN. Parameters are drawn in
    sorted-name order from one torch.Generator(seed)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda t: t[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name == "embed_tokens.weight":
            val = noise * EMBED_STD
        elif name == "norm.weight" or name.endswith(".norm.weight"):
            val = 1.0 + 0.1 * noise
        elif name.endswith(".bias"):
            val = 0.1 * noise
        elif name.endswith(".weight"):
            assert p.dim() == 2, name
            gain = LINEAR_GAIN[name.split(".")[-2]]
            val = noise * (gain / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"unexpected parameter {name}")
        p.copy_(val)


def build_model(seed):
    model = AlternatingLM(CONFIG)
    init_weights(model, seed)
    return model.eval()


def variant(state_dict, dtype=torch.float32, **kw):
    m = AlternatingLM(CONFIG, **kw)
    m.load_state_dict(state_dict, strict=True)
    return m.to(dtype).eval()


def margins_of(step_logits):
    """top1 - top2 of each row of [steps, vocab]."""
    top2 = torch.topk(step_logits.float(), 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


@torch.inference_mode()
def greedy_alone(model, ids):
    """Greedy by full recompute: the whole sequence goes through the model at every step."""
    seq = list(ids)
    steps = []
    for _ in range(MAX_NEW_TOKENS):
        lg = model(torch.tensor([seq]))[0, -1]
        steps.append(lg)
        seq.append(int(lg.argmax()))
    new = seq[len(ids):]
    step_logits = torch.stack(steps)
    assert step_logits.argmax(-1).tolist() == new
    return new, margins_of(step_logits)


def left_pad(prompts):
    width = max(len(p) for p in prompts)
    input_ids = [[PAD_ID] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(input_ids), torch.tensor(mask)


@torch.inference_mode()
def greedy_batched(model, prompts):
    """Left-padded batch, full recompute each step; every row gets its argmax appended."""
    input_ids, mask = left_pad(prompts)
    ids, m = input_ids, mask
    steps = []
    for _ in range(MAX_NEW_TOKENS):
        lg = model(ids, m)[:, -1]                                    # [B, vocab]
        steps.append(lg)
        nxt = lg.argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        m = torch.cat([m, torch.ones_like(nxt)[:, None]], dim=1)
    step_logits = torch.stack(steps, dim=1)                         # [B, steps, vocab]
    new = ids[:, input_ids.shape[1]:].tolist()
    margins = [margins_of(step_logits[b]) for b in range(len(prompts))]
    return (input_ids, mask), new, margins, step_logits[:, 0, :]


@torch.inference_mode()
def logits_of(model, ids):
    return model(torch.tensor([ids]))[0].double().numpy()


def evaluate(model, prompts):
    res = {"greedy": [], "margins": [], "min_margin": [], "distinct": []}
    for ids in prompts:
        new, m = greedy_alone(model, ids)
        res["greedy"].append(new)
        res["margins"].append(m)
        res["min_margin"].append(min(m))
        res["distinct"].append(len(set(new)))
    enc, bnew, bmargins, bfirst = greedy_batched(model, prompts)
    res["batched"] = (enc, bnew, bmargins, bfirst)
    res["batched_equal"] = [a == b for a, b in zip(res["greedy"], bnew)]
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    seqs = prompts + [p + g for p, g in zip(prompts, res["greedy"])]
    res["f32_drift"] = max(float(np.abs(logits_of(model, s) - numpy_forward(sd, s)).max())
                           for s in seqs)
    return res


def acceptable(res):
    return (min(res["min_margin"]) >= MIN_MARGIN
            and min(min(m) for m in res["batched"][2]) >= MIN_MARGIN
            and min(res["distinct"]) >= MIN_DISTINCT
            and all(res["batched_equal"])
            and res["f32_drift"] <= MAX_F32_DRIFT)


# ------------------------------------------------------------- independent numpy reference

def numpy_forward(sd, ids, mask=None, window_layers="even", window_rule="p-W<j<=p",
                  residual="parallel", kv_map="h//2", rope="rotate_half"):
    """float64 logits [len, vocab] of one sequence, written from reference.json's `notes`.

    mask:          optional 0/1 list (left padding); positions = cumsum(mask) - 1, pad keys
                   are invisible, pad query rows are returned as zeros.
    window_layers: which layers use the sliding window: "even" (stated), "odd", "none", "all".
    window_rule:   "p-W<j<=p" (stated: W keys including the query itself) or "p-W<=j<=p".
    residual:      "parallel" (stated: x + attn(n) + mlp(n), n = norm(x)) or "sequential"
                   (x += attn(norm(x)); x += mlp(norm(x)), the same norm weights both times).
    kv_map:        "h//2" (stated: query head h reads KV head h // (H/KV)) or "h%2".
    rope:          "rotate_half" (stated: dim d pairs with d + D/2) or "interleaved" (2i, 2i+1).
    """
    g = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    C, H, KV, D = CONFIG["d_model"], CONFIG["heads"], CONFIG["kv_heads"], CONFIG["head_dim"]
    W, eps, theta = CONFIG["window"], CONFIG["norm_eps"], CONFIG["rope_theta"]
    L = len(ids)
    mask = np.ones(L, dtype=np.int64) if mask is None else np.asarray(mask, dtype=np.int64)
    pos = (np.cumsum(mask) - 1).astype(np.float64)

    def layer_norm(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g[name + ".weight"] + g[name + ".bias"]

    def linear(x, name, bias=True):
        y = x @ g[name + ".weight"].T
        return y + g[name + ".bias"] if bias else y

    def gelu(x):
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    freq = theta ** (-np.arange(D // 2, dtype=np.float64) * 2.0 / D)   # [D/2]
    ang = pos[:, None] * freq[None, :]                                 # [L, D/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rotate(x):  # x [L, D] of one head
        out = np.empty_like(x)
        for d in range(D // 2):
            if rope == "rotate_half":
                a, b = d, d + D // 2
            else:
                a, b = 2 * d, 2 * d + 1
            out[:, a] = x[:, a] * cos[:, d] - x[:, b] * sin[:, d]
            out[:, b] = x[:, b] * cos[:, d] + x[:, a] * sin[:, d]
        return out

    def visible(win):
        vis = np.zeros((L, L), dtype=bool)
        for p in range(L):
            if not mask[p]:
                continue
            for j in range(p + 1):
                if not mask[j]:
                    continue
                if win:
                    lo = p - W + 1 if window_rule == "p-W<j<=p" else p - W
                    if j < lo:
                        continue
                vis[p, j] = True
        return vis

    def attention(h, pre, win):
        vis = visible(win)
        q = linear(h, pre + "q_proj")
        k = linear(h, pre + "k_proj")
        v = linear(h, pre + "v_proj")
        out = np.zeros((L, H * D))
        for hh in range(H):
            kv = hh // (H // KV) if kv_map == "h//2" else hh % KV
            qh = rotate(q[:, hh * D:(hh + 1) * D])
            kh = rotate(k[:, kv * D:(kv + 1) * D])
            vh = v[:, kv * D:(kv + 1) * D]
            for p in range(L):
                if not vis[p].any():
                    continue
                s = (kh[vis[p]] @ qh[p]) / math.sqrt(D)
                w = np.exp(s - s.max())
                w /= w.sum()
                out[p, hh * D:(hh + 1) * D] = w @ vh[vis[p]]
        return linear(out, pre + "o_proj")

    def mlp(h, pre):
        return linear(gelu(linear(h, pre + "fc_in")), pre + "fc_out")

    x = g["embed_tokens.weight"][ids]
    for i in range(CONFIG["layers"]):
        pre = f"layers.{i}."
        win = windowed(window_layers, i)
        n = layer_norm(x, pre + "norm")
        if residual == "parallel":
            x = x + attention(n, pre + "attn.", win) + mlp(n, pre + "mlp.")
        else:
            x = x + attention(n, pre + "attn.", win)
            x = x + mlp(layer_norm(x, pre + "norm"), pre + "mlp.")
    logits = linear(layer_norm(x, "norm"), "lm_head", bias=False)
    return logits * mask[:, None]


# ----------------------------------------------------------------------------- main

def search_seeds(max_seed):
    prompts = make_prompts(CONFIG["vocab_size"])
    for seed in range(max_seed):
        res = evaluate(build_model(seed), prompts)
        ok = acceptable(res)
        print(f"seed {seed}: min_margin={min(res['min_margin']):.4g} "
              f"batched_min={min(min(m) for m in res['batched'][2]):.4g} "
              f"distinct={res['distinct']} batched_equal={res['batched_equal']} "
              f"f32_drift={res['f32_drift']:.2e} ok={ok}", flush=True)
        if ok:
            print(f"first acceptable seed = {seed}")
            return seed
    print(f"no acceptable seed below {max_seed}")
    return None


def per_position(a, b):
    return np.abs(a - b).max(-1)


def write_fixture(out_dir, threads):
    seed = SEED
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    built = build_model(seed)
    save_file({k: v.contiguous() for k, v in built.state_dict().items()},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")

    # Everything below is computed from what was written to disk.
    with safe_open(str(out_dir / "model.safetensors"), framework="np") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()
        sd_np = {k: f.get_tensor(k) for k in tensor_names}
    sd = {k: torch.from_numpy(v.copy()) for k, v in sd_np.items()}
    model = variant(sd)
    for k, v in built.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert sorted(sd_np) == sorted(model.state_dict()), "state_dict == saved tensors"
    expected_names = {"embed_tokens.weight", "norm.weight", "norm.bias", "lm_head.weight"}
    for i in range(CONFIG["layers"]):
        expected_names |= {f"layers.{i}.norm.weight", f"layers.{i}.norm.bias"}
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            expected_names |= {f"layers.{i}.attn.{p}.weight", f"layers.{i}.attn.{p}.bias"}
        for p in ("fc_in", "fc_out"):
            expected_names |= {f"layers.{i}.mlp.{p}.weight", f"layers.{i}.mlp.{p}.bias"}
    assert set(tensor_names) == expected_names, set(tensor_names) ^ expected_names
    n_params = sum(int(np.prod(s)) for s in tensor_shapes.values())

    prompts = make_prompts(CONFIG["vocab_size"])
    res = evaluate(model, prompts)
    if not acceptable(res):
        sys.exit(f"seed {seed} does not meet the criteria: min_margin={res['min_margin']} "
                 f"distinct={res['distinct']} batched_equal={res['batched_equal']} "
                 f"f32_drift={res['f32_drift']}; run with --search-seeds")

    logits, last_logits, full_t = [], [], []
    for i, ids in enumerate(prompts):
        lg = logits_of(model, ids)
        full_t.append(lg)
        if i < 2:
            logits.append(f32_list(lg))
        last_logits.append(f32_list(lg[-1]))

    # SDPA attention vs the explicit softmax (eager).
    sdpa = variant(sd, impl="sdpa")
    sdpa_diff = max(float(np.abs(logits_of(sdpa, ids) - t).max())
                    for ids, t in zip(prompts, full_t))
    sdpa_greedy_equal = all(greedy_alone(sdpa, ids)[0] == gr
                            for ids, gr in zip(prompts, res["greedy"]))
    sdpa_batched_equal = greedy_batched(sdpa, prompts)[1] == res["batched"][1]
    assert sdpa_diff < 1e-4 and sdpa_greedy_equal and sdpa_batched_equal

    # ---- independent float64 numpy forward: stated conventions match, alternatives don't.
    long_seqs = [p + g for p, g in zip(prompts, res["greedy"])]
    check_seqs = list(zip(prompts, full_t)) + [(s, logits_of(model, s)) for s in long_seqs]
    assert max(len(s) for s, _ in check_seqs) <= CONFIG["max_positions"]

    def np_diff(**kw):
        return max(float(np.abs(numpy_forward(sd_np, s, **kw) - t).max()) for s, t in check_seqs)

    numpy_check = {"sequences": [len(s) for s, _ in check_seqs],
                   "max_abs_diff_stated_conventions": np_diff()}
    m64 = variant(sd, dtype=torch.float64)
    with torch.inference_mode():
        numpy_check["max_abs_diff_torch_float64_vs_numpy"] = max(
            float(np.abs(m64(torch.tensor([s]))[0].numpy() - numpy_forward(sd_np, s)).max())
            for s, _ in check_seqs)
    # Left-padded batch (first step of the batched greedy run): real rows vs numpy with mask.
    b_ids, b_mask = res["batched"][0]
    with torch.inference_mode():
        b_logits = model(b_ids, b_mask).double().numpy()
    pad_diff = 0.0
    for b in range(len(prompts)):
        mrow = b_mask[b].tolist()
        ref = numpy_forward(sd_np, b_ids[b].tolist(), mask=mrow)
        real = np.asarray(mrow, dtype=bool)
        pad_diff = max(pad_diff, float(np.abs(b_logits[b][real] - ref[real]).max()))
    numpy_check["max_abs_diff_left_padded_batch"] = pad_diff
    numpy_check["note"] = (
        "numpy_forward is float64 and written from `notes`; the torch module runs in float32, "
        "so the stated-conventions diff is float32 rounding only (the same module cast to "
        "float64 matches numpy to max_abs_diff_torch_float64_vs_numpy). Sequences: the 4 "
        "prompts and each prompt + its 32 greedy tokens.")
    alternatives = [
        ("all_layers_global", dict(window_layers="none")),
        ("windows_on_odd_layers", dict(window_layers="odd")),
        ("windows_on_all_layers", dict(window_layers="all")),
        ("window_one_key_wider", dict(window_rule="p-W<=j<=p")),
        ("sequential_residual", dict(residual="sequential")),
        ("gqa_kv_head_h_mod_2", dict(kv_map="h%2")),
        ("interleaved_rope_pairs", dict(rope="interleaved")),
    ]
    for name, kw in alternatives:
        numpy_check[f"max_abs_diff_{name}"] = np_diff(**kw)
    stated = numpy_check["max_abs_diff_stated_conventions"]
    assert stated <= 1e-5, numpy_check
    assert pad_diff <= 1e-5, numpy_check
    assert numpy_check["max_abs_diff_torch_float64_vs_numpy"] < 1e-9, numpy_check
    for name, _ in alternatives:
        assert numpy_check[f"max_abs_diff_{name}"] > 1e-3, (name, numpy_check)

    # ---- the same checks on the torch side: same weights, one convention changed, per position
    # (longest prompt + its continuation). Window variants: identical before position W, and
    # visibly different from W on; the others differ everywhere.
    W = CONFIG["window"]
    long_seq = long_seqs[-1]
    long_t = logits_of(model, long_seq)
    torch_variants = {
        "all_layers_global": dict(window_layers="none"),
        "windows_on_odd_layers": dict(window_layers="odd"),
        "sequential_residual": dict(residual="sequential"),
        "gqa_kv_head_h_mod_2": dict(kv_map="h%2"),
    }
    variant_check = {"sequence": f"prompt 3 + its 32 greedy tokens ({len(long_seq)} tokens)"}
    per_pos = {}
    for name, kw in torch_variants.items():
        pp = per_position(logits_of(variant(sd, **kw), long_seq), long_t)
        per_pos[name] = pp
        variant_check[name] = {
            "max_abs_logit_diff_positions_lt_8": float(pp[:W].max()),
            "max_abs_logit_diff_positions_ge_8": float(pp[W:].max()),
            "min_over_positions_ge_8_of_max_abs_logit_diff": float(pp[W:].min()),
            "greedy_tokens_changed": [greedy_alone(variant(sd, **kw), p)[0] != g
                                      for p, g in zip(prompts, res["greedy"])],
        }
        assert pp[W:].max() > 1e-3, (name, variant_check[name])
    for name in ("all_layers_global", "windows_on_odd_layers"):
        pp = per_pos[name]
        # Before position W no window cuts anything: identical masks, identical logits.
        assert pp[:W].max() == 0.0 and pp[W] > 1e-3, (name, pp)
    for name in ("sequential_residual", "gqa_kv_head_h_mod_2"):
        assert per_pos[name][:W].max() > 1e-3, (name, per_pos[name])

    enc, bnew, bmargins, bfirst = res["batched"]
    first_step_diff = [float((bfirst[b].double() - torch.tensor(last_logits[b]).double())
                             .abs().max()) for b in range(len(prompts))]

    H, KV, D = CONFIG["heads"], CONFIG["kv_heads"], CONFIG["head_dim"]
    window_rule = (f"query at position p attends to keys j with p - {W} < j <= p, i.e. the last "
                   f"{W} positions including itself (Mistral's rule: key j visible iff j <= p "
                   f"and p - j < {W})")
    self_checks = {
        "numpy_float64_max_abs_diff": stated,
        "numpy_float64_left_padded_batch_max_abs_diff": pad_diff,
        "torch_float64_vs_numpy_max_abs_diff": numpy_check["max_abs_diff_torch_float64_vs_numpy"],
        "numpy_alternatives_max_abs_diff": {
            name: numpy_check[f"max_abs_diff_{name}"] for name, _ in alternatives},
        "torch_variants_on_prompt3_plus_continuation": {
            name: {"positions_lt_8": variant_check[name]["max_abs_logit_diff_positions_lt_8"],
                   "positions_ge_8": variant_check[name]["max_abs_logit_diff_positions_ge_8"]}
            for name in torch_variants},
        "sdpa_vs_eager_max_abs_diff": sdpa_diff,
        "asserted": "numpy stated <= 1e-5 (also on the left-padded batch); every alternative "
                    "> 1e-3; window variants exactly 0 at positions < 8 and > 1e-3 at "
                    "position 8; sequential residual and h % 2 > 1e-3 already before 8",
    }
    notes = {
        "architecture": (
            "pre-norm decoder, PARALLEL residual with ONE shared LayerNorm per layer (GPT-J / "
            "PaLM): x = embed_tokens[ids] (no position embeddings, no embedding scaling, no "
            "embedding norm); per layer i: h = layers.i.norm(x); x = x + attn_i(h) + mlp_i(h) "
            "(both branches read the same h; the residual stream x is added once); logits = "
            "lm_head(norm(x)), lm_head untied with no bias. Every Linear has a bias except "
            "lm_head. Linear weights are [out, in] (y = x @ W^T + b)."),
        "layer_norm": f"y = (x - mean(x)) / sqrt(var(x) + {CONFIG['norm_eps']:g}) * weight + "
                      "bias (biased variance over the 64 features)",
        "attention": (
            f"{H} query heads, {KV} KV heads, head_dim {D}; q_proj 64->{H * D}, k_proj/v_proj "
            f"64->{KV * D}, all with bias; rows are head-major (head h = rows h*{D}..(h+1)*{D}); "
            f"query head h uses KV head h // {H // KV} (heads 0,1 -> KV 0; heads 2,3 -> KV 1, "
            f"like HF repeat_kv); scores = q.k / sqrt({D}) with rotary q and k, masked softmax; "
            f"the head outputs are concatenated in head order before o_proj (64->64, bias)."),
        "alternating_layers": (
            f"layers with an EVEN index (0, 2) use a sliding window of {W}; layers with an ODD "
            f"index (1, 3) are global causal (query p sees keys 0..p)."),
        "sliding_window": window_rule,
        "rope": (
            f"rotary on q and k over the WHOLE head ({D} dims), theta {CONFIG['rope_theta']:g}: "
            f"inv_freq[i] = 1 / theta^(2i/{D}) for i < {D // 2} (computed in float32 as "
            f"1/theta^(arange(0,{D},2)/{D})); angle = position * inv_freq[i]. rotate_half "
            f"convention (NOT interleaved pairs): dim i pairs with dim i+{D // 2}: for i < "
            f"{D // 2}: out[i] = x[i]*cos - x[i+{D // 2}]*sin, out[i+{D // 2}] = "
            f"x[i+{D // 2}]*cos + x[i]*sin."),
        "position_ids": (
            "alone: positions 0..len-1 of prompt + generated tokens. batched (left padding): "
            "position_ids = attention_mask.cumsum(-1) - 1 with pads set to 1 (as HF generate "
            "does), so each sequence's first real token is position 0; pads are masked out as "
            "keys (a pad query sees only itself so its row stays finite; its logits are "
            "ignored). The window is applied on column indices, which equal token distances "
            "because each row's real tokens are contiguous."),
        "mlp": "fc_out(gelu(fc_in(h))), fc_in 64->256 and fc_out 256->64 with biases; GELU is "
               "the exact erf form 0.5*x*(1+erf(x/sqrt(2))) (torch F.gelu default, HF 'gelu')",
        "tied_embeddings": "untied: separate lm_head.weight [256, 64]",
        "generation": (
            "greedy by full recompute (the whole sequence through the model at every step, "
            "no KV cache on the reference side); no EOS: always 32 new tokens."),
        "self_checks": self_checks,
    }

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    doc = {
        "generator": "scripts/reference/alternating.py",
        "name": NAME,
        "versions": versions,
        "seed": seed,
        "init": "random (see init_weights), torch.Generator seed = `seed`, parameters in "
                "sorted-name order: LayerNorm weights 1+N(0, 0.1), all biases N(0, 0.1), "
                f"Linear weights N(0, gain/sqrt(fan_in)) with gains {LINEAR_GAIN}, "
                f"embed_tokens N(0, {EMBED_STD})",
        "torch_threads": threads,
        "model_class": "AlternatingLM (plain torch.nn.Module in scripts/reference/"
                       "alternating.py; no Hugging Face class)",
        "attn_implementation": "eager (explicit masked softmax; SDPA cross-checked)",
        "config": dict(CONFIG, num_parameters=n_params),
        "notes": notes,
        "files": {
            "model.safetensors": {
                "sha256": sha256(out_dir / "model.safetensors"),
                "metadata": st_meta,
                "dtypes": tensor_dtypes,
                "tensors": tensor_shapes,
            },
            "config.json": {"sha256": sha256(out_dir / "config.json")},
        },
        "prompts": [{"ids": ids} for ids in prompts],
        "prompt_generation": f"numpy.random.default_rng({PROMPT_SEED} + i).integers("
                             f"{FIRST_PROMPT_ID}, vocab_size, size=len_i) for prompt i; no "
                             "tokenizer, no BOS prepended",
        "logits_prompts": [0, 1],
        "logits": logits,
        "last_logits": last_logits,
        "max_new_tokens": MAX_NEW_TOKENS,
        "generate": f"greedy (argmax, first index on ties) for {MAX_NEW_TOKENS} tokens, full "
                    "recompute of the whole sequence at each step, no EOS / stop token",
        "greedy": res["greedy"],
        "greedy_min_margin": [f32(m) for m in res["min_margin"]],
        "greedy_margins": [[f32(x) for x in m] for m in res["margins"]],
        "greedy_distinct_tokens": res["distinct"],
        "sdpa_vs_eager": {"max_abs_logit_diff": sdpa_diff, "greedy_equal": sdpa_greedy_equal,
                          "batched_greedy_equal": sdpa_batched_equal},
        "numpy_float64_check": numpy_check,
        "batched_greedy": {
            "padding_side": "left",
            "pad_token_id": PAD_ID,
            "position_ids": "attention_mask.cumsum(-1) - 1 (pads: 1), as HF generate does",
            "input_ids": enc[0].tolist(),
            "attention_mask": enc[1].tolist(),
            "tokens": bnew,
            "equals_alone": res["batched_equal"],
            "min_margin": [f32(min(m)) for m in bmargins],
            "first_step_max_abs_diff_vs_alone_last_logits": first_step_diff,
        },
        "sliding_window": {
            "sliding_window": W,
            "windowed_layers": CONFIG["window_layers"],
            "global_layers": CONFIG["global_layers"],
            "rule": window_rule,
            "check": "logits of prompt 3 + its greedy continuation vs the same weights with all "
                     "layers global / with the windows on the odd layers: identical (exactly) "
                     f"at positions 0..{W - 1}, different from position {W} on; numpy with "
                     "rule p-W<j<=p matches, p-W<=j<=p does not",
            "per_position_max_abs_logit_diff_vs_full_attention":
                [f32(x) for x in per_pos["all_layers_global"]],
            "per_position_max_abs_logit_diff_vs_windows_on_odd_layers":
                [f32(x) for x in per_pos["windows_on_odd_layers"]],
            "variants": variant_check,
            "kv_cache": "not exercised by the reference (full recompute at every step)",
        },
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    (out_dir / "reference.json").write_text(text + "\n", encoding="utf-8")

    print(f"== {NAME} (seed {seed}, {n_params} parameters)")
    print(f"  tensors ({len(tensor_names)}, {tensor_dtypes})")
    for i, ids in enumerate(prompts):
        print(f"  prompt {i} ({len(ids)} tok): min_margin={res['min_margin'][i]:.4g} "
              f"distinct={res['distinct'][i]} batched==alone={res['batched_equal'][i]} "
              f"batched_min_margin={min(bmargins[i]):.4g}")
    print(f"  f32 drift={res['f32_drift']:.3e}; batched first-step diff "
          f"max={max(first_step_diff):.3e}")
    print(f"  sdpa: diff={sdpa_diff:.3e} greedy_equal={sdpa_greedy_equal} "
          f"batched_equal={sdpa_batched_equal}")
    print(f"  numpy check: {json.dumps(numpy_check, indent=1)}")
    print(f"  torch variants: {json.dumps(variant_check, indent=1)}")
    for f in sorted(out_dir.iterdir()):
        print(f"  {f.name}: {f.stat().st_size} bytes")
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"  total: {total} bytes")
    assert total < 1_250_000, total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 gives the most reproducible numbers)")
    ap.add_argument("--search-seeds", type=int, metavar="N", default=0,
                    help="instead of writing the fixture, try seeds 0..N-1 and print the "
                         "first acceptable one")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)

    if args.search_seeds:
        search_seeds(args.search_seeds)
    else:
        write_fixture(pathlib.Path(args.out), args.threads)


if __name__ == "__main__":
    main()
