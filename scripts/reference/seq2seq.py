#!/usr/bin/env python3
"""Write encoder-decoder (T5, BART, torch.nn.Transformer) reference fixtures under
tests/fixtures/seq2seq/<name>/, computed with PyTorch / Hugging Face transformers on the CPU.

Each directory looks like a user's checkpoint directory plus a reference file:
    config.json, generation_config.json, model.safetensors
                     HF models: <Model>.save_pretrained(dir, safe_serialization=True);
                     torch.nn.Transformer: safetensors.torch.save_file(module.state_dict())
                     plus a config.json written by this script (no generation_config.json).
                     Random weights from a fixed seed (see init_weights): every tensor is
                     re-initialised so that it matters numerically (checked: `sensitivity`).
    reference.json   sources (token ids only, no tokenizer), encoder outputs, teacher-forced
                     decoder logits, greedy continuations (alone and as a right-padded
                     batch) with per-step top1-top2 margins, `notes` spelling out the
                     conventions, and a float64 numpy re-implementation check.

Configs:
    t5           T5ForConditionalGeneration, v1.1 style: gated-gelu FFN (wi_0, wi_1, wo;
                 gelu_new = tanh approximation), untied lm_head, d_model 32, 4 heads of
                 d_kv 12 (inner dim 48 != d_model), d_ff 40, 2 encoder / 3 decoder layers,
                 8 relative-attention buckets, max_distance 20, vocab 96.
    t5_tied      T5ForConditionalGeneration, original style: relu FFN (wi, wo), tied
                 embeddings (decoder output scaled by d_model**-0.5 before the tied lm_head),
                 d_model 32, 4 heads of d_kv 8, d_ff 48, 2 + 2 layers, vocab 96. Init gains
                 (see init_value): small shared embedding, decoder.final_layer_norm ~ 10,
                 stronger self-attention -- otherwise tied random decoders repeat a token.
    bart         BartForConditionalGeneration, d_model 32, 4 heads, 2 + 2 layers, ffn 48,
                 gelu (erf), learned positions (offset 2, 64 + 2 rows), scale_embedding,
                 vocab 120, random final_logits_bias. Init gains: feed-forward x4,
                 cross-attention v/o x0.5 (same reason as t5_tied).
    transformer  torch.nn.Transformer (post-norm, relu, batch_first) wrapped in Seq2Seq
                 below: shared token embedding * sqrt(d_model) + fixed sinusoidal positions,
                 generator Linear(32, 100) with bias.

Every fixture is checked against an independent float64 numpy forward (numpy_* below) written
from the conventions stated in reference.json `notes`.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/seq2seq.py                 # all configs
    .cache/venv/bin/python scripts/reference/seq2seq.py --only bart
and, for the transformers 5.x variants t5_v5 and t5_tied_v5 (the same weights saved by
transformers 5.x: tensor names unchanged; config.json says tie_word_embeddings=true for both and
carries the new scale_decoder_outputs, false for t5's untied head, true for t5_tied; see
transformers5.py and t5_head) and t5_tied_unscaled_v5 (5.x only: a tied head without the
rescale, see CONFIGS), through scripts/setup-reference5.sh's overlay:
    PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/seq2seq.py --transformers5
Seeds are fixed in CONFIGS; --search-seeds N re-runs the seed search (prints the first seed in
0..N-1 that satisfies the margin / diversity criteria) instead of writing fixtures.
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
import platform
import shutil
import sys

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn as nn
import transformers
from safetensors import safe_open
from transformers import (BartConfig, BartForConditionalGeneration, DynamicCache,
                          EncoderDecoderCache, GenerationConfig, T5Config,
                          T5ForConditionalGeneration)
from transformers.models.t5.modeling_t5 import T5Attention

import transformers5 as v5

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "seq2seq"

MAX_NEW_TOKENS = 20
# Acceptance criteria for a seed (every greedy step of every source, alone and batched):
MIN_MARGIN = 5e-3      # top1 - top2 logit
MIN_DISTINCT = 8       # distinct ids among the 20 generated tokens of each source
MIN_TAIL_DISTINCT = 3  # distinct ids among the last 10 of them (no collapse to a fixed point)
MIN_SOURCE_DIFF = 10   # positions where the two sources' continuations differ (source matters)
# ... and the generated tokens never contain the family's eos / pad ids (eos is disabled at
# generate time, so this is not needed for HF; it keeps the fixture usable by a Rust
# generation loop that stops at eos by default).
SOURCE_SEED = 20250201     # numpy default_rng(SOURCE_SEED + i) draws source i
TARGET_SEED = 20250301     # numpy default_rng(TARGET_SEED + i) draws decoder input i
RELATIVE_RANGE = 70        # relative_buckets for memory - query in -70..70
PERTURB = 0.01             # sensitivity check: tensor += PERTURB * N(0, 1)

T5_COMMON = dict(
    vocab_size=96, d_model=32, num_heads=4, relative_attention_num_buckets=8,
    relative_attention_max_distance=20, layer_norm_epsilon=1e-6, dropout_rate=0.0,
    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, initializer_factor=1.0,
    is_encoder_decoder=True, use_cache=True,
)

CONFIGS = {
    # transformers 5.x only (--transformers5): t5's config made into a new model by 5.x, which
    # ties the head to `shared` whatever tie_word_embeddings says and, for
    # tie_word_embeddings=false, turns the rescale off: a tied head WITHOUT the d_model^-0.5
    # scale, a kind no 4.x T5 has (its file: no lm_head.weight, tie_word_embeddings true,
    # scale_decoder_outputs false).
    "t5_tied_unscaled": dict(
        family="t5",
        config=dict(T5_COMMON, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    d_kv=12, d_ff=40, num_layers=2, num_decoder_layers=3),
        v5_only=True,
        tied=True,
        gains=dict(emb=0.1, final_norm=10.0, self=2.5),  # t5_tied's (same reason)
        seed=2,  # chosen by --search-seeds 40 --transformers5 (first seed meeting the criteria)
        source_lengths=[27, 11], target_lengths=[6, 9],
        special_ids=[0, 1, 2],
    ),
    "t5": dict(
        family="t5",
        config=dict(T5_COMMON, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    d_kv=12, d_ff=40, num_layers=2, num_decoder_layers=3),
        seed=0,  # chosen by --search-seeds 100 (first seed meeting the criteria)
        source_lengths=[27, 11], target_lengths=[6, 9],
        special_ids=[0, 1, 2],   # pad = decoder start, eos, (unk in T5 tokenizers)
    ),
    "t5_tied": dict(
        family="t5",
        config=dict(T5_COMMON, feed_forward_proj="relu", tie_word_embeddings=True,
                    d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2),
        seed=1,  # chosen by --search-seeds 100 (first seed meeting the criteria)
        gains=dict(emb=0.1, final_norm=10.0, self=2.5),
        source_lengths=[25, 9], target_lengths=[6, 9],
        special_ids=[0, 1, 2],
    ),
    "bart": dict(
        family="bart",
        config=dict(vocab_size=120, d_model=32, encoder_layers=2, decoder_layers=2,
                    encoder_attention_heads=4, decoder_attention_heads=4,
                    encoder_ffn_dim=48, decoder_ffn_dim=48, activation_function="gelu",
                    max_position_embeddings=64, scale_embedding=True, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                    forced_bos_token_id=None, forced_eos_token_id=None, dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, classifier_dropout=0.0,
                    encoder_layerdrop=0.0, decoder_layerdrop=0.0, init_std=0.02,
                    tie_word_embeddings=True, use_cache=True, is_encoder_decoder=True),
        seed=3,  # chosen by --search-seeds 100 (first seed meeting the criteria)
        gains=dict(ff=4.0, cross=0.5),
        source_lengths=[14, 8], target_lengths=[6, 9],
        special_ids=[0, 1, 2, 3],  # bos, pad, eos = decoder start, (unk in BART tokenizers)
    ),
    "transformer": dict(
        family="transformer",
        config=dict(model_type="torch_nn_transformer", vocab_size=100, d_model=32, nhead=4,
                    num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=48,
                    dropout=0.0, activation="relu", layer_norm_eps=1e-5, batch_first=True,
                    norm_first=False, bias=True, max_position_embeddings=64,
                    pad_token_id=0, bos_token_id=1, eos_token_id=2,
                    decoder_start_token_id=1, tie_word_embeddings=False,
                    embedding_scale=math.sqrt(32), positional_encoding="sinusoidal"),
        seed=4,  # chosen by --search-seeds 100 (first seed meeting the criteria)
        source_lengths=[12, 7], target_lengths=[6, 9],
        special_ids=[0, 1, 2],
    ),
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


def draw_ids(seed, n, low, high):
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(low, high, size=n)]


def make_inputs(spec):
    cfg = spec["config"]
    low = max(spec["special_ids"]) + 1  # all special ids are 0..low-1
    sources = [draw_ids(SOURCE_SEED + i, n, low, cfg["vocab_size"])
               for i, n in enumerate(spec["source_lengths"])]
    start = cfg["decoder_start_token_id"]
    targets = [[start] + draw_ids(TARGET_SEED + i, n - 1, low, cfg["vocab_size"])
               for i, n in enumerate(spec["target_lengths"])]
    return sources, targets, low


def margins_of(step_logits):
    """top1 - top2 of each row of [steps, vocab]."""
    top2 = torch.topk(step_logits.float(), 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


def sinusoid_table(n_pos, d):
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), float64."""
    pos = np.arange(n_pos, dtype=np.float64)[:, None]
    i2 = np.arange(0, d, 2, dtype=np.float64)[None, :]
    ang = pos / np.power(10000.0, i2 / d)
    pe = np.zeros((n_pos, d), dtype=np.float64)
    pe[:, 0::2] = np.sin(ang)
    pe[:, 1::2] = np.cos(ang)
    return pe


# ------------------------------------------------------------- torch.nn.Transformer wrapper

class Seq2Seq(nn.Module):
    """torch.nn.Transformer 'as in the paper' with a shared token embedding (scaled by
    sqrt(d_model)), fixed sinusoidal positions (not a parameter, not saved) and a linear
    generator. State-dict names: embedding.*, transformer.*, generator.*."""

    def __init__(self, c):
        super().__init__()
        self.d_model = c["d_model"]
        self.embedding = nn.Embedding(c["vocab_size"], c["d_model"])
        self.transformer = nn.Transformer(
            d_model=c["d_model"], nhead=c["nhead"], num_encoder_layers=c["num_encoder_layers"],
            num_decoder_layers=c["num_decoder_layers"], dim_feedforward=c["dim_feedforward"],
            dropout=c["dropout"], activation=c["activation"], layer_norm_eps=c["layer_norm_eps"],
            batch_first=True, norm_first=False, bias=True)
        self.generator = nn.Linear(c["d_model"], c["vocab_size"])
        pe = torch.from_numpy(sinusoid_table(c["max_position_embeddings"], c["d_model"]))
        self.register_buffer("pe", pe.to(torch.float32), persistent=False)

    def embed(self, ids):
        return self.embedding(ids) * math.sqrt(self.d_model) + self.pe[: ids.shape[1]]

    def encode(self, src, src_pad=None):
        return self.transformer.encoder(self.embed(src), src_key_padding_mask=src_pad)

    def decode(self, tgt, memory, src_pad=None):
        n = tgt.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n)
        y = self.transformer.decoder(self.embed(tgt), memory, tgt_mask=mask, tgt_is_causal=True,
                                     memory_key_padding_mask=src_pad)
        return self.generator(y)

    def forward(self, src, tgt, src_pad=None):
        n = tgt.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n)
        y = self.transformer(self.embed(src), self.embed(tgt), tgt_mask=mask, tgt_is_causal=True,
                             src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad)
        return self.generator(y)


# ----------------------------------------------------------------------------- init

FF_MATRICES = (".wi.weight", ".wi_0.weight", ".wi_1.weight", ".wo.weight", ".fc1.weight",
               ".fc2.weight", ".linear1.weight", ".linear2.weight")
SELF_VO = ("SelfAttention.v.weight", "SelfAttention.o.weight", "self_attn.v_proj.weight",
           "self_attn.out_proj.weight")
CROSS_VO = ("EncDecAttention.v.weight", "EncDecAttention.o.weight", "encoder_attn.v_proj.weight",
            "encoder_attn.out_proj.weight")


def init_value(family, name, shape, gen, gains):
    """Deterministic random values for tensor `name` (HF/state-dict name).

    gains["ff"] multiplies the std of the feed-forward matrices, gains["cross"] that of the
    cross-attention value/output matrices. With tied embeddings (t5_tied, bart) a random
    decoder mostly predicts the token it was just fed (the residual stream carries its
    embedding, and the tied head scores it highest) or a token fixed by the (constant)
    cross-attention output. Remedies (found by trying a few settings): bart: a strong
    feed-forward (a random token -> token map) and a weaker cross-attention; t5_tied: a
    small shared embedding (emb 0.1, so the residual stream is dominated by the layers'
    outputs rather than by the fed token's own embedding; the first layer norm rescales it
    anyway) compensated by decoder.final_layer_norm.weight ~ 10 (logit scale ~ 1), and a
    stronger decoder/encoder self-attention (self 2.5, history dependence).
    """
    value = init_value_base(family, name, shape, gen)
    if name.endswith(FF_MATRICES):
        return value * gains.get("ff", 1.0)
    if name.endswith(CROSS_VO):
        return value * gains.get("cross", 1.0)
    if name.endswith(SELF_VO):
        return value * gains.get("self", 1.0)
    if name.endswith("shared.weight"):
        return value * gains.get("emb", 1.0)
    if name == "decoder.final_layer_norm.weight":
        return value * gains.get("final_norm", 1.0)
    return value


def init_value_base(family, name, shape, gen):
    noise = torch.randn(shape, generator=gen, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if family == "t5":
        if name == "shared.weight":
            return noise * 1.0
        if name == "lm_head.weight":
            return noise / math.sqrt(shape[1])
        if name.endswith("relative_attention_bias.weight"):
            return noise * 1.0
        if name.endswith("layer_norm.weight"):
            return 1.0 + 0.1 * noise
        assert len(shape) == 2 and leaf == "weight", name
        return noise * (0.8 / math.sqrt(shape[1]))
    if family == "bart":
        if name == "model.shared.weight":
            return noise * 0.2      # times embed_scale sqrt(32) = 5.66 in the forward
        if name.endswith("embed_positions.weight"):
            return noise * 0.5
        if name == "final_logits_bias":
            return noise * 0.3
        if "layer_norm" in name or "layernorm" in name:
            return (1.0 + 0.1 * noise) if leaf == "weight" else 0.1 * noise
        if leaf == "bias":
            return 0.1 * noise
        assert len(shape) == 2, name
        return noise * (0.8 / math.sqrt(shape[1]))
    if family == "transformer":
        if name == "embedding.weight":
            return noise * 0.2      # times sqrt(32) = 5.66 in the forward
        if ".norm" in name:
            return (1.0 + 0.1 * noise) if leaf == "weight" else 0.1 * noise
        if leaf.endswith("bias"):
            return 0.1 * noise
        if name == "generator.weight":
            return noise / math.sqrt(shape[1])
        assert len(shape) == 2, name
        return noise * (0.8 / math.sqrt(shape[1]))
    raise AssertionError(family)


@torch.no_grad()
def init_weights(model, family, seed, gains):
    """Every parameter (and BART's final_logits_bias buffer) gets fresh random values, in
    sorted-name order from one generator. Tied parameters are set once."""
    gen = torch.Generator().manual_seed(seed)
    tensors = list(model.named_parameters(remove_duplicate=False))
    if family == "bart":
        tensors.append(("final_logits_bias", model.final_logits_bias))
    # Group tied aliases (same storage); the canonical name is the shared embedding's.
    groups = {}
    for name, p in tensors:
        groups.setdefault(p.data_ptr(), []).append((name, p))
    canon = []
    for aliases in groups.values():
        names = sorted(n for n, _ in aliases)
        shared = [n for n in names if n.endswith("shared.weight")]
        canon.append((shared[0] if shared else names[0], aliases[0][1]))
    for name, p in sorted(canon, key=lambda t: t[0]):
        p.copy_(init_value(family, name, tuple(p.shape), gen, gains))


def build_model(name, spec, seed):
    family = spec["family"]
    torch.manual_seed(seed)
    if family == "t5":
        model = T5ForConditionalGeneration._from_config(
            T5Config(**spec["config"]), attn_implementation="eager", torch_dtype=torch.float32)
        if v5.MAJOR >= 5 and not spec["config"]["tie_word_embeddings"] and not spec.get("v5_only"):
            # transformers 5.x ties T5's lm_head to `shared` whatever the config says
            # (tie_word_embeddings=false now only turns the rescale off:
            # scale_decoder_outputs=false). A v1.1 checkpoint's own lm_head.weight unties it
            # again in from_pretrained; do the same, so the weights are the 4.57 fixture's.
            model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
            model.all_tied_weights_keys.pop("lm_head.weight")
    elif family == "bart":
        model = BartForConditionalGeneration._from_config(
            BartConfig(**spec["config"]), attn_implementation="eager", torch_dtype=torch.float32)
    else:
        model = Seq2Seq(spec["config"])
    init_weights(model, family, seed, spec.get("gains", {}))
    model.eval()
    if family != "transformer":
        model.generation_config.eos_token_id = None
        model.generation_config.forced_eos_token_id = None
        model.generation_config.forced_bos_token_id = None
    return model


# ----------------------------------------------------------------------------- torch runs

def pad_id(spec):
    return spec["config"]["pad_token_id"]


def right_pad(sources, pad):
    width = max(len(s) for s in sources)
    ids = [s + [pad] * (width - len(s)) for s in sources]
    mask = [[1] * len(s) + [0] * (width - len(s)) for s in sources]
    return torch.tensor(ids), torch.tensor(mask)


def generate_kwargs(spec):
    return dict(max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                num_beams=1, eos_token_id=None, pad_token_id=pad_id(spec),
                decoder_start_token_id=spec["config"]["decoder_start_token_id"],
                forced_bos_token_id=None, forced_eos_token_id=None,
                return_dict_in_generate=True, output_logits=True, output_scores=True)


@torch.inference_mode()
def hf_greedy(model, spec, input_ids, attention_mask):
    """HF generate (KV cache). Returns tokens [batch][20] (without the start token) and
    per-step logits [batch, 20, vocab]."""
    # transformers 4.57.1 sizes generate()'s default cache from config.get_text_config(
    # decoder=True), which for T5 keeps num_layers (encoder depth) instead of
    # num_decoder_layers -> IndexError when they differ (t5: 2 vs 3). A config-less
    # (lazily growing) cache avoids that; it is what generate builds otherwise.
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    out = model.generate(input_ids, attention_mask=attention_mask, past_key_values=cache,
                         **generate_kwargs(spec))
    start = spec["config"]["decoder_start_token_id"]
    assert (out.sequences[:, 0] == start).all()
    new = out.sequences[:, 1:].tolist()
    assert all(len(n) == MAX_NEW_TOKENS for n in new), new
    logits = torch.stack(list(out.logits), dim=1)   # raw logits
    scores = torch.stack(list(out.scores), dim=1)   # after logits processors
    assert torch.equal(logits, scores), "a logits processor changed the logits"
    assert logits.argmax(-1).tolist() == new
    return new, logits


@torch.inference_mode()
def torch_greedy(model, spec, input_ids, attention_mask):
    """Own greedy loop, full recompute each step (nn.Transformer; also used as the no-cache
    cross-check of HF generate)."""
    start = spec["config"]["decoder_start_token_id"]
    b = input_ids.shape[0]
    seq = torch.full((b, 1), start, dtype=torch.long)
    steps = []
    for _ in range(MAX_NEW_TOKENS):
        if spec["family"] == "transformer":
            lg = model(input_ids, seq, src_pad=(attention_mask == 0))[:, -1]
        else:
            lg = model(input_ids=input_ids, attention_mask=attention_mask,
                       decoder_input_ids=seq, use_cache=False).logits[:, -1]
        steps.append(lg)
        seq = torch.cat([seq, lg.argmax(-1, keepdim=True)], dim=1)
    return seq[:, 1:].tolist(), torch.stack(steps, dim=1)


def greedy(model, spec, input_ids, attention_mask):
    if spec["family"] == "transformer":
        return torch_greedy(model, spec, input_ids, attention_mask)
    return hf_greedy(model, spec, input_ids, attention_mask)


def evaluate(model, spec, sources):
    res = {"greedy": [], "margins": [], "distinct": [], "step_logits": []}
    for ids in sources:
        inp = torch.tensor([ids])
        new, lg = greedy(model, spec, inp, torch.ones_like(inp))
        res["greedy"].append(new[0])
        res["margins"].append(margins_of(lg[0]))
        res["distinct"].append(len(set(new[0])))
        res["step_logits"].append(lg[0])
    bin_, bmask = right_pad(sources, pad_id(spec))
    bnew, blg = greedy(model, spec, bin_, bmask)
    res["batched"] = dict(input_ids=bin_, attention_mask=bmask, tokens=bnew,
                          margins=[margins_of(blg[b]) for b in range(len(sources))],
                          step_logits=blg)
    res["batched_equal"] = [a == b for a, b in zip(res["greedy"], bnew)]
    res["tail_distinct"] = [len(set(g[-10:])) for g in res["greedy"]]
    res["source_diff"] = sum(a != b for a, b in zip(res["greedy"][0], res["greedy"][1]))
    return res


def forbidden_ids(spec):
    c = spec["config"]
    return {c["eos_token_id"], c["pad_token_id"]}


def acceptable(res, spec):
    bad = forbidden_ids(spec)
    return (min(min(m) for m in res["margins"]) >= MIN_MARGIN
            and min(min(m) for m in res["batched"]["margins"]) >= MIN_MARGIN
            and min(res["distinct"]) >= MIN_DISTINCT
            and min(res["tail_distinct"]) >= MIN_TAIL_DISTINCT
            and res["source_diff"] >= MIN_SOURCE_DIFF
            and all(res["batched_equal"])
            and not any(t in bad for g in res["greedy"] for t in g))


@torch.inference_mode()
def encoder_out(model, spec, input_ids, attention_mask):
    if spec["family"] == "transformer":
        return model.encode(input_ids, src_pad=(attention_mask == 0))
    return model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@torch.inference_mode()
def decoder_logits(model, spec, src, tgt):
    s, t = torch.tensor([src]), torch.tensor([tgt])
    if spec["family"] == "transformer":
        return model(s, t)[0]
    return model(input_ids=s, attention_mask=torch.ones_like(s), decoder_input_ids=t,
                 use_cache=False).logits[0]


# ------------------------------------------------------------- independent numpy reference

def np_softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu_erf(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def t5_bucket(rel, bidirectional, num_buckets, max_distance):
    """Independent (float64, scalar) T5 bucket of relative position rel = memory - query."""
    nb = num_buckets
    ret = 0
    if bidirectional:
        nb //= 2
        if rel > 0:
            ret += nb
        n = abs(rel)
    else:
        n = max(-rel, 0)
    max_exact = nb // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                            * (nb - max_exact))
    return ret + min(large, nb - 1)


def numpy_t5(g, c, src, tgt):
    """float64 T5: returns (encoder output [Ls, d], logits [Lt, vocab])."""
    H, dk, eps = c["num_heads"], c["d_kv"], c["layer_norm_epsilon"]
    nb, md = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
    gated = c["feed_forward_proj"].startswith("gated")

    def rms(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    def rel_bias(table, lq, lk, bidirectional):  # [H, lq, lk]
        b = np.array([[t5_bucket(j - i, bidirectional, nb, md) for j in range(lk)]
                      for i in range(lq)])
        return table[b].transpose(2, 0, 1)

    def attn(xq, xkv, pre, bias):
        lq, lk = len(xq), len(xkv)
        q = (xq @ g[pre + "q.weight"].T).reshape(lq, H, dk).transpose(1, 0, 2)
        k = (xkv @ g[pre + "k.weight"].T).reshape(lk, H, dk).transpose(1, 0, 2)
        v = (xkv @ g[pre + "v.weight"].T).reshape(lk, H, dk).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) + bias          # NO 1/sqrt(d_kv) scaling
        o = (np_softmax(s) @ v).transpose(1, 0, 2).reshape(lq, H * dk)
        return o @ g[pre + "o.weight"].T

    def ff(x, pre):
        if gated:
            h = gelu_tanh(x @ g[pre + "wi_0.weight"].T) * (x @ g[pre + "wi_1.weight"].T)
        else:
            h = np.maximum(x @ g[pre + "wi.weight"].T, 0.0)
        return h @ g[pre + "wo.weight"].T

    E = g["shared.weight"]
    ls, lt = len(src), len(tgt)
    x = E[src]
    eb = rel_bias(g["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
                  ls, ls, True)
    for i in range(c["num_layers"]):
        p = f"encoder.block.{i}.layer."
        x = x + attn(rms(x, g[p + "0.layer_norm.weight"]), rms(x, g[p + "0.layer_norm.weight"]),
                     p + "0.SelfAttention.", eb)
        x = x + ff(rms(x, g[p + "1.layer_norm.weight"]), p + "1.DenseReluDense.")
    enc = rms(x, g["encoder.final_layer_norm.weight"])

    causal = np.where(np.arange(lt)[None, :] <= np.arange(lt)[:, None], 0.0, -np.inf)
    db = rel_bias(g["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
                  lt, lt, False) + causal
    y = E[tgt]
    for i in range(c["num_decoder_layers"]):
        p = f"decoder.block.{i}.layer."
        h = rms(y, g[p + "0.layer_norm.weight"])
        y = y + attn(h, h, p + "0.SelfAttention.", db)
        y = y + attn(rms(y, g[p + "1.layer_norm.weight"]), enc, p + "1.EncDecAttention.", 0.0)
        y = y + ff(rms(y, g[p + "2.layer_norm.weight"]), p + "2.DenseReluDense.")
    y = rms(y, g["decoder.final_layer_norm.weight"])
    tied, scaled = t5_head(c, g)
    if scaled:
        y = y * c["d_model"] ** -0.5
    logits = y @ (E if tied else g["lm_head.weight"]).T
    return enc, logits


def t5_head(c, tensors):
    """(tied, scaled) of a T5 checkpoint: is the head the shared embedding, and is the decoder
    output scaled by d_model^-0.5 before it. transformers 4.x: both are tie_word_embeddings.
    transformers 5.x writes tie_word_embeddings=true always; the head is tied when the file has
    no lm_head.weight (from_pretrained keeps a present one that differs from shared), and the
    scale is the new scale_decoder_outputs (absent: tie_word_embeddings != false)."""
    tied = "lm_head.weight" not in tensors
    scaled = c.get("scale_decoder_outputs")
    if scaled is None:
        scaled = c["tie_word_embeddings"] is not False
    if "scale_decoder_outputs" not in c:  # 4.x: the one flag says both
        assert tied == scaled == c["tie_word_embeddings"], (tied, scaled, c["tie_word_embeddings"])
    return tied, scaled


def numpy_bart(g, c, src, tgt):
    """float64 BART: returns (encoder output [Ls, d], logits [Lt, vocab])."""
    d, eps = c["d_model"], 1e-5
    scale = math.sqrt(d) if c["scale_embedding"] else 1.0
    E = g["model.shared.weight"]

    def ln(x, pre):
        return np_layer_norm(x, g[pre + ".weight"], g[pre + ".bias"], eps)

    def lin(x, pre):
        return x @ g[pre + ".weight"].T + g[pre + ".bias"]

    def attn(xq, xkv, pre, H, mask):
        lq, lk, hd = len(xq), len(xkv), d // H
        q = (lin(xq, pre + "q_proj") * hd ** -0.5).reshape(lq, H, hd).transpose(1, 0, 2)
        k = lin(xkv, pre + "k_proj").reshape(lk, H, hd).transpose(1, 0, 2)
        v = lin(xkv, pre + "v_proj").reshape(lk, H, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) + mask
        o = (np_softmax(s) @ v).transpose(1, 0, 2).reshape(lq, d)
        return lin(o, pre + "out_proj")

    ls, lt = len(src), len(tgt)
    x = E[src] * scale + g["model.encoder.embed_positions.weight"][np.arange(ls) + 2]
    x = ln(x, "model.encoder.layernorm_embedding")
    for i in range(c["encoder_layers"]):
        p = f"model.encoder.layers.{i}."
        x = ln(x + attn(x, x, p + "self_attn.", c["encoder_attention_heads"], 0.0),
               p + "self_attn_layer_norm")
        h = gelu_erf(lin(x, p + "fc1"))
        x = ln(x + lin(h, p + "fc2"), p + "final_layer_norm")
    enc = x

    causal = np.where(np.arange(lt)[None, :] <= np.arange(lt)[:, None], 0.0, -np.inf)
    y = E[tgt] * scale + g["model.decoder.embed_positions.weight"][np.arange(lt) + 2]
    y = ln(y, "model.decoder.layernorm_embedding")
    H = c["decoder_attention_heads"]
    for i in range(c["decoder_layers"]):
        p = f"model.decoder.layers.{i}."
        y = ln(y + attn(y, y, p + "self_attn.", H, causal), p + "self_attn_layer_norm")
        y = ln(y + attn(y, enc, p + "encoder_attn.", H, 0.0), p + "encoder_attn_layer_norm")
        h = gelu_erf(lin(y, p + "fc1"))
        y = ln(y + lin(h, p + "fc2"), p + "final_layer_norm")
    logits = y @ E.T + g["final_logits_bias"][0]
    return enc, logits


def numpy_transformer(g, c, src, tgt):
    """float64 torch.nn.Transformer wrapper: returns (memory [Ls, d], logits [Lt, vocab])."""
    d, H, eps = c["d_model"], c["nhead"], c["layer_norm_eps"]
    hd = d // H
    pe = sinusoid_table(c["max_position_embeddings"], d).astype(np.float32).astype(np.float64)
    E = g["embedding.weight"]

    def ln(x, pre):
        return np_layer_norm(x, g[pre + ".weight"], g[pre + ".bias"], eps)

    def lin(x, pre):
        return x @ g[pre + ".weight"].T + g[pre + ".bias"]

    def mha(xq, xkv, pre, mask):
        W, b = g[pre + "in_proj_weight"], g[pre + "in_proj_bias"]
        lq, lk = len(xq), len(xkv)
        q = (xq @ W[:d].T + b[:d]).reshape(lq, H, hd).transpose(1, 0, 2)
        k = (xkv @ W[d:2 * d].T + b[d:2 * d]).reshape(lk, H, hd).transpose(1, 0, 2)
        v = (xkv @ W[2 * d:].T + b[2 * d:]).reshape(lk, H, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        o = (np_softmax(s) @ v).transpose(1, 0, 2).reshape(lq, d)
        return lin(o, pre + "out_proj")

    def ff(x, pre):
        return lin(np.maximum(lin(x, pre + "linear1"), 0.0), pre + "linear2")

    ls, lt = len(src), len(tgt)
    x = E[src] * math.sqrt(d) + pe[:ls]
    for i in range(c["num_encoder_layers"]):
        p = f"transformer.encoder.layers.{i}."
        x = ln(x + mha(x, x, p + "self_attn.", 0.0), p + "norm1")
        x = ln(x + ff(x, p), p + "norm2")
    mem = ln(x, "transformer.encoder.norm")

    causal = np.where(np.arange(lt)[None, :] <= np.arange(lt)[:, None], 0.0, -np.inf)
    y = E[tgt] * math.sqrt(d) + pe[:lt]
    for i in range(c["num_decoder_layers"]):
        p = f"transformer.decoder.layers.{i}."
        y = ln(y + mha(y, y, p + "self_attn.", causal), p + "norm1")
        y = ln(y + mha(y, mem, p + "multihead_attn.", 0.0), p + "norm2")
        y = ln(y + ff(y, p), p + "norm3")
    y = ln(y, "transformer.decoder.norm")
    return mem, lin(y, "generator")


NUMPY_FORWARD = {"t5": numpy_t5, "bart": numpy_bart, "transformer": numpy_transformer}


# ----------------------------------------------------------------------------- notes

def t5_notes(c, tensor_names):
    H, dk, d = c["num_heads"], c["d_kv"], c["d_model"]
    tied, scaled = t5_head(c, tensor_names)
    gated = c["feed_forward_proj"].startswith("gated")
    nb, md = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
    ff = ("gated: DenseReluDense.wo(gelu_new(DenseReluDense.wi_0(h)) * DenseReluDense.wi_1(h)); "
          "gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (tanh approximation)"
          if gated else
          "DenseReluDense.wo(relu(DenseReluDense.wi(h)))")
    return {
        "architecture": "pre-norm encoder-decoder, no biases anywhere, no absolute positions. "
                        "Encoder: x = shared[src]; per block i: x += SelfAttention(n0) with "
                        "n0 = layer.0.layer_norm(x); x += FF(layer.1.layer_norm(x)); "
                        "enc = encoder.final_layer_norm(x) (this is `encoder_hidden`). "
                        "Decoder: y = shared[tgt]; per block: y += SelfAttention(n0) (causal, "
                        "relative bias); y += EncDecAttention(q from layer.1.layer_norm(y), "
                        "k/v from enc); y += FF(layer.2.layer_norm(y)); "
                        "y = decoder.final_layer_norm(y); logits = lm_head(y). "
                        "The token embedding is NOT scaled on input. Linear weights are "
                        "[out, in] (y = x @ W^T).",
        "rms_norm": f"T5LayerNorm: y = weight * x / sqrt(mean(x^2) + {c['layer_norm_epsilon']:g}) "
                    "(no mean subtraction, no bias; weight multiplies directly)",
        "attention": f"{H} heads, d_kv {dk}, inner dim {H * dk} (q/k/v weights [{H * dk}, {d}], "
                     f"o weight [{d}, {H * dk}]); rows of q/k/v are head-major (head h = rows "
                     f"h*{dk}..(h+1)*{dk}). scores = q.k + position_bias with NO 1/sqrt(d_kv) "
                     "scaling; softmax in float32; heads concatenated in order before o.",
        "relative_position_bias": f"only block 0 of each stack holds "
                                  f"SelfAttention.relative_attention_bias.weight [{nb} buckets, {H} "
                                  "heads]; the bias [head, q, k] = table[bucket(k - q), head] "
                                  "computed in block 0 is reused (added to the scores) by "
                                  "every block of that stack. Encoder: bidirectional=True; "
                                  "decoder self-attention: bidirectional=False (plus the causal "
                                  "mask). Cross-attention (EncDecAttention) has no position "
                                  "bias. Query/key positions are 0-based absolute indices "
                                  "within the sequence (right padding does not move them).",
        "bucket_function": f"relative_position = memory(key) - query; num_buckets={nb}, "
                           f"max_distance={md}. bidirectional: n = num_buckets/2 = {nb // 2}, "
                           f"offset = n if rel > 0 else 0, r = |rel|; unidirectional: n = "
                           f"{nb}, offset 0, r = max(-rel, 0). max_exact = n/2; bucket = offset "
                           "+ (r if r < max_exact else min(n - 1, max_exact + trunc(log(r / "
                           "max_exact) / log(max_distance / max_exact) * (n - max_exact)))). "
                           "HF computes log(r/max_exact) in float32; the exact table is in "
                           "`relative_buckets` (an independent float64 implementation agrees "
                           "for every entry).",
        "feed_forward": ff,
        "lm_head": (("tie_word_embeddings=true: logits = (y * d_model^-0.5) @ shared.weight^T "
                     f"(scale {d}^-0.5 applied to the decoder output after "
                     "decoder.final_layer_norm); lm_head.weight is NOT in model.safetensors"
                     if tied else
                     "tie_word_embeddings=false: logits = y @ lm_head.weight^T, NO d_model^-0.5 "
                     "scaling")
                    if "scale_decoder_outputs" not in c else
                    (f"transformers 5.x config: tie_word_embeddings={c['tie_word_embeddings']}, "
                     f"scale_decoder_outputs={c['scale_decoder_outputs']}; logits = "
                     + (f"(y * {d}^-0.5)" if scaled else "y (NOT scaled)")
                     + (" @ shared.weight^T (lm_head.weight is NOT in model.safetensors)" if tied
                        else " @ lm_head.weight^T (lm_head.weight is in model.safetensors and "
                             "differs from shared.weight: 5.x's from_pretrained then leaves them "
                             "untied although tie_word_embeddings is true)"))),
        "tying": "shared.weight is the one token embedding: encoder.embed_tokens and "
                 "decoder.embed_tokens are the same tensor and are not in the file"
                 + ("; lm_head too" if tied else "; lm_head.weight is separate"),
        "decoder_start": f"decoder_start_token_id = pad = {c['decoder_start_token_id']}; "
                         f"eos = {c['eos_token_id']} (disabled during generation).",
        "masks": "alone: no padding. batched: right padding with pad id 0 and attention_mask; "
                 "padded keys get finfo(float32).min added to the scores in the encoder "
                 "self-attention and in the decoder cross-attention.",
    }


def bart_notes(c):
    d, H = c["d_model"], c["encoder_attention_heads"]
    return {
        "architecture": "post-norm encoder-decoder with biases everywhere. Encoder: x = "
                        "shared[src] * sqrt(d_model) + encoder.embed_positions[pos + 2]; x = "
                        "layernorm_embedding(x); per layer: x = self_attn_layer_norm(x + "
                        "self_attn(x)); x = final_layer_norm(x + fc2(gelu(fc1(x)))). No final "
                        "encoder norm after the last layer: `encoder_hidden` is the last "
                        "layer's output. Decoder: y = shared[tgt] * sqrt(d_model) + "
                        "decoder.embed_positions[pos + 2]; y = layernorm_embedding(y); per "
                        "layer: y = self_attn_layer_norm(y + self_attn(y, causal)); y = "
                        "encoder_attn_layer_norm(y + encoder_attn(q=y, kv=enc)); y = "
                        "final_layer_norm(y + fc2(gelu(fc1(y)))); logits = y @ "
                        "model.shared.weight^T + final_logits_bias[0]. Linear weights are "
                        "[out, in].",
        "embedding_scale": f"scale_embedding=true: token embeddings are multiplied by "
                           f"sqrt({d}) = {math.sqrt(d):.9g} (BartScaledWordEmbedding; the "
                           "positional embeddings are not scaled); the lm_head uses the "
                           "unscaled shared.weight.",
        "positions": "BartLearnedPositionalEmbedding: table has max_position_embeddings + 2 = "
                     f"{c['max_position_embeddings'] + 2} rows; position p (0-based within "
                     "the sequence, separately for source and target) uses row p + 2 (rows 0 "
                     "and 1 are never used). Encoder and decoder have separate tables. Right "
                     "padding does not move positions.",
        "layer_norm": "nn.LayerNorm, eps 1e-5, weight and bias",
        "attention": f"{H} heads, head_dim {d // H}; q = q_proj(x) * head_dim^-0.5 (bias "
                     "included before scaling), k = k_proj, v = v_proj (with biases); rows "
                     "head-major; heads concatenated before out_proj (with bias).",
        "activation": "gelu = exact erf GELU 0.5 x (1 + erf(x / sqrt(2)))",
        "tying": "model.shared.weight is the single token embedding tensor in the file; "
                 "model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight and "
                 "lm_head.weight are tied to it and are NOT in model.safetensors. "
                 "final_logits_bias [1, vocab] (a buffer, random non-zero here) IS in the file.",
        "decoder_start": f"decoder_start_token_id = eos = {c['decoder_start_token_id']}; bos = "
                         f"{c['bos_token_id']}, pad = {c['pad_token_id']}; forced_bos/"
                         "forced_eos disabled (None), eos disabled during generation. "
                         "Sources are random ids without bos/eos wrapping.",
        "masks": "alone: no padding. batched: right padding with pad id 1 and attention_mask; "
                 "padded keys are masked (finfo.min) in encoder self-attention and decoder "
                 "cross-attention.",
    }


def transformer_notes(c, names):
    d, H = c["d_model"], c["nhead"]
    return {
        "module": "class Seq2Seq(nn.Module) in scripts/reference/seq2seq.py: embedding = "
                  f"nn.Embedding({c['vocab_size']}, {d}); transformer = nn.Transformer(d_model="
                  f"{d}, nhead={H}, num_encoder_layers={c['num_encoder_layers']}, "
                  f"num_decoder_layers={c['num_decoder_layers']}, dim_feedforward="
                  f"{c['dim_feedforward']}, dropout=0.0, activation='relu', layer_norm_eps=1e-5, "
                  "batch_first=True, norm_first=False, bias=True); generator = "
                  f"nn.Linear({d}, {c['vocab_size']}).",
        "embedding": f"x = embedding.weight[ids] * sqrt({d}) (= float32 {f32(math.sqrt(d))!r}) "
                     "+ PE[0..len], for source and target alike (shared embedding, each "
                     "sequence's positions start at 0).",
        "positions": "fixed sinusoidal, not a tensor in the file: PE[p, 2i] = sin(p / "
                     f"10000^(2i/{d})), PE[p, 2i+1] = cos(p / 10000^(2i/{d})), computed in "
                     "float64 then cast to float32; max_position_embeddings "
                     f"{c['max_position_embeddings']}.",
        "encoder_layer": "post-norm: x = norm1(x + self_attn(x)); x = norm2(x + linear2(relu("
                         "linear1(x)))); after the last layer memory = "
                         "transformer.encoder.norm(x) (this is `encoder_hidden`).",
        "decoder_layer": "post-norm: y = norm1(y + self_attn(y, causal mask)); y = norm2(y + "
                         "multihead_attn(q=y, kv=memory)); y = norm3(y + linear2(relu("
                         "linear1(y)))); after the last layer y = transformer.decoder.norm(y); "
                         "logits = generator(y) (with bias).",
        "attention": f"nn.MultiheadAttention, {H} heads, head_dim {d // H}: in_proj_weight "
                     f"[{3 * d}, {d}] rows 0..{d} = Q, {d}..{2 * d} = K, {2 * d}..{3 * d} = V "
                     f"(in_proj_bias [{3 * d}] split the same way); q = x W_q^T + b_q etc.; "
                     f"scores = q.k / sqrt({d // H}); heads head-major within each of Q/K/V; "
                     "output = out_proj(concat heads) with bias. For multihead_attn (cross) Q "
                     "comes from the decoder stream and K/V from the memory.",
        "layer_norm": "nn.LayerNorm eps 1e-5 with weight and bias (norm1/norm2[/norm3] per "
                      "layer, encoder.norm, decoder.norm)",
        "masks": "decoder self-attention: nn.Transformer.generate_square_subsequent_mask (float "
                 "-inf above the diagonal), tgt_is_causal=True. Batched: sources right-padded "
                 "with pad id 0, src_key_padding_mask = memory_key_padding_mask = (pad "
                 "positions True). No target padding (all targets advance in lockstep).",
        "decoder_start": f"decoder start = bos = {c['bos_token_id']}, pad = {c['pad_token_id']}; "
                         f"id {c['eos_token_id']} is called eos but nothing stops on it; greedy "
                         "is my own loop with full recompute each step (no cache).",
        "tensor_names": names,
        "fast_path": "in eval/inference mode torch uses its fused encoder-layer fast path, "
                     "and with a src_key_padding_mask converts to nested tensors (padding rows "
                     "of the encoder output become encoder.norm(0) = encoder.norm.bias). Only "
                     "real rows are compared; see `fast_path_check`.",
    }


# ----------------------------------------------------------------------------- main

def search_seeds(name, spec, max_seed):
    sources, _, _ = make_inputs(spec)
    for seed in range(max_seed):
        model = build_model(name, spec, seed)
        res = evaluate(model, spec, sources)
        ok = acceptable(res, spec)
        bad = forbidden_ids(spec)
        print(f"{name} seed {seed:3d}: min_margin={['%.4g' % min(m) for m in res['margins']]} "
              f"batched_min={min(min(m) for m in res['batched']['margins']):.4g} "
              f"distinct={res['distinct']} tail={res['tail_distinct']} "
              f"src_diff={res['source_diff']} batched_equal={res['batched_equal']} "
              f"special={[sum(t in bad for t in g) for g in res['greedy']]} "
              f"{'OK' if ok else ''}", file=sys.stderr)
        if ok:
            print(f"{name}: first acceptable seed = {seed}")
            return seed
    print(f"{name}: no acceptable seed below {max_seed}")
    return None


def hf_config_dict(cfg, family):
    if family == "t5":
        keys = ["model_type", "vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers",
                "num_decoder_layers", "feed_forward_proj", "dense_act_fn", "is_gated_act",
                "relative_attention_num_buckets", "relative_attention_max_distance",
                "layer_norm_epsilon", "tie_word_embeddings", "decoder_start_token_id",
                "pad_token_id", "eos_token_id", "dropout_rate"]
        if hasattr(cfg, "scale_decoder_outputs"):  # transformers 5.x
            keys.append("scale_decoder_outputs")
    else:
        keys = ["model_type", "vocab_size", "d_model", "encoder_layers", "decoder_layers",
                "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
                "decoder_ffn_dim", "activation_function", "max_position_embeddings",
                "scale_embedding", "tie_word_embeddings", "pad_token_id", "bos_token_id",
                "eos_token_id", "decoder_start_token_id", "forced_bos_token_id",
                "forced_eos_token_id", "dropout"]
    return {k: getattr(cfg, k, None) for k in keys}


def write_fixture(name, spec, out_root, threads, tf5=False):
    seed, family = spec["seed"], spec["family"]
    out_dir = out_root / v5.variant(name, tf5)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    model = build_model(name, spec, seed)
    st_path = out_dir / "model.safetensors"
    if family == "transformer":
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(sd, str(st_path), metadata={"format": "pt"})
        (out_dir / "config.json").write_text(json.dumps(spec["config"], indent=2) + "\n")
        loaded = Seq2Seq(spec["config"])
        loaded.load_state_dict(safetensors.torch.load_file(str(st_path)), strict=True)
        loaded.eval()
        cfg_dict = dict(spec["config"])
    else:
        # Save the generation config HF derives from the model config (as a real checkpoint
        # has it, eos included); eos / forced tokens are disabled only at generate time.
        model.generation_config = GenerationConfig.from_model_config(model.config)
        if tf5:
            saved_by = v5.save(model, out_dir, native=False)  # no names changed
        else:
            model.save_pretrained(out_dir, safe_serialization=True)
        cls = type(model)
        loaded = cls.from_pretrained(out_dir, attn_implementation="eager",
                                     torch_dtype=torch.float32).eval()
        assert loaded.config._attn_implementation == "eager"
        loaded.generation_config.eos_token_id = None
        loaded.generation_config.forced_eos_token_id = None
        loaded.generation_config.forced_bos_token_id = None
        cfg_dict = hf_config_dict(loaded.config, family)
    # Everything below comes from what was written to disk, loaded the way a user would.
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    model = loaded
    c = spec["config"] if family == "transformer" else loaded.config.to_dict()

    with safe_open(str(st_path), framework="np") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        tensor_dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in tensor_names})
        st_meta = f.metadata()
        sd_np = {k: f.get_tensor(k) for k in tensor_names}
    if family == "bart":
        assert "final_logits_bias" in sd_np and np.abs(sd_np["final_logits_bias"]).min() > 0

    sources, targets, low = make_inputs(spec)
    res = evaluate(model, spec, sources)
    if not acceptable(res, spec):
        sys.exit(f"{name}: seed {seed} does not meet the criteria: "
                 f"min_margin={[min(m) for m in res['margins']]} distinct={res['distinct']} "
                 f"batched_equal={res['batched_equal']}; run with --search-seeds")
    assert all(res["batched_equal"]), "batched greedy != alone greedy"
    if family != "transformer":
        # HF generate (KV cache) == own full-recompute greedy loop.
        for i, ids in enumerate(sources):
            inp = torch.tensor([ids])
            nc, _ = torch_greedy(model, spec, inp, torch.ones_like(inp))
            assert nc[0] == res["greedy"][i], (nc, res["greedy"][i])

    # Encoder outputs and teacher-forced logits, each source alone (no padding).
    enc = [encoder_out(model, spec, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0]
           for s in sources]
    dec = [decoder_logits(model, spec, s, t) for s, t in zip(sources, targets)]

    # Padded batch: real rows vs alone.
    bin_, bmask = res["batched"]["input_ids"], res["batched"]["attention_mask"]
    benc = encoder_out(model, spec, bin_, bmask)
    enc_pad_diff = [float((benc[b, :len(s)] - enc[b]).abs().max()) for b, s in enumerate(sources)]
    step_diff = [float((res["batched"]["step_logits"][b] - res["step_logits"][b])
                             .abs().max()) for b in range(len(sources))]
    assert max(enc_pad_diff) < 1e-4 and max(step_diff) < 1e-4, (enc_pad_diff,
                                                                       step_diff)

    # Independent float64 numpy forward.
    sd64 = {k: v.astype(np.float64) for k, v in sd_np.items()}
    fwd = NUMPY_FORWARD[family]
    np_c = spec["config"] if family == "transformer" else c
    enc_d, dec_d = [], []
    greedy_d = []
    for i, (s, t) in enumerate(zip(sources, targets)):
        e64, l64 = fwd(sd64, np_c, s, t)
        enc_d.append(float(np.abs(e64 - enc[i].double().numpy()).max()))
        dec_d.append(float(np.abs(l64 - dec[i].double().numpy()).max()))
        # The whole greedy continuation teacher-forced: argmax must reproduce it.
        full = [np_c["decoder_start_token_id"]] + res["greedy"][i]
        _, lg = fwd(sd64, np_c, s, full)
        greedy_d.append(lg[:-1].argmax(-1).tolist() == res["greedy"][i])
        gl = np.abs(lg[:-1] - res["step_logits"][i].double().numpy()).max()
        greedy_d[-1] = (greedy_d[-1], float(gl))
    numpy_check = {
        "encoder_hidden_max_abs_diff": enc_d,
        "decoder_logits_max_abs_diff": dec_d,
        "greedy_argmax_reproduced": [g for g, _ in greedy_d],
        "greedy_step_logits_max_abs_diff": [x for _, x in greedy_d],
    }
    assert max(enc_d) < 1e-4 and max(dec_d) < 1e-4, numpy_check
    assert all(numpy_check["greedy_argmax_reproduced"]), numpy_check

    # Sensitivity: every tensor in the file changes the teacher-forced logits.
    gen = np.random.default_rng(seed)
    ref_logits = [fwd(sd64, np_c, s, t)[1] for s, t in zip(sources, targets)]
    sensitivity = {}
    for k in tensor_names:
        pert = dict(sd64)
        pert[k] = sd64[k] + PERTURB * gen.standard_normal(sd64[k].shape)
        sensitivity[k] = f32(max(np.abs(fwd(pert, np_c, s, t)[1] - r).max()
                                 for (s, t), r in zip(zip(sources, targets), ref_logits)))
    # A key-projection bias adds q.b_k to every score of a query row: softmax cancels it
    # exactly, so it cannot matter (BART's k_proj.bias; inside nn.MultiheadAttention's
    # in_proj_bias the K third is equally inert, but Q and V thirds matter).
    inert = sorted(k for k in tensor_names if k.endswith("k_proj.bias"))
    assert all(sensitivity[k] < 1e-9 for k in inert), {k: sensitivity[k] for k in inert}
    min_sens = min(v for k, v in sensitivity.items() if k not in inert)
    assert min_sens > 1e-4, sorted(sensitivity.items(), key=lambda t: t[1])[:5]

    extra = {}
    if family == "t5":
        rel = torch.arange(-RELATIVE_RANGE, RELATIVE_RANGE + 1)
        nb, md = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
        bi = T5Attention._relative_position_bucket(rel, True, nb, md).tolist()
        uni = T5Attention._relative_position_bucket(rel, False, nb, md).tolist()
        assert bi == [t5_bucket(r, True, nb, md) for r in rel.tolist()]
        assert uni == [t5_bucket(r, False, nb, md) for r in rel.tolist()]
        extra["relative_buckets"] = {
            "relative_position": "memory (key) position - query position",
            "relative_positions": rel.tolist(),
            "num_buckets": nb,
            "max_distance": md,
            "bidirectional": bi,
            "unidirectional": uni,
        }
        notes = t5_notes(c, tensor_names)
        tied, _ = t5_head(c, tensor_names)
        assert tied == spec.get("tied", spec["config"]["tie_word_embeddings"]), "the head is as the spec says"
    elif family == "bart":
        notes = bart_notes(c)
    else:
        notes = transformer_notes(spec["config"], tensor_names)
        # Fast path vs slow path, padded vs alone.
        fp = {}
        prev = torch.backends.mha.get_fastpath_enabled()
        try:
            torch.backends.mha.set_fastpath_enabled(False)
            slow_enc = [encoder_out(model, spec, torch.tensor([s]),
                                    torch.ones(1, len(s), dtype=torch.long))[0] for s in sources]
            slow_dec = [decoder_logits(model, spec, s, t) for s, t in zip(sources, targets)]
            slow_benc = encoder_out(model, spec, bin_, bmask)
            slow_new, _ = torch_greedy(model, spec, bin_, bmask)
        finally:
            torch.backends.mha.set_fastpath_enabled(prev)
        fp["fastpath_enabled_default"] = prev
        fp["alone_encoder_fast_vs_slow_max_abs_diff"] = max(
            float((a - b).abs().max()) for a, b in zip(enc, slow_enc))
        fp["alone_decoder_logits_fast_vs_slow_max_abs_diff"] = max(
            float((a - b).abs().max()) for a, b in zip(dec, slow_dec))
        fp["padded_vs_alone_encoder_real_rows_max_abs_diff_fast"] = max(enc_pad_diff)
        fp["padded_vs_alone_encoder_real_rows_max_abs_diff_slow"] = max(
            float((slow_benc[b, :len(s)] - enc[b]).abs().max()) for b, s in enumerate(sources))
        fp["padded_vs_alone_step_logits_max_abs_diff"] = max(step_diff)
        pad_rows = benc[1, len(sources[1]):]
        fp["padded_rows_of_encoder_output_fast"] = (
            "equal to encoder.norm.bias (nested-tensor path zero-fills them before the final "
            "norm)" if torch.allclose(pad_rows, model.transformer.encoder.norm.bias.expand_as(
                pad_rows)) else "not the norm bias (regular masked computation)")
        fp["batched_greedy_slow_path_equal"] = slow_new == res["batched"]["tokens"]
        assert fp["batched_greedy_slow_path_equal"]
        extra["fast_path_check"] = fp

    notes["sources_and_targets"] = (
        f"sources[i] = numpy.random.default_rng({SOURCE_SEED} + i).integers({low}, vocab_size, "
        f"size=len_i); decoder_inputs[i] = [decoder_start] + numpy.random.default_rng("
        f"{TARGET_SEED} + i).integers({low}, vocab_size, size=len_i - 1). Ids 0..{low - 1} "
        "(special ids) never occur in sources / decoder inputs.")
    notes["greedy"] = (
        f"greedy[i] = the {MAX_NEW_TOKENS} tokens generated after the decoder start token "
        "(start token NOT included), each source alone; step k's logits are those of decoder "
        "position k given [start] + greedy[i][:k]. Generated tokens never contain eos/pad "
        "(seed criterion).")

    if family == "transformer":
        generate_desc = ("own greedy loop (torch_greedy): seq = [[1]]; 20 times: logits = "
                         "model(src, seq, src_pad)[:, -1]; seq.append(argmax) -- full "
                         "recompute each step, no cache")
    else:
        kw = {k: v for k, v in generate_kwargs(spec).items()}
        generate_desc = ("model.generate(input_ids, attention_mask=attention_mask, "
                         "past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache()), "
                         + ", ".join(f"{k}={v!r}" for k, v in kw.items())
                         + "), with model.generation_config.eos_token_id / forced_eos_token_id"
                           " / forced_bos_token_id set to None; raw logits == processed "
                           "scores asserted (no logits processor active); KV-cached generate "
                           "== no-cache full-recompute greedy asserted")

    b = res["batched"]
    doc = {
        "generator": "scripts/reference/seq2seq.py",
        "name": name,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
        },
        "seed": seed,
        "init": "random (see init_weights/init_value): every tensor re-initialised from "
                "torch.Generator(seed) in sorted-name order; matrices N(0, 0.8/sqrt(fan_in)), "
                "norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1); T5: shared N(0,1), lm_head "
                "N(0, 1/sqrt(d_model)), relative_attention_bias N(0,1); BART: shared N(0,0.2), "
                "embed_positions N(0,0.5), final_logits_bias 0.3 N(0,1); transformer: "
                "embedding N(0,0.2), generator.weight N(0, 1/sqrt(d_model)); then the "
                "per-config `init_gains` multipliers (see init_value's docstring): ff = "
                "feed-forward matrices, cross / self = cross / self-attention value and "
                "output matrices, emb = shared embedding, final_norm = "
                "decoder.final_layer_norm.weight",
        "init_gains": spec.get("gains", {}),
        "torch_threads": threads,
        "model_class": type(model).__name__ if family != "transformer" else
        "Seq2Seq(torch.nn.Transformer)",
        "attn_implementation": "eager" if family != "transformer" else None,
        "dtype": "float32",
        "config": cfg_dict,
        "special_tokens": {
            "pad": spec["config"]["pad_token_id"],
            "eos": spec["config"]["eos_token_id"],
            "bos": spec["config"].get("bos_token_id"),
            "decoder_start": spec["config"]["decoder_start_token_id"],
        },
        "notes": notes,
        "files": {
            "model.safetensors": {
                "sha256": sha256(st_path),
                "metadata": st_meta,
                "dtypes": tensor_dtypes,
                "tensors": tensor_shapes,
            },
        },
        "sources": sources,
        "encoder_hidden": [f32_list(e.numpy()) for e in enc],
        "decoder_inputs": targets,
        "decoder_logits": [f32_list(l.numpy()) for l in dec],
        "max_new_tokens": MAX_NEW_TOKENS,
        "generate": generate_desc,
        "greedy": res["greedy"],
        "greedy_margins": [[f32(x) for x in m] for m in res["margins"]],
        "greedy_min_margin": [f32(min(m)) for m in res["margins"]],
        "greedy_distinct_tokens": res["distinct"],
        "batched_greedy": {
            "padding_side": "right",
            "pad_token_id": pad_id(spec),
            "input_ids": b["input_ids"].tolist(),
            "attention_mask": b["attention_mask"].tolist(),
            "tokens": b["tokens"],
            "equals_alone": res["batched_equal"],
            "margins": [[f32(x) for x in m] for m in b["margins"]],
            "min_margin": [f32(min(m)) for m in b["margins"]],
            "encoder_real_rows_max_abs_diff_vs_alone": enc_pad_diff,
            "step_logits_max_abs_diff_vs_alone": step_diff,
        },
        **extra,
        "numpy_float64_check": numpy_check,
        "sensitivity": {
            "what": f"max |delta logits| of the teacher-forced decoder_logits (both sources) "
                    f"when only that tensor gets + {PERTURB} * N(0,1) (numpy float64 forward)",
            "min_excluding_inert": min_sens,
            "inert": {k: ("k_proj bias: adds q.b_k to a whole score row, cancelled by "
                          "softmax (mathematically no effect)") for k in inert},
            "per_tensor": sensitivity,
        },
    }
    if tf5 and spec.get("v5_only"):
        doc.update({"saved_by": saved_by, "v4_fixture": None,
                    "v5_only": "no 4.57 variant: transformers 4.x cannot make this model"})
    elif tf5:
        doc.update(v5.record(model, out_dir, out_root / name, saved_by, doc,
                             equal=["sources", "decoder_inputs", "greedy", "batched_greedy.tokens"],
                             close=["encoder_hidden", "decoder_logits"]))
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    (out_dir / "reference.json").write_text(text + "\n", encoding="utf-8")

    print(f"== {name} (seed {seed})")
    print(f"  tensors ({len(tensor_names)}, {tensor_dtypes}):")
    for k in tensor_names:
        print(f"    {k} {tensor_shapes[k]}")
    for i, s in enumerate(sources):
        print(f"  source {i} ({len(s)} tok) target {len(targets[i])}: "
              f"min_margin={min(res['margins'][i]):.4g} distinct={res['distinct'][i]} "
              f"batched==alone={res['batched_equal'][i]} "
              f"batched_min_margin={min(b['margins'][i]):.4g} greedy={res['greedy'][i]}")
    print(f"  padded vs alone: encoder {enc_pad_diff}, step logits {step_diff}")
    print(f"  numpy check: {numpy_check}")
    print(f"  sensitivity min {min_sens:.3g} (" + min(
        (k for k in sensitivity if k not in inert), key=sensitivity.get) + f"); inert {inert}")
    if "fast_path_check" in extra:
        print(f"  fast path: {extra['fast_path_check']}")
    for fpath in sorted(out_dir.iterdir()):
        print(f"  {fpath.name}: {fpath.stat().st_size} bytes")
    total = sum(fpath.stat().st_size for fpath in out_dir.iterdir())
    print(f"  total: {total} bytes")
    assert total < 600_000, total


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

    # transformers 5.x changed T5's config (BART's names and numerics are 4.57's: no _v5).
    v5_only = [n for n, spec in CONFIGS.items() if spec.get("v5_only")]
    names = args.only or (["t5", "t5_tied", *v5_only] if args.transformers5
                          else [n for n in CONFIGS if n not in v5_only])
    if not args.transformers5 and set(names) & set(v5_only):
        sys.exit(f"{sorted(set(names) & set(v5_only))}: transformers 5.x only (--transformers5)")
    for name in names:
        if args.search_seeds:
            search_seeds(name, CONFIGS[name], args.search_seeds)
        else:
            write_fixture(name, CONFIGS[name], pathlib.Path(args.out), args.threads, args.transformers5)


if __name__ == "__main__":
    main()
