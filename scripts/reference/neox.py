#!/usr/bin/env python3
"""Write a GPT-NeoX (parallel attention + MLP residual, partial rotary, fused per-head QKV,
LayerNorm, exact GELU, untied head) reference fixture under tests/fixtures/neox/neox/, computed
with Hugging Face transformers on the CPU.

The directory looks like a user's Hugging Face checkpoint directory plus a reference file:
    config.json, generation_config.json, model.safetensors
                     GPTNeoXForCausalLM.save_pretrained(dir, safe_serialization=True),
                     random weights from a fixed seed (see init_weights)
    reference.json   same layout as tests/fixtures/bloom/bloom/reference.json (written by
                     scripts/reference/bloom.py): prompts (token ids only: no tokenizer, the
                     ids come from a seeded RNG), logits of a forward pass, greedy
                     continuations (alone and as a left-padded batch), greedy top1-top2
                     margins, and `notes` that spell out the conventions (fused QKV row
                     layout, which head dims rotate and how they are paired, rotary
                     frequencies, positions under left padding, the parallel residual, GELU,
                     the final norm and the untied head, tensor names / ignorable buffers)

Config: GPTNeoXForCausalLM, 64 wide, 4 heads (head_dim 16), 2 layers, MLP 256, vocab 320,
rotary_pct 0.5 (8 of the 16 head dims rotate), rotary_emb_base 10000, max_position_embeddings
128, layer_norm_eps 1e-5, use_parallel_residual, untied embed_out, attention_bias, no dropout,
eager attention, float32.

Every statement in `notes` is checked against an independent float64 numpy implementation of
the forward pass (numpy_forward) written from those notes, and the alternative conventions
(q/k/v as three contiguous blocks; full-head rotary (rotary_pct=1); interleaved (2i, 2i+1)
pairing; rotating the LAST rotary_ndims dims; frequencies over head_dim instead of
rotary_ndims; no rotary; the sequential residual; tanh GELU; a tied head) are shown NOT to
match, so the notes are determined empirically, not copied from the source.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/neox.py
and, for tests/fixtures/neox/neox_v5 (the same weights saved by transformers 5.x with its new
names: `lm_head.weight` for `embed_out.weight`; rotary settings under config.json's
`rope_parameters`; see transformers5.py), through scripts/setup-reference5.sh's overlay:
    PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/neox.py --transformers5
The seed is fixed in SEED; --search-seeds N re-runs the seed search (prints the first seed in
0..N-1 that satisfies the margin / diversity criteria) instead of writing the fixture.
"""
import os

# Never touch a model hub: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import hashlib
import json
import math
import pathlib
import shutil
import sys

import numpy as np
import safetensors
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file as np_save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import transformers5 as v5

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "neox"
NAME = "neox"

MAX_NEW_TOKENS = 32
# Acceptance criteria for a seed (checked for every prompt, alone and batched), as in bloom.py.
MIN_MARGIN = 5e-3          # min over steps of (top1 logit - top2 logit)
MIN_DISTINCT = 12          # distinct tokens among the 32 generated ones
MAX_F32_DRIFT = 5e-5       # max |HF float32 logits - numpy float64 logits| over the prompts
PAD_ID = 0                 # left padding id of the batched run (masked out; prompts avoid it)
BOS_ID, EOS_ID = 1, 2
FIRST_PROMPT_ID = 3        # prompt ids are drawn from [3, vocab): 0/1/2 = pad/bos/eos
PROMPT_SEED = 20250301     # numpy default_rng seed of the prompt ids (prompt i: + i)
PROMPT_LENGTHS = [3, 9, 14, 20]
SEED = 14  # chosen by --search-seeds 30 (first seed meeting the criteria)

CONFIG = dict(
    vocab_size=320,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    hidden_act="gelu",
    rotary_pct=0.5,
    rotary_emb_base=10000,
    max_position_embeddings=128,
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    attention_bias=True,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    initializer_range=0.02,  # unused: init_weights overwrites every parameter
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
)
EMBED_STD = 1.0  # embed_in ~ N(0, EMBED_STD)
# Linear weights (and the untied embed_out) ~ N(0, gain / sqrt(fan_in)).
LINEAR_GAIN = {"query_key_value": 1.0, "dense": 1.0, "dense_h_to_4h": 1.0,
               "dense_4h_to_h": 1.0, "embed_out": 4.0}


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


def rotary_pct(cfg):
    """The rotary fraction: `rotary_pct` in transformers 4.x, `rope_parameters` in 5.x."""
    if hasattr(cfg, "rope_parameters"):
        return cfg.rope_parameters["partial_rotary_factor"]
    return cfg.rotary_pct


def rotary_base(cfg):
    """The rotary base: `rotary_emb_base` in transformers 4.x, `rope_parameters` in 5.x."""
    if hasattr(cfg, "rope_parameters"):
        return cfg.rope_parameters["rope_theta"]
    return cfg.rotary_emb_base


def as_v4_names(model, tensors):
    """A {name: tensor} of `model`'s (file or state_dict) under the 4.x checkpoint names the
    numpy forward and the notes use (transformers 5.x: lm_head.weight -> embed_out.weight)."""
    names = v5.checkpoint_names(model)
    return {names.get(k, k): v for k, v in tensors.items()}


def make_prompts(vocab_size):
    prompts = []
    for i, n in enumerate(PROMPT_LENGTHS):
        rng = np.random.default_rng(PROMPT_SEED + i)
        prompts.append([int(x) for x in rng.integers(FIRST_PROMPT_ID, vocab_size, size=n)])
    return prompts


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic random weights, independent of HF's _init_weights call order, chosen so
    every tensor matters (HF's init has zero biases and unit LayerNorm weights):
    LayerNorm weights 1 + N(0, 0.1), all biases (LayerNorm and Linear) N(0, 0.1),
    embed_in N(0, EMBED_STD), Linear weights and embed_out N(0, gain/sqrt(fan_in)) with the
    per-module gains of LINEAR_GAIN. Parameters are drawn in sorted-name order from one
    torch.Generator(seed).
    """
    gen = torch.Generator().manual_seed(seed)
    emb = model.gpt_neox.embed_in.weight
    assert model.get_output_embeddings().weight.data_ptr() != emb.data_ptr(), "head must be untied"
    # Drawn in the order of, and by the rule for, the 4.x checkpoint names (transformers 5.x
    # calls embed_out lm_head in memory; the weights stay the 4.57 fixture's).
    names = v5.checkpoint_names(model)
    params = [(names[n], p) for n, p in model.named_parameters(remove_duplicate=False)]
    for name, p in sorted(params, key=lambda t: t[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if p is emb:
            val = noise * EMBED_STD
        elif "layernorm" in name or "layer_norm" in name:
            val = 1.0 + 0.1 * noise if name.endswith(".weight") else 0.1 * noise
        elif name.endswith(".bias"):
            val = 0.1 * noise
        elif name.endswith(".weight"):
            assert p.dim() == 2, name
            gain = LINEAR_GAIN[name.split(".")[-2]]
            val = noise * (gain / math.sqrt(p.shape[1]))
        else:
            raise AssertionError(f"unexpected parameter {name}")
        p.copy_(val)


def build_model(seed, attn="eager"):
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM._from_config(GPTNeoXConfig(**CONFIG), attn_implementation=attn,
                                            torch_dtype=torch.float32)
    init_weights(model, seed)
    model.eval()
    return model


def margins_of(step_logits):
    """top1 - top2 of each row of [steps, vocab]."""
    top2 = torch.topk(step_logits.float(), 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


GEN_KW = dict(do_sample=False, num_beams=1, max_new_tokens=MAX_NEW_TOKENS,
              min_new_tokens=MAX_NEW_TOKENS, pad_token_id=PAD_ID, eos_token_id=None,
              return_dict_in_generate=True, output_logits=True)


@torch.inference_mode()
def greedy_alone(model, ids, **overrides):
    inp = torch.tensor([ids], dtype=torch.long)
    out = model.generate(inp, attention_mask=torch.ones_like(inp), **dict(GEN_KW, **overrides))
    new = out.sequences[0, len(ids):].tolist()
    assert len(new) == MAX_NEW_TOKENS, len(new)
    step_logits = torch.cat([l for l in out.logits], dim=0)  # [steps, vocab]
    assert step_logits.shape[0] == MAX_NEW_TOKENS
    assert step_logits.argmax(-1).tolist() == new
    return new, margins_of(step_logits)


@torch.inference_mode()
def greedy_no_cache(model, ids):
    """Independent greedy loop: full forward over the whole sequence each step."""
    seq = list(ids)
    for _ in range(MAX_NEW_TOKENS):
        logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
        seq.append(int(logits.argmax()))
    return seq[len(ids):]


def left_pad(prompts):
    width = max(len(p) for p in prompts)
    input_ids = [[PAD_ID] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(input_ids), torch.tensor(mask)


def generate_position_ids(mask):
    """What GenerationMixin.prepare_inputs_for_generation passes as position_ids."""
    pos = mask.long().cumsum(-1) - 1
    pos.masked_fill_(mask == 0, 1)
    return pos


@torch.inference_mode()
def greedy_batched(model, prompts):
    input_ids, mask = left_pad(prompts)
    width = input_ids.shape[1]
    out = model.generate(input_ids, attention_mask=mask, **GEN_KW)
    new = out.sequences[:, width:].tolist()
    assert all(len(n) == MAX_NEW_TOKENS for n in new)
    step_logits = torch.stack(list(out.logits), dim=1)  # [batch, steps, vocab]
    margins = [margins_of(step_logits[b]) for b in range(len(prompts))]
    return (input_ids, mask), new, margins, step_logits[:, 0, :]


def evaluate(model, prompts, check_no_cache=False):
    res = {"greedy": [], "margins": [], "min_margin": [], "distinct": []}
    for ids in prompts:
        new, m = greedy_alone(model, ids)
        if check_no_cache:
            nc = greedy_no_cache(model, ids)
            assert nc == new, f"generate (KV cache) vs no-cache greedy differ: {new} vs {nc}"
        res["greedy"].append(new)
        res["margins"].append(m)
        res["min_margin"].append(min(m))
        res["distinct"].append(len(set(new)))
    enc, bnew, bmargins, bfirst = greedy_batched(model, prompts)
    res["batched"] = (enc, bnew, bmargins, bfirst)
    res["batched_equal"] = [a == b for a, b in zip(res["greedy"], bnew)]
    res["f32_drift"] = f32_drift(model, prompts)
    return res


@torch.inference_mode()
def f32_drift(model, prompts):
    """max |float32 HF logits - float64 numpy logits| over the prompts (how far any float32
    implementation may be expected to land from the exact result)."""
    sd = as_v4_names(model, {k: v.numpy() for k, v in model.state_dict().items()})
    return max(float(np.abs(model(torch.tensor([ids])).logits[0].double().numpy()
                            - numpy_forward(sd, model.config, ids)).max()) for ids in prompts)


def acceptable(res):
    # EOS (2) must never be generated, so "eos disabled" (eos_token_id=None) and "eos
    # suppressed" (eos_token_id=2 with min_new_tokens=32, i.e. its logit set to -inf) give the
    # same tokens and a Rust greedy loop needs no EOS special case.
    return (min(res["min_margin"]) >= MIN_MARGIN
            and min(min(m) for m in res["batched"][2]) >= MIN_MARGIN
            and min(res["distinct"]) >= MIN_DISTINCT
            and all(res["batched_equal"])
            and all(EOS_ID not in g for g in res["greedy"])
            and res["f32_drift"] <= MAX_F32_DRIFT)


# ------------------------------------------------------------- independent numpy reference

def rotary_plan(cfg, rotary):
    """(first rotated dim, number of rotated dims, pairing, inverse frequencies [n/2])."""
    H, C = cfg.num_attention_heads, cfg.hidden_size
    D = C // H
    R = int(D * rotary_pct(cfg))
    base = float(rotary_base(cfg))

    def inv(n, denom):
        return base ** (-2.0 * np.arange(n // 2, dtype=np.float64) / denom)

    if rotary == "neox":            # stated
        return 0, R, "halves", inv(R, R)
    if rotary == "full":            # rotary_pct = 1
        return 0, D, "halves", inv(D, D)
    if rotary == "interleaved":     # GPT-J / Meta style pairs (2i, 2i+1)
        return 0, R, "interleaved", inv(R, R)
    if rotary == "last_dims":       # rotate dims D-R..D-1 instead of 0..R-1
        return D - R, R, "halves", inv(R, R)
    if rotary == "freq_over_head_dim":  # right dims, but base^(-2i/head_dim)
        return 0, R, "halves", inv(R, D)
    if rotary == "none":
        return 0, 0, "halves", inv(0, 1)
    raise ValueError(rotary)


def apply_rotary(x, pos, plan):
    """x [L, H, D] float64, pos [L] -> rotated copy."""
    off, n, pairing, inv = plan
    if n == 0:
        return x
    ang = pos[:, None].astype(np.float64) * inv[None, :]          # [L, n/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]       # [L, 1, n/2]
    out = x.copy()
    if pairing == "halves":        # dim off+d paired with off+d+n/2, d < n/2
        a, b = x[..., off:off + n // 2], x[..., off + n // 2:off + n]
        out[..., off:off + n // 2] = a * c - b * s
        out[..., off + n // 2:off + n] = b * c + a * s
    else:                          # dim off+2i paired with off+2i+1
        a, b = x[..., off:off + n:2], x[..., off + 1:off + n:2]
        out[..., off:off + n:2] = a * c - b * s
        out[..., off + 1:off + n:2] = b * c + a * s
    return out


def numpy_forward(sd, cfg, ids, mask=None, positions="cumsum", qkv="per_head", rotary="neox",
                  residual="parallel", gelu="erf", head="untied"):
    """float64 logits [len, vocab] of one sequence (optionally left padded: mask = 0/1 list).

    qkv:       "per_head": fused output row r = h*3*D + c*D + d (c = 0 q, 1 k, 2 v), stated;
               "blocked": r = c*hidden + h*D + d (q block, k block, v block).
    rotary:    see rotary_plan ("neox" is the stated convention).
    positions: "cumsum": pos = cumsum(mask) - 1 (stated; = 0..L-1 without padding);
               "column": the raw column index (pads counted).
    residual:  "parallel" (stated: x + attn(ln1(x)) + mlp(ln2(x))) or "sequential".
    gelu:      "erf" (stated) or "tanh".
    head:      "untied" (stated: embed_out) or "tied" (embed_in^T).
    Rows of pad queries (mask 0) are returned as zeros.
    """
    g = {k.removeprefix("gpt_neox."): v.astype(np.float64) for k, v in sd.items()}
    H, C = cfg.num_attention_heads, cfg.hidden_size
    D, eps, L = C // H, cfg.layer_norm_eps, len(ids)
    mask = np.ones(L, dtype=np.int64) if mask is None else np.asarray(mask, dtype=np.int64)
    if positions == "cumsum":
        pos = np.cumsum(mask) - 1
    elif positions == "column":
        pos = np.arange(L)
    else:
        raise ValueError(positions)
    plan = rotary_plan(cfg, rotary)

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g[name + ".weight"] + g[name + ".bias"]

    def lin(x, name):
        return x @ g[name + ".weight"].T + g[name + ".bias"]

    def act(x):
        if gelu == "erf":
            from scipy.special import erf
            return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

    i_idx, j_idx = np.arange(L)[:, None], np.arange(L)[None, :]
    allowed = (j_idx <= i_idx) & (mask[None, :] == 1)

    def attn(hn, pre):
        fused = lin(hn, pre + "attention.query_key_value")                # [L, 3C]
        if qkv == "per_head":
            f = fused.reshape(L, H, 3, D)
            q, k, v = f[:, :, 0, :], f[:, :, 1, :], f[:, :, 2, :]          # [L, H, D]
        else:
            f = fused.reshape(L, 3, H, D)
            q, k, v = f[:, 0], f[:, 1], f[:, 2]
        q, k = apply_rotary(q, pos, plan), apply_rotary(k, pos, plan)
        heads = []
        for h in range(H):
            s = q[:, h, :] @ k[:, h, :].T / math.sqrt(D)
            s = np.where(allowed, s, -np.inf)
            m = s.max(-1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0.0)
            e = np.exp(s - m)
            den = e.sum(-1, keepdims=True)
            p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
            heads.append(p @ v[:, h, :])
        return lin(np.concatenate(heads, axis=-1), pre + "attention.dense")

    def mlp(hn, pre):
        return lin(act(lin(hn, pre + "mlp.dense_h_to_4h")), pre + "mlp.dense_4h_to_h")

    x = g["embed_in.weight"][ids]
    for li in range(cfg.num_hidden_layers):
        pre = f"layers.{li}."
        a = attn(ln(x, pre + "input_layernorm"), pre)
        if residual == "parallel":
            x = x + a + mlp(ln(x, pre + "post_attention_layernorm"), pre)
        else:
            x = x + a
            x = x + mlp(ln(x, pre + "post_attention_layernorm"), pre)
    x = ln(x, "final_layer_norm")
    w = g["embed_out.weight"] if head == "untied" else g["embed_in.weight"]
    return (x @ w.T) * mask[:, None]


@torch.inference_mode()
def hf_float64_diff(out_dir, check_seqs):
    """HF GPT-NeoX in float64 vs the numpy float64 reference. Two places of HF's code force
    float32 even in a float64 model: eager_attention_forward's softmax(dtype=torch.float32) and
    GPTNeoXRotaryEmbedding (float32 inv_freq buffer, autocast-disabled float32 matmul for the
    angles). The softmax is made float64 and the rotary module's forward is replaced by the
    same formula in float64 (asserted equal to HF's float32 cos/sin to 1e-6 first);
    everything else is HF's own code."""
    m64 = GPTNeoXForCausalLM.from_pretrained(out_dir, attn_implementation="eager",
                                             torch_dtype=torch.float64).eval()
    with safe_open(str(out_dir / "model.safetensors"), framework="np") as f:
        sd = as_v4_names(m64, {k: f.get_tensor(k) for k in f.keys()})
    cfg = m64.config
    rot = m64.gpt_neox.rotary_emb
    R = int(cfg.hidden_size // cfg.num_attention_heads * rotary_pct(cfg))
    inv64 = 1.0 / (float(rotary_base(cfg))
                   ** (torch.arange(0, R, 2, dtype=torch.float64) / R))

    def rot64(x, position_ids):
        freqs = position_ids[:, :, None].double() * inv64[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    probe_pos = torch.arange(128)[None]
    c32, s32 = rot.forward(torch.zeros(1, dtype=torch.float64), probe_pos)
    c64, s64 = rot64(torch.zeros(1, dtype=torch.float64), probe_pos)
    assert float((c32 - c64).abs().max()) < 1e-5 and float((s32 - s64).abs().max()) < 1e-5

    orig_softmax = torch.nn.functional.softmax
    torch.nn.functional.softmax = lambda x, dim=-1, dtype=None, **kw: orig_softmax(x, dim=dim)
    rot.forward = rot64
    try:
        return max(float(np.abs(m64(torch.tensor([s])).logits[0].numpy()
                                - numpy_forward(sd, cfg, s)).max())
                   for s, _ in check_seqs)
    finally:
        torch.nn.functional.softmax = orig_softmax
        del rot.forward


# ----------------------------------------------------------------------------- main

def search_seeds(max_seed):
    prompts = make_prompts(CONFIG["vocab_size"])
    for seed in range(max_seed):
        model = build_model(seed)
        model.generation_config.eos_token_id = None
        res = evaluate(model, prompts)
        ok = acceptable(res)
        print(f"seed {seed}: min_margin={min(res['min_margin']):.4g} "
              f"batched_min={min(min(m) for m in res['batched'][2]):.4g} "
              f"distinct={res['distinct']} batched_equal={res['batched_equal']} "
              f"eos_in_greedy={[EOS_ID in g for g in res['greedy']]} "
              f"f32_drift={res['f32_drift']:.2e} ok={ok}", flush=True)
        if ok:
            print(f"first acceptable seed = {seed}")
            return seed
    print(f"no acceptable seed below {max_seed}")
    return None


def write_fixture(out_root, threads, tf5=False):
    seed = SEED
    out_dir = out_root / v5.variant(NAME, tf5)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    model = build_model(seed)
    if tf5:
        saved_by = v5.save(model, out_dir, native=True)
    else:
        model.save_pretrained(out_dir, safe_serialization=True)

    # Everything below is computed from what was written to disk, loaded the way a user
    # would load the directory.
    loaded = GPTNeoXForCausalLM.from_pretrained(out_dir, attn_implementation="eager",
                                                torch_dtype=torch.float32).eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    model = loaded
    assert model.config._attn_implementation == "eager"
    model.generation_config.eos_token_id = None  # run the full MAX_NEW_TOKENS
    cfg = model.config
    H, C = cfg.num_attention_heads, cfg.hidden_size
    D = C // H
    R = int(D * rotary_pct(cfg))
    assert model.gpt_neox.layers[0].attention.rotary_ndims == R == 8

    with safe_open(str(out_dir / "model.safetensors"), framework="np") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()
        sd_np = {k: f.get_tensor(k) for k in tensor_names}
    assert sorted(sd_np) == sorted(model.state_dict()), "state_dict == saved tensors"
    sd_np = as_v4_names(model, sd_np)  # what numpy_forward and the notes call them
    assert "embed_out.weight" in sd_np and not any("inv_freq" in k for k in sd_np)
    buffers = {n: list(b.shape) for n, b in model.named_buffers()}
    config_json = json.loads((out_dir / "config.json").read_text())

    prompts = make_prompts(cfg.vocab_size)
    res = evaluate(model, prompts, check_no_cache=True)
    if not acceptable(res):
        sys.exit(f"seed {seed} does not meet the criteria: min_margin={res['min_margin']} "
                 f"distinct={res['distinct']} batched_equal={res['batched_equal']} "
                 f"f32_drift={res['f32_drift']}; run with --search-seeds")
    # "eos suppressed" variant: eos_token_id=2 with min_new_tokens=32 -> same tokens.
    eos_suppressed_equal = all(
        greedy_alone(model, ids, eos_token_id=EOS_ID)[0] == gr
        for ids, gr in zip(prompts, res["greedy"]))
    assert eos_suppressed_equal

    logits, last_logits, full_hf = [], [], []
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            lg = model(torch.tensor([ids])).logits[0]
            full_hf.append(lg.double().numpy())
            if i < 2:
                logits.append(f32_list(lg.numpy()))
            last_logits.append(f32_list(lg[-1].numpy()))

    # SDPA (supported for GPT-NeoX) vs eager: logits and greedy.
    sdpa = GPTNeoXForCausalLM.from_pretrained(out_dir, attn_implementation="sdpa",
                                              torch_dtype=torch.float32).eval()
    sdpa.generation_config.eos_token_id = None
    with torch.inference_mode():
        sdpa_diff = max(float((sdpa(torch.tensor([ids])).logits[0].double().numpy()
                               - hf).__abs__().max()) for ids, hf in zip(prompts, full_hf))
    sdpa_greedy_equal = all(greedy_alone(sdpa, ids)[0] == gr
                            for ids, gr in zip(prompts, res["greedy"]))
    sdpa_batched_equal = greedy_batched(sdpa, prompts)[1] == res["batched"][1]
    del sdpa

    # ---- independent float64 numpy forward: stated conventions match, alternatives don't.
    long_seq = prompts[-1] + res["greedy"][-1]
    with torch.inference_mode():
        long_hf = model(torch.tensor([long_seq]), use_cache=False).logits[0].double().numpy()
    check_seqs = list(zip(prompts + [long_seq], full_hf + [long_hf]))

    def np_diff(**kw):
        return max(float(np.abs(numpy_forward(sd_np, cfg, s, **kw) - hf).max())
                   for s, hf in check_seqs)

    numpy_check = {"sequences": [len(s) for s, _ in check_seqs],
                   "max_abs_diff_stated_conventions": np_diff()}
    numpy_check["max_abs_diff_hf_float64_vs_numpy"] = hf_float64_diff(out_dir, check_seqs)
    numpy_check["note"] = (
        "numpy_forward is float64 and written from `notes`; HF runs in float32, so the "
        "stated-conventions diff is float32 rounding only: the same HF model cast to float64 "
        "(with eager_attention_forward's hard-coded float32 softmax and "
        "GPTNeoXRotaryEmbedding's hard-coded float32 angles made float64) matches numpy to "
        "max_abs_diff_hf_float64_vs_numpy")
    alternatives = [
        ("qkv_blocked_q_then_k_then_v", dict(qkv="blocked")),
        ("full_head_rotary_rotary_pct_1", dict(rotary="full")),
        ("interleaved_pairs_2i_2i_plus_1", dict(rotary="interleaved")),
        ("rotate_last_rotary_ndims_dims", dict(rotary="last_dims")),
        ("inv_freq_over_head_dim_not_rotary_ndims", dict(rotary="freq_over_head_dim")),
        ("no_rotary", dict(rotary="none")),
        ("sequential_residual", dict(residual="sequential")),
        ("tied_head_embed_in_transposed", dict(head="tied")),
        ("tanh_gelu", dict(gelu="tanh")),
    ]
    for name, kw in alternatives:
        numpy_check[f"max_abs_diff_{name}"] = np_diff(**kw)
    stated = numpy_check["max_abs_diff_stated_conventions"]
    assert stated < 1e-4, numpy_check
    assert numpy_check["max_abs_diff_hf_float64_vs_numpy"] < 1e-9, numpy_check
    for name, _ in alternatives:
        if name != "tanh_gelu":
            assert numpy_check[f"max_abs_diff_{name}"] > 1e-2, (name, numpy_check)
    assert numpy_check["max_abs_diff_tanh_gelu"] > 20 * stated, numpy_check

    # Left-padded batch. generate() passes position_ids = cumsum(mask) - 1 (pads 1); a plain
    # forward with only attention_mask uses the raw column index. Both are compared with numpy
    # on the real rows, and with the unpadded forward.
    enc, bnew, bmargins, bfirst = res["batched"]
    b_ids, b_mask = enc
    b_pos = generate_position_ids(b_mask)
    with torch.inference_mode():
        b_hf = model(b_ids, attention_mask=b_mask, position_ids=b_pos,
                     use_cache=False).logits.double().numpy()
        b_hf_col = model(b_ids, attention_mask=b_mask, use_cache=False).logits.double().numpy()

    def padded_diff(hf_out, **kw):
        out = 0.0
        for b in range(len(prompts)):
            m = b_mask[b].numpy()
            ref = numpy_forward(sd_np, cfg, b_ids[b].tolist(), mask=m, **kw)
            out = max(out, float(np.abs((ref - hf_out[b])[m == 1]).max()))
        return out

    def vs_alone(hf_out):
        return max(float(np.abs(hf_out[b][b_mask[b].numpy() == 1] - full_hf[b]).max())
                   for b in range(len(prompts)))

    numpy_check["left_padded_batch"] = {
        "hf_position_ids": "generate's: cumsum(attention_mask) - 1, pads set to 1",
        "max_abs_diff_stated_positions_cumsum_mask_minus_1": padded_diff(b_hf),
        "max_abs_diff_numpy_raw_column_index_positions": padded_diff(b_hf, positions="column"),
        "max_abs_diff_hf_padded_real_rows_vs_hf_alone": vs_alone(b_hf),
        "max_abs_diff_hf_forward_without_position_ids_real_rows_vs_hf_alone":
            vs_alone(b_hf_col),
        "max_abs_diff_numpy_full_head_rotary": padded_diff(b_hf, rotary="full"),
    }
    lp = numpy_check["left_padded_batch"]
    assert lp["max_abs_diff_stated_positions_cumsum_mask_minus_1"] < 1e-4, lp
    assert lp["max_abs_diff_numpy_raw_column_index_positions"] < 1e-4, lp
    assert lp["max_abs_diff_hf_padded_real_rows_vs_hf_alone"] < 1e-4, lp
    assert lp["max_abs_diff_hf_forward_without_position_ids_real_rows_vs_hf_alone"] < 1e-4, lp
    assert lp["max_abs_diff_numpy_full_head_rotary"] > 1e-2, lp

    # Does every tensor matter? Perturb each one (+0.05 N(0,1)) and record the max logit
    # change over prompt 3; the parts of layer 0's fused bias are recorded separately.
    sens = {}
    pgen = torch.Generator().manual_seed(12345)
    x3 = torch.tensor([prompts[3]])
    bias_name = "gpt_neox.layers.0.attention.query_key_value.bias"
    bias_parts = {
        "q rows": (0, range(D)),
        "k rows, rotary dims 0..7": (1, range(R)),
        "k rows, pass-through dims 8..15": (1, range(R, D)),
        "v rows": (2, range(D)),
    }
    with torch.inference_mode():
        base = model(x3).logits
        sd = model.state_dict()
        for n in tensor_names:
            orig = sd[n].clone()
            sd[n].add_(0.05 * torch.randn(orig.shape, generator=pgen))
            sens[n] = float((model(x3).logits - base).abs().max())
            sd[n].copy_(orig)
        for label, (c, dims) in bias_parts.items():
            orig = sd[bias_name].clone()
            rows = torch.tensor([h * 3 * D + c * D + d for h in range(H) for d in dims])
            sd[bias_name][rows] += 1.0
            sens[f"{bias_name}[{label}] += 1.0"] = float((model(x3).logits - base).abs().max())
            sd[bias_name].copy_(orig)
        assert torch.equal(model(x3).logits, base)
    k_pass_key = f"{bias_name}[k rows, pass-through dims 8..15] += 1.0"
    assert sens[k_pass_key] < 1e-4, sens
    assert sens[f"{bias_name}[k rows, rotary dims 0..7] += 1.0"] > 1e-2, sens
    assert min(v for k, v in sens.items() if "] +=" not in k) > 1e-3, sens

    # Legacy buffers found in older GPT-NeoX / Pythia checkpoints: from_pretrained must load a
    # file that also holds them, with identical logits; record what it reports.
    legacy_dir = out_root / (NAME + "_legacy_tmp")
    if legacy_dir.exists():
        shutil.rmtree(legacy_dir)
    shutil.copytree(out_dir, legacy_dir)
    inv_freq_hf = model.gpt_neox.rotary_emb.inv_freq.numpy().astype(np.float32)
    legacy = dict(sd_np)
    max_pos = cfg.max_position_embeddings
    for li in range(cfg.num_hidden_layers):
        p = f"gpt_neox.layers.{li}.attention."
        legacy[p + "bias"] = np.tril(np.ones((max_pos, max_pos), dtype=bool))[None, None]
        legacy[p + "masked_bias"] = np.array(-1e9, dtype=np.float32)
        legacy[p + "rotary_emb.inv_freq"] = inv_freq_hf
    np_save_file(legacy, str(legacy_dir / "model.safetensors"), metadata={"format": "pt"})
    legacy_model, legacy_info = GPTNeoXForCausalLM.from_pretrained(
        legacy_dir, attn_implementation="eager", torch_dtype=torch.float32,
        output_loading_info=True)
    with torch.inference_mode():
        legacy_diff = float((legacy_model.eval()(x3).logits - base).abs().max())
    shutil.rmtree(legacy_dir)
    assert legacy_diff == 0.0 and not legacy_info["missing_keys"], (legacy_diff, legacy_info)
    legacy_check = {
        "added_per_layer": {"attention.bias": [1, 1, max_pos, max_pos],
                            "attention.masked_bias": [],
                            "attention.rotary_emb.inv_freq": [R // 2]},
        "max_abs_logit_diff": legacy_diff,
        "unexpected_keys_reported": sorted(legacy_info["unexpected_keys"]),
        "missing_keys_reported": sorted(legacy_info["missing_keys"]),
    }

    first_step_diff = [float((bfirst[b] - torch.tensor(last_logits[b])).abs().max())
                       for b in range(len(prompts))]

    inv_freq = [float(x) for x in inv_freq_hf]
    inv_freq64 = [float(rotary_base(cfg) ** (-2.0 * i / R)) for i in range(R // 2)]
    qkv_rows = {f"r={h * 3 * D + c * D}..{h * 3 * D + c * D + D - 1}": f"{part} head {h}"
                for h in range(H) for c, part in enumerate("qkv")}
    lp_pos = [[int(v) for v in row] for row in b_pos.tolist()]
    notes = {
        "architecture": (
            "pre-norm decoder with a PARALLEL residual (use_parallel_residual=true): "
            "x = embed_in[ids] (no embedding LayerNorm, no position embeddings, no "
            "embedding scaling); per layer: x = x + dense(attn(query_key_value("
            "input_layernorm(x)))) + dense_4h_to_h(gelu(dense_h_to_4h("
            "post_attention_layernorm(x)))) -- both LayerNorms read the SAME layer input x; "
            "the MLP does not see the attention output of its own layer. logits = "
            "final_layer_norm(x) @ embed_out^T (untied head, no bias). Every Linear except "
            "embed_out has a bias (attention_bias=true covers query_key_value and "
            "attention.dense; the MLP Linears always have one); Linear weights are [out, in] "
            "(y = x @ W^T + b). No dropout at inference. Verified: the sequential residual "
            "x = x + attn(ln1(x)); x = x + mlp(ln2(x)) does NOT match (numpy_float64_check)."),
        "parallel_residual": (
            "x_out = x + attn(ln1(x)) + mlp(ln2(x)) with ln1 = "
            "gpt_neox.layers.N.input_layernorm and ln2 = "
            "gpt_neox.layers.N.post_attention_layernorm (despite its name ln2 is applied to "
            "the layer INPUT x, not to x + attn). HF sums it as mlp_output + attn_output + "
            "x."),
        "layer_norm": (
            f"standard LayerNorm over hidden ({C}): y = (x - mean) / sqrt(var + "
            f"{cfg.layer_norm_eps:g}) * weight + bias, var = biased (mean of squares of "
            "x - mean), eps inside the sqrt; used for input_layernorm, "
            "post_attention_layernorm and final_layer_norm (all with weight AND bias)."),
        "fused_qkv_layout": (
            f"attention.query_key_value: weight [{3 * C}, {C}], bias [{3 * C}]; its "
            f"{3 * C} outputs are viewed as [n_head={H}, 3, head_dim={D}] (head-major, q/k/v "
            f"interleaved PER HEAD, exactly like BLOOM), NOT [3, n_head, head_dim]: output "
            f"row r = h*{3 * D} + c*{D} + d  <=>  h = r // {3 * D}, c = (r % {3 * D}) // {D} "
            f"(0 = q, 1 = k, 2 = v), d = r % {D}. So head h's query is rows "
            f"h*{3 * D}+0..{D - 1}, its key rows h*{3 * D}+{D}..{2 * D - 1}, its value rows "
            f"h*{3 * D}+{2 * D}..{3 * D - 1} (the bias uses the same row order). HF: "
            f"qkv.view(B, L, {H}, {3 * D}).chunk(3, dim=-1). Verified: numpy with this layout "
            f"matches, numpy with q = rows 0..{C - 1}, k = {C}..{2 * C - 1}, v = "
            f"{2 * C}..{3 * C - 1} does not (see numpy_float64_check). Head outputs are "
            f"concatenated in head order (head h -> columns h*{D}..h*{D}+{D - 1}) before "
            "attention.dense."),
        "fused_qkv_rows": qkv_rows,
        "rotary": (
            f"rotary_ndims = int(head_dim * rotary_pct) = int({D} * {rotary_pct(cfg)}) = {R}. "
            f"Within EACH head (after splitting q and k out of the fused output, before the "
            f"scores), only the FIRST {R} dims d = 0..{R - 1} are rotated; dims "
            f"{R}..{D - 1} pass through unchanged. v is never rotated. Pairing is "
            f"rotate_half over the rotary part only (GPT-NeoX / 'halves' style, not "
            f"interleaved): dim d is paired with dim d + {R // 2} for d = 0..{R // 2 - 1}, "
            f"with angle theta_d(p) = p * inv_freq[d]: x'[d] = x[d] cos - x[d+{R // 2}] sin, "
            f"x'[d+{R // 2}] = x[d+{R // 2}] cos + x[d] sin. inv_freq[i] = base^(-2i / "
            f"rotary_ndims) = {rotary_base(cfg)}^(-2i/{R}), i = 0..{R // 2 - 1} "
            f"(denominator rotary_ndims={R}, NOT head_dim={D}): float64 {inv_freq64}; HF "
            f"computes them in float32 as 1 / base^(arange(0, {R}, 2) / {R}) = {inv_freq}. "
            "Applied to q and k of every layer with the same cos/sin; scores = q'.k' / "
            f"sqrt({D}) (scaling = head_dim^-0.5, after rotation), causal + padding mask, "
            "float32 softmax. Verified NOT to match: rotary over the full head "
            "(rotary_pct=1: 16 dims, pairs d/d+8, base^(-2i/16)), interleaved pairs "
            f"(2i, 2i+1) within the first {R} dims, rotating the LAST {R} dims, frequencies "
            f"base^(-2i/{D}), and no rotary at all (see numpy_float64_check). K is cached "
            "after rotation."),
        "positions": (
            "position p of a token = number of real (unpadded) tokens before it: without "
            "padding p = 0..L-1; generate() passes position_ids = attention_mask.cumsum(-1) "
            "- 1 with pads set to 1 (masked_fill(mask == 0, 1)); pads are masked out as keys, "
            "so their positions are irrelevant. In cached generation the new token's position "
            "is cumsum(mask) - 1 (consecutive after the last real token). Because RoPE "
            "scores depend only on p(query) - p(key), any per-row offset cancels: a plain "
            "forward with attention_mask but WITHOUT position_ids (HF then uses the raw "
            "column index 0..W-1, pads counted) gives the same real-row logits to float "
            "precision (checked: numpy_float64_check.left_padded_batch). Real rows of the "
            "left-padded batch equal the unpadded forward. max_position_embeddings = "
            f"{cfg.max_position_embeddings} only bounds the rope cache; no learned positions. "
            f"generate's position_ids of the fixture's padded batch: {lp_pos}"),
        "gelu": (
            "hidden_act='gelu' -> transformers GELUActivation = torch gelu (exact, erf): "
            "gelu(x) = 0.5 x (1 + erf(x / sqrt(2))). The tanh approximation does NOT match "
            "(numpy diff recorded in numpy_float64_check.max_abs_diff_tanh_gelu; small, as "
            "the two differ by < 1e-3 pointwise, but far above float32 noise)."),
        "mlp": f"mlp.dense_h_to_4h [{cfg.intermediate_size}, {C}] + bias -> gelu -> "
               f"mlp.dense_4h_to_h [{C}, {cfg.intermediate_size}] + bias (intermediate_size "
               "from config).",
        "final_norm_and_head": (
            "gpt_neox.final_layer_norm (LayerNorm, weight + bias) after the last layer; "
            "logits = final_layer_norm(x) @ embed_out.weight^T with embed_out.weight "
            f"[{cfg.vocab_size}, {C}], no bias, NOT tied (tie_word_embeddings=false): "
            "embed_out.weight is stored in model.safetensors, is distinct from "
            "gpt_neox.embed_in.weight, and using embed_in^T does NOT match (checked). "
            "Note 'embed_out' has no 'gpt_neox.' prefix."),
        "tensor_names": (
            "the safetensors file holds exactly the parameters: gpt_neox.embed_in.weight, "
            "per layer gpt_neox.layers.N.{input_layernorm,post_attention_layernorm}."
            "{weight,bias}, gpt_neox.layers.N.attention.{query_key_value,dense}.{weight,bias}, "
            "gpt_neox.layers.N.mlp.{dense_h_to_4h,dense_4h_to_h}.{weight,bias}, "
            "gpt_neox.final_layer_norm.{weight,bias}, embed_out.weight (shapes in "
            "files.model.safetensors.tensors). No buffers are saved: the rotary inv_freq is a "
            "non-persistent buffer (gpt_neox.rotary_emb.inv_freq in named_buffers, not in "
            "state_dict)."),
        "ignorable_buffers": (
            "older GPT-NeoX / Pythia checkpoints (written by earlier transformers versions) "
            "also carry, per layer, gpt_neox.layers.N.attention.bias (bool causal mask [1, 1, "
            "max_pos, max_pos]), gpt_neox.layers.N.attention.masked_bias (scalar -1e9) and "
            f"gpt_neox.layers.N.attention.rotary_emb.inv_freq [{R // 2}]. They are not "
            "weights; a loader should ignore them (recompute inv_freq from the config). "
            "Checked: a copy of this checkpoint with those tensors added loads in "
            "GPTNeoXForCausalLM.from_pretrained with bit-identical logits "
            "(see legacy_buffers_check: no missing keys, and not even reported as unexpected: "
            "attention.bias / attention.masked_bias match GPTNeoXPreTrainedModel."
            "_keys_to_ignore_on_load_unexpected, and PreTrainedModel adds the pattern "
            "rotary_emb\\.inv_freq for models that have a rotary_emb.inv_freq buffer)."),
        "qkv_bias_k_part": (
            "the key bias matters ONLY in the rotary dims: on the pass-through dims "
            f"({R}..{D - 1} of each head's k rows) it adds q_pass(i) . b_k / sqrt(d) to every "
            "score of row i (a per-row constant that softmax removes), while on the rotary "
            "dims the rotated bias R(p_j) b_k varies with the key position (checked: "
            "tensor_sensitivity; +1.0 on the pass-through k-bias rows changes the logits by "
            "< 1e-4)."),
        "config_json_keys": (
            "config.json spells rotary_pct (also duplicated as partial_rotary_factor), "
            "rotary_emb_base (also rope_theta), layer_norm_eps, use_parallel_residual, "
            "attention_bias, tie_word_embeddings=false, hidden_act='gelu'."),
        "sdpa": "GPT-NeoX supports SDPA in transformers "
                f"{transformers.__version__}; sdpa logits differ from eager by float noise "
                "only and greedy is identical (see sdpa_vs_eager). The fixture is eager.",
    }

    doc = {
        "generator": "scripts/reference/neox.py",
        "name": NAME,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "seed": seed,
        "init": "random (see init_weights), torch.Generator seed = `seed`, parameters in "
                "sorted-name order: LayerNorm weights 1+N(0, 0.1), all biases N(0, 0.1), "
                "Linear weights and embed_out N(0, gain/sqrt(fan_in)) with gains "
                f"{LINEAR_GAIN}, embed_in N(0, {EMBED_STD})",
        "torch_threads": threads,
        "model_class": "GPTNeoXForCausalLM",
        "attn_implementation": "eager",
        "config": {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": C,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": H,
            "head_dim": D,
            "rotary_ndims": R,
            "rotary_pct": rotary_pct(cfg),
            "rotary_emb_base": rotary_base(cfg),
            "max_position_embeddings": cfg.max_position_embeddings,
            "intermediate_size": cfg.intermediate_size,
            "hidden_act": cfg.hidden_act,
            "layer_norm_eps": cfg.layer_norm_eps,
            "use_parallel_residual": cfg.use_parallel_residual,
            "attention_bias": cfg.attention_bias,
            "hidden_dropout": cfg.hidden_dropout,
            "attention_dropout": cfg.attention_dropout,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "config_json": config_json,
        },
        "notes": notes,
        "rotary_inv_freq": inv_freq,
        "buffers_not_saved": buffers,
        "legacy_buffers_check": legacy_check,
        "files": {
            "model.safetensors": {
                "sha256": sha256(out_dir / "model.safetensors"),
                "metadata": st_meta,
                "dtypes": tensor_dtypes,
                "tensors": tensor_shapes,
            },
        },
        "prompts": [{"ids": ids} for ids in prompts],
        "prompt_generation": f"numpy.random.default_rng({PROMPT_SEED} + i).integers("
                             f"{FIRST_PROMPT_ID}, vocab_size, size=len_i) for prompt i; no "
                             "tokenizer, no BOS prepended",
        "logits_prompts": [0, 1],
        "logits": logits,
        "last_logits": last_logits,
        "max_new_tokens": MAX_NEW_TOKENS,
        "generate": "model.generate(ids, attention_mask=1s, do_sample=False, num_beams=1, "
                    f"max_new_tokens={MAX_NEW_TOKENS}, min_new_tokens={MAX_NEW_TOKENS}, "
                    f"pad_token_id={PAD_ID}, eos_token_id=None) (eos disabled; the seed was "
                    f"chosen so eos ({EOS_ID}) is never generated, and eos_token_id={EOS_ID} "
                    f"with min_new_tokens={MAX_NEW_TOKENS} (eos logit -inf) was checked to "
                    "give the same tokens; cached greedy == no-cache greedy asserted)",
        "greedy": res["greedy"],
        "greedy_min_margin": [f32(m) for m in res["min_margin"]],
        "greedy_margins": [[f32(x) for x in m] for m in res["margins"]],
        "greedy_distinct_tokens": res["distinct"],
        "greedy_eos_suppressed_equal": eos_suppressed_equal,
        "sdpa_vs_eager": {"supported": True, "max_abs_logit_diff": sdpa_diff,
                          "greedy_equal": sdpa_greedy_equal,
                          "batched_greedy_equal": sdpa_batched_equal},
        "numpy_float64_check": numpy_check,
        "tensor_sensitivity": {
            "what": "max |logit change| over prompt 3 after adding 0.05*N(0,1) to one tensor "
                    "(or +1.0 to parts of layer 0's fused q / k / v bias rows)",
            "max_abs_logit_change": sens,
        },
        "batched_greedy": {
            "padding_side": "left",
            "pad_token_id": PAD_ID,
            "positions": "rotary positions = generate's position_ids = (attention_mask."
                         "cumsum(-1) - 1), pads set to 1 (first real token 0)",
            "input_ids": b_ids.tolist(),
            "attention_mask": b_mask.tolist(),
            "position_ids": lp_pos,
            "tokens": bnew,
            "equals_alone": res["batched_equal"],
            "min_margin": [f32(min(m)) for m in bmargins],
            "first_step_max_abs_diff_vs_alone_last_logits": first_step_diff,
        },
    }
    if tf5:
        doc["names_in_notes"] = "4.x checkpoint names (embed_out.weight); this file's: v4_fixture.renamed"
        doc.update(v5.record(model, out_dir, out_root / NAME, saved_by, doc,
                             equal=["prompts", "greedy", "batched_greedy.tokens"],
                             close=["logits", "last_logits"]))
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    (out_dir / "reference.json").write_text(text + "\n", encoding="utf-8")

    print(f"== {NAME} (seed {seed})")
    print(f"  tensors ({len(tensor_names)}, {tensor_dtypes}):")
    for k in tensor_names:
        print(f"    {k} {tensor_shapes[k]}")
    print(f"  buffers (not saved): {buffers}")
    for i, ids in enumerate(prompts):
        print(f"  prompt {i} ({len(ids)} tok): min_margin={res['min_margin'][i]:.4g} "
              f"distinct={res['distinct'][i]} batched==alone={res['batched_equal'][i]} "
              f"batched_min_margin={min(bmargins[i]):.4g}")
    print(f"  f32 drift={res['f32_drift']:.3e}")
    print(f"  batched first-step diff max={max(first_step_diff):.3e}")
    print(f"  inv_freq: {inv_freq}")
    print(f"  sdpa: diff={sdpa_diff:.3e} greedy_equal={sdpa_greedy_equal} "
          f"batched_equal={sdpa_batched_equal}")
    print(f"  numpy check: {json.dumps(numpy_check, indent=1)}")
    print(f"  sensitivity: {json.dumps(sens, indent=1)}")
    print(f"  legacy buffers: {json.dumps(legacy_check)}")
    for f in sorted(out_dir.iterdir()):
        print(f"  {f.name}: {f.stat().st_size} bytes")
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"  total: {total} bytes")
    assert total < 1_000_000, total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 gives the most reproducible numbers)")
    ap.add_argument("--search-seeds", type=int, metavar="N", default=0,
                    help="instead of writing the fixture, try seeds 0..N-1 and print the "
                         "first acceptable one")
    v5.add_flag(ap)
    args = ap.parse_args()
    v5.require(args.transformers5)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()

    if args.search_seeds:
        search_seeds(args.search_seeds)
    else:
        write_fixture(pathlib.Path(args.out), args.threads, args.transformers5)


if __name__ == "__main__":
    main()
