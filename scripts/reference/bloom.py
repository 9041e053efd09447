#!/usr/bin/env python3
"""Write a BLOOM (ALiBi positions, fused per-head QKV, LayerNorm, tanh-GELU) reference fixture
under tests/fixtures/bloom/bloom/, computed with Hugging Face transformers on the CPU.

The directory looks like a user's Hugging Face checkpoint directory plus a reference file:
    config.json, generation_config.json, model.safetensors
                     BloomForCausalLM.save_pretrained(dir, safe_serialization=True),
                     random weights from a fixed seed (see init_weights)
    reference.json   same layout as tests/fixtures/llama/<name>/reference.json (written by
                     scripts/reference/llama.py): prompts (token ids only: no tokenizer, the
                     ids come from a seeded RNG), logits of a forward pass, greedy
                     continuations (alone and as a left-padded batch), greedy top1-top2
                     margins, and `notes` that spell out the conventions (fused QKV row
                     layout, ALiBi slopes and positions, GELU, the embedding LayerNorm, ...)

Config: BloomForCausalLM, 64 wide, 4 heads (head_dim 16), 2 layers, MLP 256 (4 x hidden),
vocab 320, tied lm_head, layer_norm_epsilon 1e-5, no dropout, eager attention, float32.

Every statement in `notes` is checked against an independent float64 numpy implementation of
the forward pass (numpy_forward) written from those notes, and the alternative conventions
(q/k/v as three contiguous blocks; ALiBi missing, scaled by 1/sqrt(head_dim), with reversed
slopes or with the opposite sign; exact erf GELU) are shown NOT to match, so the notes are
determined empirically, not copied from the source.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/bloom.py
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
from transformers import BloomConfig, BloomForCausalLM, BloomModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "bloom"
NAME = "bloom"

MAX_NEW_TOKENS = 32
# Acceptance criteria for a seed (checked for every prompt, alone and batched), as in llama.py.
MIN_MARGIN = 5e-3          # min over steps of (top1 logit - top2 logit)
MIN_DISTINCT = 12          # distinct tokens among the 32 generated ones
MAX_F32_DRIFT = 5e-5       # max |HF float32 logits - numpy float64 logits| over the prompts
PAD_ID = 0                 # left padding id of the batched run (masked out; prompts avoid it)
BOS_ID, EOS_ID = 1, 2
FIRST_PROMPT_ID = 3        # prompt ids are drawn from [3, vocab): 0/1/2 = pad/bos/eos
PROMPT_SEED = 20250301     # numpy default_rng seed of the prompt ids (prompt i: + i)
PROMPT_LENGTHS = [3, 9, 14, 20]
SEED = 4  # chosen by --search-seeds 60 (first seed meeting the criteria)

CONFIG = dict(
    vocab_size=320,
    hidden_size=64,
    n_layer=2,
    n_head=4,
    layer_norm_epsilon=1e-5,
    apply_residual_connection_post_layernorm=False,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    tie_word_embeddings=True,
    initializer_range=0.02,  # unused: init_weights overwrites every parameter
    pretraining_tp=1,
    slow_but_exact=False,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
)
EMBED_STD = 1.0  # word_embeddings ~ N(0, EMBED_STD) (also the tied lm_head)
# Linear weights ~ N(0, gain / sqrt(fan_in)). With every gain 1 the random model only repeats
# one token: the tied lm_head scores the current token's own embedding (still the dominant
# part of the residual stream after word_embeddings_layernorm) far above the rest, so greedy
# gets stuck (distinct = 1 for every one of seeds 0..59 with all gains 1, and with gains
# <= 2). Large output projections (dense, dense_4h_to_h: the residual stream is then
# dominated by the layers, not by the token's own embedding) give diverse continuations.
# query_key_value's gain trades diversity against float32 sensitivity: gain 3 also works but
# makes the attention so sharp that float32 logits drift ~1e-4 from float64 (the Rust parity
# test's tolerance); 1.5 keeps the drift ~2e-5 (checked by MAX_F32_DRIFT).
LINEAR_GAIN = {"query_key_value": 1.5, "dense": 16.0, "dense_h_to_4h": 1.0,
               "dense_4h_to_h": 16.0}


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
    """Deterministic random weights, independent of HF's _init_weights call order, chosen so
    every tensor matters (HF's init has zero biases and unit LayerNorm weights):
    LayerNorm weights 1 + N(0, 0.1), all biases (LayerNorm and Linear) N(0, 0.1),
    word_embeddings (= tied lm_head) N(0, EMBED_STD), Linear weights N(0, gain/sqrt(fan_in))
    with the per-module gains of LINEAR_GAIN (see there for why they are not all 1).
    Parameters are drawn in sorted-name order from one torch.Generator(seed); the tied
    lm_head.weight sorts first and IS the word_embeddings tensor (drawn once, as embedding).
    """
    gen = torch.Generator().manual_seed(seed)
    emb = model.transformer.word_embeddings.weight
    seen = set()
    for name, p in sorted(model.named_parameters(remove_duplicate=False), key=lambda t: t[0]):
        if id(p) in seen:
            continue
        seen.add(id(p))
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if p is emb:  # reached as "lm_head.weight" (sorts first), tied
            val = noise * EMBED_STD
        elif "layernorm" in name or "ln_f" in name:
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
    assert model.lm_head.weight.data_ptr() == emb.data_ptr()


def build_model(seed):
    torch.manual_seed(seed)
    model = BloomForCausalLM._from_config(BloomConfig(**CONFIG), attn_implementation="eager",
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
    sd = {k: v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
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

def alibi_slopes(n_head):
    """ALiBi slopes as in the paper / Press et al.: for n a power of two, slope_h =
    2^(-8(h+1)/n); otherwise the n' = 2^floor(log2 n) slopes, then every other slope of the
    2n' sequence (odd exponents), as in transformers' build_alibi_tensor."""
    def pow2(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]
    n2 = 2 ** int(math.floor(math.log2(n_head)))
    s = pow2(n2)
    if n2 != n_head:
        s += pow2(2 * n2)[0::2][: n_head - n2]
    return np.array(s, dtype=np.float64)


def numpy_forward(sd, cfg, ids, mask=None, qkv="per_head", alibi="key_position",
                  gelu="tanh"):
    """float64 logits [len, vocab] of one sequence (optionally left padded: mask = 0/1 list).

    qkv:   "per_head": fused output row r = h*3*D + c*D + d (c = 0 q, 1 k, 2 v), the stated
                       convention; "blocked": r = c*hidden + h*D + d (q block, k block, v block).
    alibi: "key_position": bias slope_h * pos(j) added to score(i, j), pos = cumsum(mask) - 1
                           (stated); "relative": slope_h * (pos(j) - pos(i));
           "column": slope_h * j with j the raw column index (pads counted);
           "none"; "scaled": slope_h * pos(j) / sqrt(D); "reversed": slopes in reverse head
           order; "negated": -slope_h * pos(j).
    gelu:  "tanh" (stated: 0.5 x (1 + tanh(0.79788456 x (1 + 0.044715 x^2)))) or "erf".
    Rows of pad queries (mask 0) are returned as zeros.
    """
    g = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in sd.items()}
    H, C = cfg.n_head, cfg.hidden_size
    D, eps, L = C // H, cfg.layer_norm_epsilon, len(ids)
    mask = np.ones(L, dtype=np.int64) if mask is None else np.asarray(mask, dtype=np.int64)

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g[name + ".weight"] + g[name + ".bias"]

    def lin(x, name):
        return x @ g[name + ".weight"].T + g[name + ".bias"]

    def act(x):
        if gelu == "tanh":
            return x * 0.5 * (1.0 + np.tanh(0.79788456 * x * (1.0 + 0.044715 * x * x)))
        from scipy.special import erf
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    slopes = alibi_slopes(H)
    if alibi == "reversed":
        slopes = slopes[::-1]
    pos = (np.cumsum(mask) - 1) * mask                         # [L]; pads -> 0 (masked anyway)
    i_idx, j_idx = np.arange(L)[:, None], np.arange(L)[None, :]
    allowed = (j_idx <= i_idx) & (mask[None, :] == 1)

    def bias(h):
        s = slopes[h]
        if alibi in ("key_position", "reversed"):
            return np.broadcast_to(s * pos[None, :], (L, L))
        if alibi == "relative":
            return s * (pos[None, :] - pos[:, None])
        if alibi == "column":
            return np.broadcast_to(s * j_idx, (L, L)).astype(np.float64)
        if alibi == "scaled":
            return np.broadcast_to(s * pos[None, :] / math.sqrt(D), (L, L))
        if alibi == "negated":
            return np.broadcast_to(-s * pos[None, :], (L, L))
        if alibi == "none":
            return np.zeros((L, L))
        raise ValueError(alibi)

    x = ln(g["word_embeddings.weight"][ids], "word_embeddings_layernorm")
    for li in range(cfg.n_layer):
        pre = f"h.{li}."
        hn = ln(x, pre + "input_layernorm")
        fused = lin(hn, pre + "self_attention.query_key_value")          # [L, 3C]
        if qkv == "per_head":
            f = fused.reshape(L, H, 3, D)
            q, k, v = f[:, :, 0, :], f[:, :, 1, :], f[:, :, 2, :]         # [L, H, D]
        else:
            f = fused.reshape(L, 3, H, D)
            q, k, v = f[:, 0], f[:, 1], f[:, 2]
        heads = []
        for h in range(H):
            s = q[:, h, :] @ k[:, h, :].T / math.sqrt(D) + bias(h)
            s = np.where(allowed, s, -np.inf)
            m = s.max(-1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0.0)
            e = np.exp(s - m)
            den = e.sum(-1, keepdims=True)
            p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
            heads.append(p @ v[:, h, :])
        x = x + lin(np.concatenate(heads, axis=-1), pre + "self_attention.dense")
        hn = ln(x, pre + "post_attention_layernorm")
        x = x + lin(act(lin(hn, pre + "mlp.dense_h_to_4h")), pre + "mlp.dense_4h_to_h")
    x = ln(x, "ln_f")
    out = x @ g["word_embeddings.weight"].T
    return out * mask[:, None]


@torch.inference_mode()
def hf_float64_diff(out_dir, check_seqs):
    """HF BLOOM in float64 vs the numpy float64 reference. BloomAttention computes its softmax
    with dtype=torch.float32 even for a float64 model, so that call is patched to keep float64
    (everything else is HF's own code)."""
    import types
    import transformers.models.bloom.modeling_bloom as mb
    m64 = BloomForCausalLM.from_pretrained(out_dir, attn_implementation="eager",
                                           torch_dtype=torch.float64).eval()
    with safe_open(str(out_dir / "model.safetensors"), framework="np") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    orig_f = mb.F
    shim = types.SimpleNamespace(**{k: getattr(orig_f, k) for k in dir(orig_f)
                                    if not k.startswith("__")})
    shim.softmax = lambda x, dim=-1, dtype=None: orig_f.softmax(x, dim=dim)
    mb.F = shim
    try:
        return max(float(np.abs(m64(torch.tensor([s])).logits[0].numpy()
                                - numpy_forward(sd, m64.config, s)).max())
                   for s, _ in check_seqs)
    finally:
        mb.F = orig_f


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


def write_fixture(out_root, threads):
    seed = SEED
    out_dir = out_root / NAME
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    model = build_model(seed)
    model.save_pretrained(out_dir, safe_serialization=True)

    # Everything below is computed from what was written to disk, loaded the way a user
    # would load the directory.
    loaded = BloomForCausalLM.from_pretrained(out_dir, attn_implementation="eager",
                                              torch_dtype=torch.float32).eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    model = loaded
    assert model.config._attn_implementation == "eager"
    model.generation_config.eos_token_id = None  # run the full MAX_NEW_TOKENS
    cfg = model.config
    H, C = cfg.n_head, cfg.hidden_size
    D = C // H

    with safe_open(str(out_dir / "model.safetensors"), framework="np") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()
        sd_np = {k: f.get_tensor(k) for k in tensor_names}
    assert "lm_head.weight" not in sd_np

    prompts = make_prompts(cfg.vocab_size)
    res = evaluate(model, prompts, check_no_cache=True)
    if not acceptable(res):
        sys.exit(f"seed {seed} does not meet the criteria: min_margin={res['min_margin']} "
                 f"distinct={res['distinct']} batched_equal={res['batched_equal']}; "
                 f"run with --search-seeds")
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
    try:
        BloomForCausalLM.from_pretrained(out_dir, attn_implementation="sdpa")
        sdpa_supported = True
    except Exception as e:  # noqa: BLE001
        sdpa_supported = False
        sdpa_error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    assert not sdpa_supported, "BLOOM gained SDPA support: add an sdpa-vs-eager check"

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
    numpy_check["max_abs_diff_alibi_relative_slope_times_j_minus_i"] = np_diff(alibi="relative")
    numpy_check["max_abs_diff_hf_float64_vs_numpy"] = hf_float64_diff(out_dir, check_seqs)
    numpy_check["note"] = (
        "numpy_forward is float64 and written from `notes`; HF runs in float32, so the "
        "stated-conventions diff is float32 rounding only: the same HF model cast to float64 "
        "(with BloomAttention's hard-coded float32 softmax made float64) matches numpy to "
        "max_abs_diff_hf_float64_vs_numpy")
    for name, kw in [("qkv_blocked_q_then_k_then_v", dict(qkv="blocked")),
                     ("no_alibi", dict(alibi="none")),
                     ("alibi_scaled_by_1_over_sqrt_head_dim", dict(alibi="scaled")),
                     ("alibi_slopes_reversed", dict(alibi="reversed")),
                     ("alibi_negated", dict(alibi="negated")),
                     ("exact_erf_gelu", dict(gelu="erf"))]:
        numpy_check[f"max_abs_diff_{name}"] = np_diff(**kw)
    stated = numpy_check["max_abs_diff_stated_conventions"]
    assert stated < 1e-4, numpy_check
    assert numpy_check["max_abs_diff_hf_float64_vs_numpy"] < 1e-9, numpy_check
    assert numpy_check["max_abs_diff_alibi_relative_slope_times_j_minus_i"] < 1e-4, numpy_check
    for k, v in numpy_check.items():
        if k.startswith("max_abs_diff_") and k not in (
                "max_abs_diff_stated_conventions", "max_abs_diff_hf_float64_vs_numpy",
                "max_abs_diff_alibi_relative_slope_times_j_minus_i", "max_abs_diff_exact_erf_gelu"):
            assert v > 1e-2, (k, v)
    assert numpy_check["max_abs_diff_exact_erf_gelu"] > 20 * stated, numpy_check

    # Left-padded batch: HF forward with attention_mask vs numpy with pos = cumsum(mask) - 1,
    # compared on the real (unpadded) rows only; and vs numpy with the raw column index.
    enc, bnew, bmargins, bfirst = res["batched"]
    b_ids, b_mask = enc
    with torch.inference_mode():
        b_hf = model(b_ids, attention_mask=b_mask, use_cache=False).logits.double().numpy()
        alibi_hf = model.transformer.build_alibi_tensor(b_mask, H, torch.float32)
    alibi_hf = alibi_hf.reshape(len(prompts), H, -1).numpy()
    slopes = alibi_slopes(H)
    slopes_hf = alibi_hf[-1, :, 1] / 1.0  # longest prompt has no pads: pos(1) = 1
    assert np.allclose(slopes_hf, slopes, rtol=0, atol=1e-9), (slopes_hf, slopes)
    for b in range(len(prompts)):
        m = b_mask[b].numpy()
        expect = slopes[:, None] * ((np.cumsum(m) - 1) * m)[None, :]
        assert np.allclose(alibi_hf[b], expect, atol=1e-6), b

    def padded_diff(**kw):
        out = 0.0
        for b in range(len(prompts)):
            m = b_mask[b].numpy()
            ref = numpy_forward(sd_np, cfg, b_ids[b].tolist(), mask=m, **kw)
            out = max(out, float(np.abs((ref - b_hf[b])[m == 1]).max()))
        return out

    padded_vs_alone = max(
        float(np.abs(b_hf[b][b_mask[b].numpy() == 1] - full_hf[b]).max())
        for b in range(len(prompts)))
    numpy_check["left_padded_batch"] = {
        "max_abs_diff_stated_positions_cumsum_mask_minus_1": padded_diff(),
        "max_abs_diff_raw_column_index_positions": padded_diff(alibi="column"),
        "max_abs_diff_hf_padded_real_rows_vs_hf_alone": padded_vs_alone,
    }
    assert numpy_check["left_padded_batch"][
        "max_abs_diff_stated_positions_cumsum_mask_minus_1"] < 1e-4, numpy_check
    assert numpy_check["left_padded_batch"]["max_abs_diff_raw_column_index_positions"] < 1e-4

    # Does every tensor matter? Perturb each one (+0.05 N(0,1)) and record the max logit
    # change over prompt 3; the k-part of the fused QKV bias is recorded separately.
    sens = {}
    pgen = torch.Generator().manual_seed(12345)
    x3 = torch.tensor([prompts[3]])
    with torch.inference_mode():
        base = model(x3).logits
        sd = model.state_dict()
        for n in tensor_names:
            orig = sd[n].clone()
            sd[n].add_(0.05 * torch.randn(orig.shape, generator=pgen))
            sens[n] = float((model(x3).logits - base).abs().max())
            sd[n].copy_(orig)
        for c, part in enumerate("qkv"):
            n = "transformer.h.0.self_attention.query_key_value.bias"
            orig = sd[n].clone()
            rows = torch.tensor([h * 3 * D + c * D + d for h in range(H) for d in range(D)])
            sd[n][rows] += 1.0
            sens[f"{n}[{part} rows] += 1.0"] = float((model(x3).logits - base).abs().max())
            sd[n].copy_(orig)
        assert torch.equal(model(x3).logits, base)
    k_bias_key = "transformer.h.0.self_attention.query_key_value.bias[k rows] += 1.0"
    assert sens[k_bias_key] < 1e-4, sens
    assert min(v for k, v in sens.items() if "rows]" not in k) > 1e-3, sens

    first_step_diff = [float((bfirst[b] - torch.tensor(last_logits[b])).abs().max())
                       for b in range(len(prompts))]

    slopes_list = [float(s) for s in slopes]
    qkv_rows = {f"r={h * 3 * D + c * D}..{h * 3 * D + c * D + D - 1}": f"{part} head {h}"
                for h in range(H) for c, part in enumerate("qkv")}
    notes = {
        "architecture": (
            "pre-norm decoder (apply_residual_connection_post_layernorm=false): "
            "x = word_embeddings_layernorm(word_embeddings[ids]) (LayerNorm directly on the "
            "embeddings, before layer 0; there are no position embeddings); per layer: "
            "x = x + dense(attn(query_key_value(input_layernorm(x)))); "
            "x = x + dense_4h_to_h(gelu(dense_h_to_4h(post_attention_layernorm(x)))); "
            "logits = ln_f(x) @ word_embeddings^T (tied lm_head, no bias). Every Linear has a "
            "bias; Linear weights are [out, in] (y = x @ W^T + b). The residual is the "
            "pre-LayerNorm x (with apply_residual_connection_post_layernorm=true it would be "
            "the LayerNorm output instead; not used here). No dropout at inference."),
        "layer_norm": (
            f"standard LayerNorm over hidden ({C}): y = (x - mean) / sqrt(var + "
            f"{cfg.layer_norm_epsilon:g}) * weight + bias, var = biased (mean of squares of "
            "x - mean), eps inside the sqrt; used for word_embeddings_layernorm, "
            "input_layernorm, post_attention_layernorm and ln_f (all with weight AND bias)."),
        "fused_qkv_layout": (
            f"self_attention.query_key_value: weight [{3 * C}, {C}], bias [{3 * C}]; its "
            f"{3 * C} outputs are viewed as [n_head={H}, 3, head_dim={D}] (head-major, q/k/v "
            f"interleaved PER HEAD), NOT [3, n_head, head_dim]: output row r = h*{3 * D} + "
            f"c*{D} + d  <=>  h = r // {3 * D}, c = (r % {3 * D}) // {D} (0 = q, 1 = k, "
            f"2 = v), d = r % {D}. So head h's query is rows h*{3 * D}+0..{D - 1}, its key rows "
            f"h*{3 * D}+{D}..{2 * D - 1}, its value rows h*{3 * D}+{2 * D}..{3 * D - 1} (the "
            "bias uses the same row order). Verified: numpy with this layout matches, "
            "numpy with q = rows 0..63, k = 64..127, v = 128..191 does not (see "
            "numpy_float64_check). Head outputs are concatenated in head order (head h -> "
            f"columns h*{D}..h*{D}+{D - 1}) before self_attention.dense."),
        "fused_qkv_rows": qkv_rows,
        "attention_scores": (
            f"score_h(i, j) = (q_h(i) . k_h(j)) / sqrt({D}) + alibi_h(j), i.e. HF's "
            "alibi.baddbmm(q, k^T, beta=1, alpha=1/sqrt(head_dim)): the ALiBi bias is added "
            "AFTER the 1/sqrt(head_dim) scaling and is itself NOT scaled. Then the causal / "
            "padding mask (keys j > i and padded keys get finfo(float32).min added, i.e. "
            "weight 0) and a float32 softmax over j."),
        "alibi": (
            f"slopes for n_head={H}: {slopes_list} (slope_h = 2^(-8(h+1)/{H}) for head h = "
            f"0..{H - 1}; general HF rule for n_head not a power of two: the "
            "2^floor(log2 n) power-of-two slopes, then the odd-exponent slopes "
            "2^(-4(2k+1)/n') ... of the doubled set, see alibi_slopes in the script). "
            "The bias added to score(query i, key j) of head h is slope_h * pos(j), where "
            "pos = (attention_mask.cumsum(-1) - 1) * attention_mask (key position only, "
            "positive and growing with j; it does not depend on i). Under softmax over j this "
            "equals slope_h * (pos(j) - pos(i)) = -slope_h * (i - j) (the paper's form) up "
            "to the per-row constant slope_h * pos(i): both numpy variants match to float "
            "precision (see numpy_float64_check). No max_position_embeddings; no RoPE."),
        "alibi_left_padding": (
            "left-padded batch: pos = cumsum(mask) - 1 so each row's first REAL token has "
            "position 0 (pads get 0 too, but pads are masked out as keys). Because the bias "
            "only depends on the key position, any per-row offset cancels in the softmax: "
            "using the raw column index j (pads counted) gives the same logits to float "
            "precision (checked), so ALiBi needs no position bookkeeping for left padding "
            "beyond masking the pad keys. Real rows of the padded batch equal the unpadded "
            "forward (see numpy_float64_check.left_padded_batch). During cached generation "
            "the mask grows by one 1 per step and the new key's position is cumsum - 1, i.e. "
            "consecutive after the last real token."),
        "gelu": (
            "BloomGelu (eval mode) = tanh approximation with Megatron's rounded constant: "
            "gelu(x) = x * 0.5 * (1 + tanh(0.79788456 * x * (1 + 0.044715 * x * x))) "
            "(0.79788456 ~ sqrt(2/pi) = 0.7978845608...; the difference to the exact "
            "constant is below float32 noise). Same function as GPT-2's gelu_new / "
            "torch gelu(approximate='tanh'); the exact erf GELU does NOT match (numpy "
            "diff recorded in numpy_float64_check.max_abs_diff_exact_erf_gelu)."),
        "mlp": f"dense_h_to_4h [{4 * C}, {C}] + bias -> gelu -> dense_4h_to_h [{C}, {4 * C}] "
               "+ bias (intermediate = 4 * hidden, not configurable).",
        "embeddings_and_head": (
            "transformer.word_embeddings.weight [vocab, hidden] is looked up, then "
            "transformer.word_embeddings_layernorm (weight + bias) is applied BEFORE layer 0 "
            "(BLOOM-specific; GPT-2/Llama have nothing here); transformer.ln_f (weight + "
            "bias) after the last layer; lm_head is tied: logits = ln_f(x) @ "
            "word_embeddings.weight^T, no bias, and lm_head.weight is NOT in "
            "model.safetensors."),
        "tensor_names": (
            "all names carry the 'transformer.' prefix (save_pretrained of BloomForCausalLM; "
            "base_model_prefix = 'transformer'). Checkpoints saved from a bare BloomModel "
            "(as the original bigscience/bloom* uploads are, as far as we know) have the "
            "same names WITHOUT 'transformer.'; from_pretrained accepts both (checked here "
            "with a BloomModel save of the same weights), so a loader should too."),
        "k_bias_irrelevant": (
            "the key part of query_key_value.bias (rows h*48+16..h*48+31) has NO effect on "
            "the outputs: it adds q_h(i) . b_k / sqrt(d) to every score of row i, a per-row "
            "constant that softmax removes (checked: +1.0 on those rows changes the logits "
            "by < 1e-4, see tensor_sensitivity). A bug in the k bias is therefore invisible "
            "to any logits parity test; every other tensor (and the q / v bias rows) "
            "matters."),
        "position_ids": "none: BLOOM ignores position_ids (deprecated argument); positions "
                        "only enter through ALiBi built from the attention mask.",
        "tied_embeddings": "tie_word_embeddings=true: lm_head.weight is NOT in "
                           "model.safetensors; use transformer.word_embeddings.weight",
        "sdpa": f"BLOOM has no SDPA implementation in transformers 4.57.1 ({sdpa_error}); "
                "eager is the only attention path.",
    }

    # from_pretrained accepts names without the 'transformer.' prefix (BloomModel save).
    bare_dir = out_root / (NAME + "_bare_tmp")
    if bare_dir.exists():
        shutil.rmtree(bare_dir)
    model.transformer.save_pretrained(bare_dir, safe_serialization=True)
    with safe_open(str(bare_dir / "model.safetensors"), framework="np") as f:
        bare_names = sorted(f.keys())
    bare = BloomForCausalLM.from_pretrained(bare_dir, attn_implementation="eager",
                                            torch_dtype=torch.float32).eval()
    with torch.inference_mode():
        bare_diff = float((bare(x3).logits - base).abs().max())
    shutil.rmtree(bare_dir)
    assert bare_names == sorted(n.removeprefix("transformer.") for n in tensor_names)
    assert bare_diff == 0.0, bare_diff

    doc = {
        "generator": "scripts/reference/bloom.py",
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
                "Linear weights N(0, gain/sqrt(fan_in)) with gains "
                f"{LINEAR_GAIN} (gain 1 everywhere only ever repeats one token), "
                f"word_embeddings (= tied lm_head) N(0, {EMBED_STD})",
        "torch_threads": threads,
        "model_class": "BloomForCausalLM",
        "attn_implementation": "eager",
        "config": {
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": C,
            "n_layer": cfg.n_layer,
            "n_head": H,
            "head_dim": D,
            "intermediate_size": 4 * C,
            "layer_norm_epsilon": cfg.layer_norm_epsilon,
            "apply_residual_connection_post_layernorm":
                cfg.apply_residual_connection_post_layernorm,
            "hidden_dropout": cfg.hidden_dropout,
            "attention_dropout": cfg.attention_dropout,
            "pretraining_tp": cfg.pretraining_tp,
            "slow_but_exact": cfg.slow_but_exact,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "config_json_key_aliases": "num_hidden_layers -> n_layer, num_attention_heads -> "
                                       "n_head (BloomConfig.attribute_map); older BLOOM "
                                       "configs spell hidden_size as n_embed",
        },
        "notes": notes,
        "alibi_slopes": slopes_list,
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
        "sdpa_vs_eager": {"supported": False, "error": sdpa_error},
        "numpy_float64_check": numpy_check,
        "tensor_sensitivity": {
            "what": "max |logit change| over prompt 3 after adding 0.05*N(0,1) to one tensor "
                    "(or +1.0 to the q / k / v rows of layer 0's fused bias)",
            "max_abs_logit_change": sens,
        },
        "batched_greedy": {
            "padding_side": "left",
            "pad_token_id": PAD_ID,
            "positions": "ALiBi positions pos = (attention_mask.cumsum(-1) - 1) * "
                         "attention_mask (first real token 0), as BloomModel does",
            "input_ids": b_ids.tolist(),
            "attention_mask": b_mask.tolist(),
            "tokens": bnew,
            "equals_alone": res["batched_equal"],
            "min_margin": [f32(min(m)) for m in bmargins],
            "first_step_max_abs_diff_vs_alone_last_logits": first_step_diff,
        },
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    (out_dir / "reference.json").write_text(text + "\n", encoding="utf-8")

    print(f"== {NAME} (seed {seed})")
    print(f"  tensors ({len(tensor_names)}, {tensor_dtypes}):")
    for k in tensor_names:
        print(f"    {k} {tensor_shapes[k]}")
    for i, ids in enumerate(prompts):
        print(f"  prompt {i} ({len(ids)} tok): min_margin={res['min_margin'][i]:.4g} "
              f"distinct={res['distinct'][i]} batched==alone={res['batched_equal'][i]} "
              f"batched_min_margin={min(bmargins[i]):.4g}")
    print(f"  batched first-step diff max={max(first_step_diff):.3e}")
    print(f"  alibi slopes: {slopes_list}")
    print(f"  numpy check: {json.dumps(numpy_check, indent=1)}")
    print(f"  sensitivity: {json.dumps(sens, indent=1)}")
    print(f"  bare (no prefix) names load: diff {bare_diff}")
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
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()

    if args.search_seeds:
        search_seeds(args.search_seeds)
    else:
        write_fixture(pathlib.Path(args.out), args.threads)


if __name__ == "__main__":
    main()
