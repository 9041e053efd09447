#!/usr/bin/env python3
"""Write position-bias fixtures for single-stack families under tests/fixtures/bias/<name>/:
ALiBi and T5's relative buckets outside the presets that introduced them (BLOOM, T5's
encoder-decoder), each computed by Hugging Face's own model classes on the CPU.

Configs (random weights from a fixed seed, every tensor random so that it matters):
    t5_encoder      T5EncoderModel as is (its own relative bias, computed in layer 0 and shared):
                    gated-gelu, d_model 32, 4 heads of d_kv 12, d_ff 40, 2 layers, 8 buckets,
                    max_distance 20, vocab 96. Standard 2-D padding mask; nothing written by us.
    bert_alibi      BertModel (post-norm, gelu, token types) with MosaicBERT's bidirectional
                    ALiBi: score[h, p, j] += -slope_h * |j - p|, slopes from transformers' own
                    BLOOM `build_alibi_tensor`. BertModel has an absolute position table: it is
                    zeroed (an exact no-op) and left out of model.safetensors. The bias (plus
                    the padding mask, float32 min on padded keys) is given to every layer as a
                    [batch, heads, q, k] additive mask by a forward pre-hook (as in
                    windowed_minilm.py): only the mask is written here.
    llama_alibi     LlamaForCausalLM with ALiBi instead of rotary positions (MPT-like): the
                    rotary frequencies are zeroed (cos 1, sin 0: identity rotation; checked by
                    shifting position_ids) and causal mask + slope_h * (j - p) is given as a 4-D
                    additive attention_mask [batch, heads, q, k], which HF uses as given.
    llama_relative  The same LlamaForCausalLM with T5's unidirectional relative buckets: bias
                    table[bucket(j - p), h] with transformers' own
                    `T5Attention._relative_position_bucket(bidirectional=False)`, 8 buckets,
                    max_distance 20; the random [buckets, heads] table is stored in
                    model.safetensors as `model.layers.0.self_attn.relative_attention_bias.weight`.

Each reference.json holds the token ids of three sequences (lengths chosen past max_distance /
far apart so the bias varies), and per sequence the full output rows computed alone
(`hidden` [n, d_model] for encoders, `logits` [n, vocab] for decoders). The script asserts a
right-padded batch gives the same rows (within 1e-5) and records in `checks` how far outputs
move without the bias and under a wrong convention (one-sided ALiBi on the encoder, buckets
shifted by one direction...), so the Rust tests' 1e-4 pins the convention.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/position_bias_families.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import math
import pathlib
import shutil

import numpy as np
import safetensors.torch
import torch
import transformers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, T5Config, T5EncoderModel
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.t5.modeling_t5 import T5Attention

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "bias"
LENGTHS = [7, 33, 50]
SEED = 20251121
BUCKETS, MAX_DISTANCE = 8, 20
NEG = torch.finfo(torch.float32).min


def f32_rows(a):
    return [[float(np.float32(x)) for x in row] for row in np.asarray(a, dtype=np.float32)]


def draw_ids(vocab, low=3):
    return [np.random.default_rng(SEED + i).integers(low, vocab, n).tolist() for i, n in enumerate(LENGTHS)]


def randomise(model, seed, skip=()):
    """Every parameter random (sorted-name order, one generator): norms 1 + N(0, 0.1), biases
    N(0, 0.1), matrices N(0, 0.8 / sqrt(fan_in)), embeddings N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    for name, p in sorted(model.named_parameters(remove_duplicate=False), key=lambda t: t[0]):
        if id(p) in seen or name in skip:
            continue
        seen.add(id(p))
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name.lower():
            p.copy_(1.0 + 0.1 * noise if leaf == "weight" else 0.1 * noise)
        elif leaf == "bias":
            p.copy_(0.1 * noise)
        elif "embed" in name or "shared" in name or "relative_attention_bias" in name:
            p.copy_(noise)
        else:
            p.copy_(noise * (0.8 / math.sqrt(p.shape[1])))


def slopes(heads):
    """Per-head ALiBi slopes from transformers' BLOOM code: alibi[h, 0, 1] = slope_h * 1."""
    alibi = build_alibi_tensor(torch.ones(1, 2, dtype=torch.long), heads, torch.float32)
    return alibi[:, 0, 1]


def alibi_bias(heads, n, kind):
    p = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    s = slopes(heads)[:, None, None]
    if kind == "symmetric":
        return -s * (j - p).abs().float()
    return s * (j - p).float()  # one-sided (BLOOM / causal)


def relative_bias(table, n, bidirectional):
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]  # key - query
    buckets = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional,
                                                    num_buckets=BUCKETS, max_distance=MAX_DISTANCE)
    return table[buckets].permute(2, 0, 1)  # [heads, q, k]


def additive(bias_of, lengths, causal):
    """[batch, heads, w, w]: the bias of each sequence's own positions, float32 min on padded
    keys (and later keys when causal)."""
    w = max(lengths)
    out = []
    for n in lengths:
        m = bias_of(w).clone()
        keep = torch.zeros(w, w, dtype=torch.bool)
        keep[:, :n] = True
        if causal:
            keep &= torch.tril(torch.ones(w, w, dtype=torch.bool))
        out.append(m.masked_fill(~keep, NEG))
    return torch.stack(out)


def right_pad(seqs, pad=0):
    w = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (w - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (w - len(s)) for s in seqs])
    return ids, mask


def layer_hooks(layers, mask):
    """Every layer gets `mask` as its attention_mask (positional argument 1 or keyword)."""
    def swap(module, args, kwargs):
        if len(args) > 1:
            args = (args[0], mask) + tuple(args[2:])
        else:
            kwargs["attention_mask"] = mask
        return args, kwargs
    return [layer.register_forward_pre_hook(swap, with_kwargs=True) for layer in layers]


# ------------------------------------------------------------------------------------------------


def t5_encoder():
    cfg = T5Config(vocab_size=96, d_model=32, d_kv=12, d_ff=40, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=BUCKETS, relative_attention_max_distance=MAX_DISTANCE,
                   feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                   tie_word_embeddings=False)
    torch.manual_seed(SEED)
    model = T5EncoderModel(cfg).eval()
    randomise(model, SEED)
    seqs = draw_ids(96)

    def run(batch):
        ids, mask = right_pad(batch)
        return model(input_ids=ids, attention_mask=mask).last_hidden_state

    rows = [run([s])[0] for s in seqs]
    checks = {}
    table = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    saved = table.clone()
    table.zero_()
    checks["max_abs_diff_no_bias"] = max(float((run([s])[0] - r).abs().max()) for s, r in zip(seqs, rows))
    table.copy_(saved)
    # Wrong convention: unidirectional (decoder) buckets in the encoder.
    attn = model.encoder.block[0].layer[0].SelfAttention
    attn.is_decoder = True
    try:
        # T5Attention picks bidirectional = not is_decoder when it computes the bias.
        checks["max_abs_diff_decoder_buckets"] = max(
            float((run([s])[0] - r).abs().max()) for s, r in zip(seqs, rows))
    finally:
        attn.is_decoder = False
    # `encoder.embed_tokens` is `shared` (tied); save_pretrained keeps only `shared.weight` too.
    return model, seqs, rows, run, checks, "hidden", {"omit": ["encoder.embed_tokens.weight"]}


def bert_alibi():
    cfg = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, hidden_act="gelu", max_position_embeddings=64,
                     type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(SEED)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    model.set_attn_implementation("eager")
    randomise(model, SEED)
    model.embeddings.position_embeddings.weight.zero_()
    heads = cfg.num_attention_heads
    seqs = draw_ids(96)

    def run(batch, kind="symmetric"):
        ids, mask = right_pad(batch)
        types = torch.zeros_like(ids)
        hooks = []
        if kind is not None:
            full = additive(lambda w: alibi_bias(heads, w, kind), [len(s) for s in batch], causal=False)
            hooks = layer_hooks(model.encoder.layer, full)
        try:
            return model(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        finally:
            for h in hooks:
                h.remove()

    rows = [run([s])[0] for s in seqs]
    checks = {
        "max_abs_diff_no_bias": max(float((run([s], None)[0] - r).abs().max()) for s, r in zip(seqs, rows)),
        "max_abs_diff_one_sided_alibi": max(
            float((run([s], "one_sided")[0] - r).abs().max()) for s, r in zip(seqs, rows)),
    }
    return model, seqs, rows, run, checks, "hidden", {"omit": ["embeddings.position_embeddings.weight"]}


def llama_with(bias_of_width, extra=None):
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, intermediate_size=128,
                      max_position_embeddings=64, rms_norm_eps=1e-6, hidden_act="silu",
                      attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                      rope_theta=10000.0)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32).eval()
    randomise(model, SEED)
    # No rotary positions: zero frequencies rotate by 0 (cos 1, sin 0).
    model.model.rotary_emb.inv_freq.zero_()
    seqs = draw_ids(96)

    def run(batch, bias=True, shift=0):
        ids, _ = right_pad(batch)
        lengths = [len(s) for s in batch]
        of = bias_of_width if bias else (lambda w: torch.zeros(cfg.num_attention_heads, w, w))
        mask = additive(of, lengths, causal=True)
        positions = torch.arange(ids.shape[1])[None].expand_as(ids) + shift
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits

    rows = [run([s])[0] for s in seqs]
    shifted = max(float((run([s], shift=7)[0] - r).abs().max()) for s, r in zip(seqs, rows))
    assert shifted == 0.0, f"rotary positions are not off: shifting positions moves logits by {shifted}"
    checks = {
        "max_abs_diff_positions_shifted_by_7": shifted,
        "max_abs_diff_no_bias": max(float((run([s], bias=False)[0] - r).abs().max())
                                    for s, r in zip(seqs, rows)),
    }
    return model, seqs, rows, run, checks, "logits", extra or {}


def llama_alibi():
    return llama_with(lambda w: alibi_bias(4, w, "one_sided"))


def llama_relative():
    gen = torch.Generator().manual_seed(SEED + 1)
    table = torch.randn(BUCKETS, 4, generator=gen)
    out = llama_with(lambda w: relative_bias(table, w, bidirectional=False),
                     {"add": {"model.layers.0.self_attn.relative_attention_bias.weight": table}})
    model, seqs, rows, run, checks, kind, extra = out
    # Wrong convention: bidirectional buckets (keys behind the query land in other buckets).
    wrong = llama_with(lambda w: relative_bias(table, w, bidirectional=True))[3]
    checks["max_abs_diff_bidirectional_buckets"] = max(
        float((wrong([s])[0] - r).abs().max()) for s, r in zip(seqs, rows))
    return out


CONFIGS = {
    "t5_encoder": t5_encoder,
    "bert_alibi": bert_alibi,
    "llama_alibi": llama_alibi,
    "llama_relative": llama_relative,
}


def write(name, build):
    model, seqs, rows, run, checks, kind, extra = build()
    batched = run(seqs)
    batch_diff = max(float((batched[b, :len(s)] - r).abs().max()) for b, (s, r) in enumerate(zip(seqs, rows)))
    assert batch_diff < 1e-5, (name, batch_diff)
    assert checks["max_abs_diff_no_bias"] > 0.1, (name, checks)
    for key, value in checks.items():
        if key.startswith("max_abs_diff") and "shifted" not in key:
            assert value > 0.01, (name, key, value)
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in extra.get("omit", [])}
    state.update(extra.get("add", {}))
    safetensors.torch.save_file(state, out / "model.safetensors")
    doc = {
        "generator": "scripts/reference/position_bias_families.py",
        "model": type(model).__name__ + ", eager attention, float32, CPU",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "checks": {**checks, "max_abs_diff_right_padded_batch": batch_diff},
        "sequences": [{"input_ids": s, kind: f32_rows(r.numpy())} for s, r in zip(seqs, rows)],
    }
    (out / "reference.json").write_text(json.dumps(doc) + "\n")
    print(name, json.dumps(doc["checks"]))


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    # Models are built, randomised and run in one inference scope (no autograd anywhere).
    with torch.inference_mode():
        for name, build in CONFIGS.items():
            write(name, build)


if __name__ == "__main__":
    main()
