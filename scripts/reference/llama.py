#!/usr/bin/env python3
"""Write Llama-family (RoPE, RMSNorm, SwiGLU, grouped-query attention) reference fixtures under
tests/fixtures/llama/<name>/, computed with Hugging Face transformers on the CPU.

Each directory looks like a user's Hugging Face checkpoint directory plus a reference file:
    config.json, generation_config.json, model.safetensors
                     <Llama|Mistral>ForCausalLM.save_pretrained(dir, safe_serialization=True),
                     random weights from a fixed seed (see init_weights)
    reference.json   prompts (token ids only: no tokenizer, the ids come from a seeded RNG),
                     logits of a forward pass, greedy continuations (alone and as a
                     left-padded batch), greedy top1-top2 margins, and `notes` that spell out
                     the conventions (RoPE pairing, GQA head mapping, sliding-window rule)

Configs:
    llama          LlamaForCausalLM, 64 wide, 4 heads / 2 KV heads (GQA), untied lm_head
    llama_partial  LlamaForCausalLM, 48 wide, 3 heads / 1 KV head (MQA), tied embeddings,
                   rope_theta 500000. Despite the name the rotary embedding covers the WHOLE
                   head: transformers 4.57.1's Llama does not support partial_rotary_factor
                   (it computes head_dim*factor/2 frequencies but applies them to the full
                   head, which fails with a shape error), so no partial-rotary reference
                   can be produced with LlamaForCausalLM. See notes in reference.json.
    ministral      MinistralForCausalLM, 3 layers typed sliding / full / sliding (window 8):
                   a per-layer mix of local and global attention (Gemma-2 style); the numpy
                   check shows windowing every layer, or the other ones, does not match.
    mistral        MistralForCausalLM, llama's dims plus sliding_window 8; every prompt is
                   >= 20 tokens so the window really cuts. The script checks the window is
                   applied (logits differ from a full-attention run from position `window`
                   on, and are identical before).

Every fixture is also checked against an independent float64 numpy implementation of the
forward pass (numpy_forward) written from the conventions stated in `notes`, and the
alternative conventions (interleaved RoPE pairs; a window one key wider) are shown NOT to
match, so the notes are determined empirically, not copied from the source.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/llama.py              # all configs
    .cache/venv/bin/python scripts/reference/llama.py --only mistral
and, for the transformers 5.x variant llama_partial_v5 (the same weights saved by transformers
5.x: tensor names unchanged, rope_theta under config.json's `rope_parameters`; llama_partial's
theta 500000 is not the default, so a reader that misses the new key fails; see
transformers5.py), through scripts/setup-reference5.sh's overlay:
    PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/llama.py --transformers5
(`--only NAME` writes NAME_v5 for any other config.)
Seeds are fixed in CONFIGS; --search-seeds N re-runs the seed search (prints the first
seed in 0..N-1 that satisfies the margin / diversity criteria) instead of writing fixtures.
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

import transformers5 as v5
from safetensors import safe_open
from transformers import (LlamaConfig, LlamaForCausalLM, MinistralConfig, MinistralForCausalLM,
                          MistralConfig, MistralForCausalLM)

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "llama"

MAX_NEW_TOKENS = 32
# Acceptance criteria for a seed (checked for every prompt, alone and batched). The parity
# tests need margins >= 1e-3; 5e-3 leaves room for float32 accumulation differences over
# 32 KV-cached steps. Random models often fall into short loops, so each 32-token
# continuation must also contain at least MIN_DISTINCT different tokens.
MIN_MARGIN = 5e-3          # min over steps of (top1 logit - top2 logit)
MIN_DISTINCT = 12          # distinct tokens among the 32 generated ones
PAD_ID = 0                 # left padding id of the batched run (masked out; prompts avoid it)
FIRST_PROMPT_ID = 3        # prompt ids are drawn from [3, vocab): 0/1/2 = pad/bos/eos
PROMPT_SEED = 20250101     # numpy default_rng seed of the prompt ids (per config: + index)

COMMON = dict(
    vocab_size=320,
    num_hidden_layers=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    attention_bias=False,
    attention_dropout=0.0,
    initializer_range=0.2,
    bos_token_id=1,
    eos_token_id=2,
)

# name -> dict(cls, config kwargs, seed, prompt lengths). The first two prompts also get
# full [len, vocab] logits in reference.json.
CONFIGS = {
    "llama": dict(
        cls="llama",
        config=dict(COMMON, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=16, intermediate_size=176, rope_theta=10000.0,
                    tie_word_embeddings=False, mlp_bias=False),
        seed=4,  # chosen by --search-seeds 40 (first seed meeting the criteria)
        prompt_lengths=[5, 12, 20, 27],
    ),
    "llama_partial": dict(
        cls="llama",
        config=dict(COMMON, hidden_size=48, num_attention_heads=3, num_key_value_heads=1,
                    head_dim=16, intermediate_size=136, rope_theta=500000.0,
                    tie_word_embeddings=True, mlp_bias=False),
        seed=0,  # chosen by --search-seeds 40 (first seed meeting the criteria)
        prompt_lengths=[5, 12, 20, 27],
    ),
    "mistral": dict(
        cls="mistral",
        config=dict({k: v for k, v in COMMON.items() if k not in ("attention_bias",)},
                    hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    intermediate_size=176, rope_theta=10000.0, sliding_window=8,
                    tie_word_embeddings=False),
        seed=13,  # chosen by --search-seeds 40 (first seed meeting the criteria)
        prompt_lengths=[20, 23, 27, 31],
    ),
    "ministral": dict(
        cls="ministral",
        config=dict({k: v for k, v in COMMON.items() if k not in ("attention_bias",)},
                    num_hidden_layers=3, hidden_size=64, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, intermediate_size=128,
                    rope_theta=10000.0, sliding_window=8,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                    tie_word_embeddings=False),
        seed=9,  # chosen by --search-seeds 40 (first seed meeting the criteria)
        prompt_lengths=[20, 23, 27, 31],
    ),
}

CLASSES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "ministral": (MinistralConfig, MinistralForCausalLM),
}


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


def make_prompts(spec, vocab_size):
    prompts = []
    for i, n in enumerate(spec["prompt_lengths"]):
        rng = np.random.default_rng(PROMPT_SEED + i)
        prompts.append([int(x) for x in rng.integers(FIRST_PROMPT_ID, vocab_size, size=n)])
    return prompts


def rope_theta(cfg):
    """`rope_theta` in transformers 4.x, under `rope_parameters` in 5.x."""
    if hasattr(cfg, "rope_parameters"):
        return cfg.rope_parameters["rope_theta"]
    return cfg.rope_theta


def make_config(spec, **overrides):
    config_cls, _ = CLASSES[spec["cls"]]
    return config_cls(**dict(spec["config"], **overrides))


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic random weights, independent of HF's _init_weights call order.

    Matrices/embeddings ~ N(0, r) (r = initializer_range = 0.2, much larger than HF's 0.02 so
    the logits are not flat), o_proj / down_proj ~ N(0, r / sqrt(2 n_layers)); unlike HF's
    init, the RMSNorm weights are random too (1 + N(0, 0.1)), so a parity test notices a
    missing or misplaced norm weight.
    """
    cfg = model.config
    r = cfg.initializer_range
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    for name, p in sorted(model.named_parameters(remove_duplicate=False), key=lambda t: t[0]):
        if id(p) in seen:  # tied lm_head.weight -> already set via model.embed_tokens.weight
            continue
        seen.add(id(p))
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name.endswith("norm.weight"):  # input_layernorm, post_attention_layernorm, model.norm
            val = 1.0 + 0.1 * noise
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            val = noise * (r / math.sqrt(2 * cfg.num_hidden_layers))
        elif name.endswith(".weight"):
            val = noise * r
        else:
            raise AssertionError(f"unexpected parameter {name}")
        p.copy_(val)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def build_model(spec, seed):
    _, model_cls = CLASSES[spec["cls"]]
    torch.manual_seed(seed)
    model = model_cls._from_config(make_config(spec), attn_implementation="eager",
                                   torch_dtype=torch.float32)
    init_weights(model, seed)
    model.eval()
    return model


def margins_of(step_logits):
    """top1 - top2 of each row of [steps, vocab]."""
    top2 = torch.topk(step_logits.float(), 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


@torch.inference_mode()
def greedy_alone(model, ids):
    inp = torch.tensor([ids], dtype=torch.long)
    out = model.generate(
        inp, attention_mask=torch.ones_like(inp), do_sample=False, num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS, pad_token_id=PAD_ID, eos_token_id=None,
        return_dict_in_generate=True, output_logits=True,
    )
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


@torch.inference_mode()
def greedy_batched(model, prompts):
    input_ids, mask = left_pad(prompts)
    width = input_ids.shape[1]
    out = model.generate(
        input_ids, attention_mask=mask, do_sample=False, num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS, pad_token_id=PAD_ID, eos_token_id=None,
        return_dict_in_generate=True, output_logits=True,
    )
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
    return res


def acceptable(res):
    return (min(res["min_margin"]) >= MIN_MARGIN
            and min(min(m) for m in res["batched"][2]) >= MIN_MARGIN
            and min(res["distinct"]) >= MIN_DISTINCT
            and all(res["batched_equal"]))


# ------------------------------------------------------------- independent numpy reference

def numpy_forward(sd, cfg, ids, rope="rotate_half", window_rule="p-W<j<=p", layer_types=None,
                  layout=None):
    """float64 logits [len, vocab] of one unpadded sequence at positions 0..len-1.

    rope: "rotate_half" (dim i pairs with dim i + head_dim/2, the HF Llama convention) or
          "interleaved" (dim 2i pairs with 2i+1, the Meta / GPT-J convention), for checking
          which one transformers uses.
    window_rule: which keys j the query at position p sees when cfg.sliding_window = W is set:
          "p-W<j<=p" (W keys, self included) or "p-W<=j<=p" (W + 1 keys).
    layer_types: per layer "sliding_attention" or "full_attention" (Ministral), overriding
          cfg.layer_types; without either, every layer uses the window (Mistral).
    layout: optional boolean [len, len] ANDed into every layer's mask (block-sparse layouts).
    """
    g = {k: v.astype(np.float64) for k, v in sd.items()}
    H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    eps, L = cfg.rms_norm_eps, len(ids)
    W = getattr(cfg, "sliding_window", None)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    inv_freq = 1.0 / (rope_theta(cfg) ** (np.arange(0, D, 2, dtype=np.float64) / D))  # [D/2]
    ang = np.arange(L, dtype=np.float64)[:, None] * inv_freq[None, :]               # [L, D/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def apply_rope(x):  # [L, heads, D]
        if rope == "rotate_half":
            a, b = x[..., : D // 2], x[..., D // 2:]
            c, s = cos[:, None, :], sin[:, None, :]
            return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = b * c + a * s
        return out

    p = np.arange(L)[:, None]
    j = np.arange(L)[None, :]
    causal = j <= p
    windowed = causal.copy()
    if W is not None:
        windowed &= (j > p - W) if window_rule == "p-W<j<=p" else (j >= p - W)
    layer_types = layer_types or getattr(cfg, "layer_types", None)
    if layout is not None:
        causal, windowed = causal & layout, windowed & layout

    x = g["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        h = rms(x, g[pre + "input_layernorm.weight"])
        q = (h @ g[pre + "self_attn.q_proj.weight"].T).reshape(L, H, D)
        k = (h @ g[pre + "self_attn.k_proj.weight"].T).reshape(L, KV, D)
        v = (h @ g[pre + "self_attn.v_proj.weight"].T).reshape(L, KV, D)
        q, k = apply_rope(q), apply_rope(k)
        full = layer_types is not None and layer_types[i] == "full_attention"
        allowed = causal if full else windowed
        heads = []
        for hh in range(H):
            kv = hh // (H // KV)  # repeat_kv: each KV head serves H/KV consecutive query heads
            s = q[:, hh, :] @ k[:, kv, :].T / math.sqrt(D)
            s = np.where(allowed, s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            heads.append(s @ v[:, kv, :])
        x = x + np.concatenate(heads, axis=-1) @ g[pre + "self_attn.o_proj.weight"].T
        h = rms(x, g[pre + "post_attention_layernorm.weight"])
        gate = h @ g[pre + "mlp.gate_proj.weight"].T
        up = h @ g[pre + "mlp.up_proj.weight"].T
        x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ g[pre + "mlp.down_proj.weight"].T
    x = rms(x, g["model.norm.weight"])
    lm = g["lm_head.weight"] if "lm_head.weight" in g else g["model.embed_tokens.weight"]
    return x @ lm.T


# ----------------------------------------------------------------------------- main

def search_seeds(name, spec, max_seed):
    prompts = make_prompts(spec, spec["config"]["vocab_size"])
    for seed in range(max_seed):
        model = build_model(spec, seed)
        model.generation_config.eos_token_id = None
        res = evaluate(model, prompts)
        ok = acceptable(res)
        print(f"{name} seed {seed:3d}: min_margin={['%.4g' % m for m in res['min_margin']]} "
              f"batched_min={min(min(m) for m in res['batched'][2]):.4g} "
              f"distinct={res['distinct']} batched_equal={res['batched_equal']} "
              f"{'OK' if ok else ''}", file=sys.stderr)
        if ok:
            print(f"{name}: first acceptable seed = {seed}")
            return seed
    print(f"{name}: no acceptable seed below {max_seed}")
    return None


def rope_notes(cfg):
    d = cfg.head_dim
    return (
        f"RoPE as in transformers' LlamaRotaryEmbedding/apply_rotary_pos_emb (rope_type "
        f"'default', attention_scaling 1.0), applied to q and k of every head after the "
        f"projections and before the scores (v is not rotated), over the WHOLE head_dim={d} "
        f"(no partial rotary). inv_freq[i] = 1 / rope_theta^(2i/{d}) for i in 0..{d // 2 - 1} "
        f"(rope_theta={rope_theta(cfg):g}), computed in float32; angle = position * "
        f"inv_freq[i]. rotate_half convention (NOT interleaved pairs): dim i pairs with dim "
        f"i+{d // 2}, i.e. for i < {d // 2}: out[i] = x[i]*cos(angle_i) - x[i+{d // 2}]*"
        f"sin(angle_i), out[i+{d // 2}] = x[i+{d // 2}]*cos(angle_i) + x[i]*sin(angle_i). "
        f"(cos/sin are cat(freqs, freqs) over the head, rotate_half(x) = cat(-x2, x1).)"
    )


def write_fixture(name, spec, out_root, threads, tf5=False):
    seed = spec["seed"]
    out_dir = out_root / v5.variant(name, tf5)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    config_cls, model_cls = CLASSES[spec["cls"]]

    model = build_model(spec, seed)
    if tf5:
        saved_by = v5.save(model, out_dir, native=False)  # no names changed
    else:
        model.save_pretrained(out_dir, safe_serialization=True)

    # Everything below is computed from what was written to disk, loaded the way a user
    # would load the directory.
    loaded = model_cls.from_pretrained(out_dir, attn_implementation="eager",
                                       torch_dtype=torch.float32).eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    model = loaded
    assert model.config._attn_implementation == "eager"
    model.generation_config.eos_token_id = None  # run the full MAX_NEW_TOKENS
    cfg = model.config

    with safe_open(str(out_dir / "model.safetensors"), framework="np") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()
        sd_np = {k: f.get_tensor(k) for k in tensor_names}

    prompts = make_prompts(spec, cfg.vocab_size)
    res = evaluate(model, prompts, check_no_cache=True)
    if not acceptable(res):
        sys.exit(f"{name}: seed {seed} does not meet the criteria: min_margin={res['min_margin']} "
                 f"distinct={res['distinct']} batched_equal={res['batched_equal']}; "
                 f"run with --search-seeds")

    logits, last_logits, full_hf = [], [], []
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            lg = model(torch.tensor([ids])).logits[0]
            full_hf.append(lg.double().numpy())
            if i < 2:
                logits.append(f32_list(lg.numpy()))
            last_logits.append(f32_list(lg[-1].numpy()))
        # Cross-check the default (SDPA) attention implementation against eager.
        sdpa = model_cls.from_pretrained(out_dir, attn_implementation="sdpa",
                                         torch_dtype=torch.float32).eval()
        sdpa_diff = max(
            float((sdpa(torch.tensor([ids])).logits[0] - model(torch.tensor([ids])).logits[0])
                  .abs().max())
            for ids in prompts)
    sdpa.generation_config.eos_token_id = None
    sdpa_greedy_equal = all(greedy_alone(sdpa, ids)[0] == g
                            for ids, g in zip(prompts, res["greedy"]))

    # Independent float64 numpy forward: the stated conventions match, the alternatives don't.
    # Checked on every prompt and on the longest prompt + its greedy continuation.
    long_seq = prompts[-1] + res["greedy"][-1]
    with torch.inference_mode():
        long_hf = model(torch.tensor([long_seq]), use_cache=False).logits[0].double().numpy()
    check_seqs = list(zip(prompts + [long_seq], full_hf + [long_hf]))

    def np_diff(**kw):
        return max(float(np.abs(numpy_forward(sd_np, cfg, s, **kw) - hf).max())
                   for s, hf in check_seqs)

    numpy_check = {"sequences": [len(s) for s, _ in check_seqs],
                   "max_abs_diff_stated_conventions": np_diff()}
    numpy_check["max_abs_diff_interleaved_rope"] = np_diff(rope="interleaved")
    assert numpy_check["max_abs_diff_stated_conventions"] < 1e-4, numpy_check
    assert numpy_check["max_abs_diff_interleaved_rope"] > 1e-2, numpy_check

    window = None
    if getattr(cfg, "sliding_window", None) is not None:
        W = cfg.sliding_window
        assert all(len(p) >= 20 > W for p in prompts)
        numpy_check["max_abs_diff_window_one_wider"] = np_diff(window_rule="p-W<=j<=p")
        assert numpy_check["max_abs_diff_window_one_wider"] > 1e-2, numpy_check
        types = getattr(cfg, "layer_types", None)
        if types is not None and len(set(types)) > 1:
            # A per-layer mix: windowing every layer, or the other layers, must not match.
            n = cfg.num_hidden_layers
            swapped = ["full_attention" if t == "sliding_attention" else "sliding_attention"
                       for t in types]
            numpy_check["layer_types"] = types
            numpy_check["max_abs_diff_every_layer_windowed"] = np_diff(
                layer_types=["sliding_attention"] * n)
            numpy_check["max_abs_diff_windows_on_the_other_layers"] = np_diff(layer_types=swapped)
            assert numpy_check["max_abs_diff_every_layer_windowed"] > 1e-2, numpy_check
            assert numpy_check["max_abs_diff_windows_on_the_other_layers"] > 1e-2, numpy_check
        # Same weights, sliding window off: identical for positions < W, different from W on.
        # (Ministral needs a window whenever a layer is typed sliding: type them all full.)
        types = getattr(cfg, "layer_types", None)
        no_window = (dict(layer_types=["full_attention"] * cfg.num_hidden_layers) if types
                     else dict(sliding_window=None))
        full_attn = model_cls.from_pretrained(out_dir, attn_implementation="eager",
                                              torch_dtype=torch.float32, **no_window).eval()
        assert types or full_attn.config.sliding_window is None
        with torch.inference_mode():
            per_pos = (full_attn(torch.tensor([long_seq]), use_cache=False).logits[0].double()
                       .numpy() - long_hf)
        per_pos = np.abs(per_pos).max(-1)
        first_diff = int(np.argmax(per_pos > 1e-5))
        assert per_pos[:W].max() < 1e-5 and per_pos[W] > 1e-3 and first_diff == W, per_pos
        window = {
            "sliding_window": W,
            "rule": f"query at position p attends to keys j with p - {W} < j <= p, i.e. the "
                    f"last {W} positions including itself (transformers masking_utils "
                    f"sliding_window_overlay: kv_idx > q_idx - sliding_window)",
            "check": "logits of the longest prompt + its greedy continuation vs the same "
                     "weights loaded with sliding_window=None: identical at positions "
                     f"0..{W - 1}, first difference at position {first_diff} (= window); "
                     "numpy reference with rule p-W<j<=p matches, p-W<=j<=p does not",
            "per_position_max_abs_logit_diff_vs_full_attention": [f32(x) for x in per_pos],
            "kv_cache": "generate() uses DynamicSlidingWindowLayer caches (keeps the last "
                        "window-1 keys); cached greedy == no-cache full-forward greedy was "
                        "asserted for every prompt",
        }

    enc, bnew, bmargins, bfirst = res["batched"]
    first_step_diff = [float((bfirst[b] - torch.tensor(last_logits[b])).abs().max())
                       for b in range(len(prompts))]

    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    notes = {
        "architecture": "pre-norm decoder: x = embed_tokens[ids]; per layer: x += o_proj(attn("
                        "rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))) with n1 = "
                        "input_layernorm(x); x += down_proj(silu(gate_proj(n2)) * up_proj(n2)) "
                        "with n2 = post_attention_layernorm(x); logits = lm_head(norm(x)). "
                        "No biases anywhere. Linear weights are [out, in] (y = x @ W^T).",
        "rms_norm": f"y = x / sqrt(mean(x^2) + {cfg.rms_norm_eps:g}) * weight (weight multiplies "
                    "directly, NOT 1 + weight; computed in float32)",
        "attention": f"{H} query heads, {KV} KV heads, head_dim {cfg.head_dim}; scores = q.k / "
                     f"sqrt({cfg.head_dim}), causal softmax. q_proj rows are head-major "
                     f"(head h = rows h*{cfg.head_dim}..(h+1)*{cfg.head_dim}), same for k/v with "
                     f"KV heads; query head h uses KV head h // {H // KV} (repeat_kv: each KV "
                     f"head serves {H // KV} consecutive query heads); the head outputs are "
                     f"concatenated in head order before o_proj.",
        "rope": rope_notes(cfg),
        "position_ids": "alone: positions 0..len-1 of prompt + generated tokens (default "
                        "cache_position). batched (left padding): position_ids = "
                        "attention_mask.cumsum(-1) - 1 with pads set to 1, as HF generate does, "
                        "so each sequence's first real token is position 0; pads are masked "
                        "out as keys.",
        "sliding_window": (window["rule"] if window else
                           "none (full causal attention: query p sees keys 0..p)"),
        "tied_embeddings": (
            "tie_word_embeddings=true: lm_head.weight is NOT in model.safetensors; use "
            "model.embed_tokens.weight" if cfg.tie_word_embeddings else
            "tie_word_embeddings=false: separate lm_head.weight"),
    }
    if getattr(cfg, "layer_types", None):
        notes["layer_types"] = (
            f"per layer {cfg.layer_types}: 'sliding_attention' layers use the sliding window "
            "rule above, 'full_attention' layers full causal attention (Ministral); the numpy "
            "check shows windowing every layer, or the other layers, does not match")
        doc_extra = {"layer_types": cfg.layer_types}
    else:
        doc_extra = {}
    if name == "llama_partial":
        notes["partial_rotary"] = (
            "NOT partial: transformers 4.57.1 LlamaForCausalLM does not support "
            "partial_rotary_factor (the config attribute shrinks inv_freq to "
            "head_dim*factor/2 frequencies, but apply_rotary_pos_emb then multiplies the full "
            "head by cos/sin of the rotary width and fails with a RuntimeError: size 16 vs 8). "
            "This fixture uses full rotary (partial_rotary_factor unset); it covers MQA, "
            "rope_theta 500000, tied embeddings and head_dim 16 at hidden 48 / 3 heads.")

    doc = {
        "generator": "scripts/reference/llama.py",
        "name": name,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "seed": seed,
        "init": "random (see init_weights): matrices/embeddings N(0, initializer_range=0.2), "
                "o_proj/down_proj N(0, 0.2/sqrt(2*num_hidden_layers)), RMSNorm weights "
                "1+N(0, 0.1)",
        "torch_threads": threads,
        "model_class": model_cls.__name__,
        "attn_implementation": "eager",
        "config": {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": H,
            "num_key_value_heads": KV,
            "head_dim": cfg.head_dim,
            "intermediate_size": cfg.intermediate_size,
            "hidden_act": cfg.hidden_act,
            "max_position_embeddings": cfg.max_position_embeddings,
            "rope_theta": rope_theta(cfg),
            "rope_scaling": getattr(cfg, "rope_scaling", None),
            "rms_norm_eps": cfg.rms_norm_eps,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "attention_bias": getattr(cfg, "attention_bias", False),
            "mlp_bias": getattr(cfg, "mlp_bias", False),
            "sliding_window": getattr(cfg, "sliding_window", None),
            **doc_extra,
            "initializer_range": cfg.initializer_range,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
        },
        "notes": notes,
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
                    f"max_new_tokens={MAX_NEW_TOKENS}, pad_token_id={PAD_ID}, "
                    "eos_token_id=None) (eos disabled; cached greedy == no-cache greedy "
                    "asserted)",
        "greedy": res["greedy"],
        "greedy_min_margin": [f32(m) for m in res["min_margin"]],
        "greedy_margins": [[f32(x) for x in m] for m in res["margins"]],
        "greedy_distinct_tokens": res["distinct"],
        "sdpa_vs_eager": {"max_abs_logit_diff": sdpa_diff, "greedy_equal": sdpa_greedy_equal},
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
    }
    if window:
        doc["sliding_window"] = window
    if tf5:
        doc.update(v5.record(model, out_dir, out_root / name, saved_by, doc,
                             equal=["prompts", "greedy", "batched_greedy.tokens"],
                             close=["logits", "last_logits"]))
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    (out_dir / "reference.json").write_text(text + "\n", encoding="utf-8")

    print(f"== {name} (seed {seed})")
    print(f"  tensors ({len(tensor_names)}, {tensor_dtypes}):")
    for k in tensor_names:
        print(f"    {k} {tensor_shapes[k]}")
    for i, ids in enumerate(prompts):
        print(f"  prompt {i} ({len(ids)} tok): min_margin={res['min_margin'][i]:.4g} "
              f"distinct={res['distinct'][i]} batched==alone={res['batched_equal'][i]} "
              f"batched_min_margin={min(bmargins[i]):.4g}")
    print(f"  sdpa vs eager: max|dlogit|={sdpa_diff:.3e} greedy_equal={sdpa_greedy_equal}; "
          f"batched first-step diff max={max(first_step_diff):.3e}")
    print(f"  numpy check: {numpy_check}")
    if window:
        print(f"  window: {window['rule']}; per-position diff vs full attention: "
              f"{['%.2g' % x for x in window['per_position_max_abs_logit_diff_vs_full_attention']]}")
    for f in sorted(out_dir.iterdir()):
        print(f"  {f.name}: {f.stat().st_size} bytes")
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"  total: {total} bytes")
    assert total < 1_000_000, total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--only", action="append", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 gives the most reproducible numbers)")
    ap.add_argument("--search-seeds", type=int, metavar="N", default=0,
                    help="instead of writing fixtures, try seeds 0..N-1 and print the first "
                         "acceptable one per config")
    v5.add_flag(ap)
    args = ap.parse_args()
    v5.require(args.transformers5)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()

    names = args.only or (["llama_partial"] if args.transformers5 else list(CONFIGS))
    for name in names:
        if args.search_seeds:
            search_seeds(name, CONFIGS[name], args.search_seeds)
        else:
            write_fixture(name, CONFIGS[name], pathlib.Path(args.out), args.threads, args.transformers5)


if __name__ == "__main__":
    main()
