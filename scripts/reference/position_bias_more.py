#!/usr/bin/env python3
"""Write position-bias fixtures for the GPT-2, GPT-NeoX and BERT presets under
tests/fixtures/bias/<name>/: ALiBi and T5's relative buckets on families whose checkpoints have
absolute or rotary positions, each computed by Hugging Face's own model classes on the CPU with
the positions neutralised and the bias given as a 4-D additive mask. Helpers (random weights,
slopes, buckets, masks, the fixture writer) come from position_bias_families.py, whose fixtures
this script leaves alone.

Configs (random weights from a fixed seed):
    gpt2_alibi      GPT2LMHeadModel (pre-norm, gelu_new, tied head), n_embd 32, 4 heads, 2 layers,
                    n_inner 64, vocab 96. Its position table `wpe` is zeroed (an exact no-op,
                    checked: shifting position_ids by 7 leaves the logits bit-identical) and left
                    out of model.safetensors; causal mask + slope_h * (j - p) is given as the 4-D
                    attention_mask [batch, heads, q, k], which transformers uses as given.
    gpt2_relative   The same with T5's unidirectional buckets (8, max_distance 20); the random
                    [buckets, heads] table is stored as `transformer.h.0.attn.relative_attention_bias.weight`.
    neox_alibi      GPTNeoXForCausalLM (parallel residual, rotary_pct 0.25, untied embed_out),
                    hidden 64, 4 heads, 2 layers, intermediate 128, vocab 96; rotary frequencies
                    zeroed (identity rotation, checked by shifting position_ids), ALiBi as above.
    neox_relative   The same with unidirectional buckets, table stored as
                    `gpt_neox.layers.0.attention.relative_attention_bias.weight`.
    bert_relative   BertModel (post-norm, gelu, token types) with T5's bidirectional buckets:
                    position table zeroed and omitted, the bias plus padding given to every layer
                    by a forward pre-hook; table stored as `embeddings.relative_attention_bias.weight`.

Each reference.json is written as position_bias_families.py writes its own (three sequences, rows
alone; a right-padded batch asserted equal within 1e-5; `checks` records how far the outputs move
without the bias and under the other bucket direction / one-sided ALiBi). Decoders also get
`greedy`: 12 tokens after the first 5 of sequence 0, each the argmax of a full recompute
(`checks.greedy_min_margin`: the smallest top-1 minus top-2 logit among them, asserted > 1e-3).

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/position_bias_more.py
"""
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import position_bias_families as fam  # noqa: E402  (sets the offline environment first)
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

HEADS = 4
PROMPT, NEW = 5, 12


def table(seed_offset):
    gen = torch.Generator().manual_seed(fam.SEED + seed_offset)
    return torch.randn(fam.BUCKETS, HEADS, generator=gen)


def gpt2():
    cfg = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=HEADS, n_inner=64,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    torch.manual_seed(fam.SEED)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32).eval()
    # GPT-2's norms are `ln_*` (not named "norm"): drawn here; the rest as every fixture draws.
    norms = [n for n, _ in model.named_parameters() if ".ln_" in n or n.startswith("transformer.ln_")]
    fam.randomise(model, fam.SEED, skip=set(norms))
    gen = torch.Generator().manual_seed(fam.SEED + 9)
    params = dict(model.named_parameters())
    for n in sorted(norms):
        noise = torch.randn(params[n].shape, generator=gen)
        params[n].copy_(1.0 + 0.1 * noise if n.endswith("weight") else 0.1 * noise)
    model.transformer.wpe.weight.zero_()
    # Tied: `lm_head.weight` is `transformer.wte.weight`; the position table is not loaded.
    return model, {"omit": ["lm_head.weight", "transformer.wpe.weight"]}


def neox():
    cfg = GPTNeoXConfig(vocab_size=96, max_position_embeddings=64, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=HEADS, intermediate_size=128, hidden_act="gelu",
                        rotary_pct=0.25, rotary_emb_base=10000, layer_norm_eps=1e-5,
                        use_parallel_residual=True, tie_word_embeddings=False, attention_dropout=0.0,
                        hidden_dropout=0.0)
    torch.manual_seed(fam.SEED)
    model = GPTNeoXForCausalLM._from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32).eval()
    fam.randomise(model, fam.SEED)
    # No rotary positions: zero frequencies rotate by 0 (cos 1, sin 0).
    model.gpt_neox.rotary_emb.inv_freq.zero_()
    return model, {}


def causal_lm(build, bias_of_width, extra=None):
    model, base_extra = build()
    base_extra = {**base_extra, **(extra or {})}
    seqs = fam.draw_ids(96)

    def run(batch, bias=True, shift=0):
        ids, _ = fam.right_pad(batch)
        lengths = [len(s) for s in batch]
        of = bias_of_width if bias else (lambda w: torch.zeros(HEADS, w, w))
        mask = fam.additive(of, lengths, causal=True)
        positions = torch.arange(ids.shape[1])[None].expand_as(ids) + shift
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits

    rows = [run([s])[0] for s in seqs]
    shifted = max(float((run([s], shift=7)[0] - r).abs().max()) for s, r in zip(seqs, rows))
    assert shifted == 0.0, f"positions are not off: shifting positions moves logits by {shifted}"
    checks = {
        "max_abs_diff_positions_shifted_by_7": shifted,
        "max_abs_diff_no_bias": max(float((run([s], bias=False)[0] - r).abs().max())
                                    for s, r in zip(seqs, rows)),
    }
    # Greedy by full recompute: the argmax of the last row, appended, 12 times.
    tokens, margin = list(seqs[0][:PROMPT]), float("inf")
    for _ in range(NEW):
        row = run([tokens])[0, -1]
        top = torch.topk(row, 2).values
        margin = min(margin, float(top[0] - top[1]))
        tokens.append(int(row.argmax()))
    # Ties closer than the 1e-4 tolerance would make the greedy test depend on rounding.
    assert margin > 1e-3, margin
    checks["greedy_min_margin"] = margin
    base_extra["greedy"] = {"prompt": tokens[:PROMPT], "tokens": tokens[PROMPT:]}
    return model, seqs, rows, run, checks, "logits", base_extra


def with_alibi(build):
    def config():
        return causal_lm(build, lambda w: fam.alibi_bias(HEADS, w, "one_sided"))
    return config


def with_relative(build, name, seed_offset):
    def config():
        t = table(seed_offset)
        out = causal_lm(build, lambda w: fam.relative_bias(t, w, bidirectional=False), {"add": {name: t}})
        model, seqs, rows, run, checks, kind, extra = out
        wrong = causal_lm(build, lambda w: fam.relative_bias(t, w, bidirectional=True))[3]
        checks["max_abs_diff_bidirectional_buckets"] = max(
            float((wrong([s])[0] - r).abs().max()) for s, r in zip(seqs, rows))
        return out
    return config


def bert_relative():
    cfg = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=HEADS,
                     intermediate_size=48, hidden_act="gelu", max_position_embeddings=64,
                     type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, attn_implementation="eager")
    torch.manual_seed(fam.SEED)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    model.set_attn_implementation("eager")
    fam.randomise(model, fam.SEED)
    model.embeddings.position_embeddings.weight.zero_()
    t = table(3)
    seqs = fam.draw_ids(96)

    def run(batch, bidirectional=True):
        ids, mask = fam.right_pad(batch)
        types = torch.zeros_like(ids)
        hooks = []
        if bidirectional is not None:
            full = fam.additive(lambda w: fam.relative_bias(t, w, bidirectional), [len(s) for s in batch],
                                causal=False)
            hooks = fam.layer_hooks(model.encoder.layer, full)
        try:
            return model(input_ids=ids, token_type_ids=types, attention_mask=mask).last_hidden_state
        finally:
            for h in hooks:
                h.remove()

    rows = [run([s])[0] for s in seqs]
    checks = {
        "max_abs_diff_no_bias": max(float((run([s], None)[0] - r).abs().max()) for s, r in zip(seqs, rows)),
        "max_abs_diff_unidirectional_buckets": max(
            float((run([s], False)[0] - r).abs().max()) for s, r in zip(seqs, rows)),
    }
    extra = {"omit": ["embeddings.position_embeddings.weight"],
             "add": {"embeddings.relative_attention_bias.weight": t}}
    return model, seqs, rows, run, checks, "hidden", extra


CONFIGS = {
    "gpt2_alibi": with_alibi(gpt2),
    "gpt2_relative": with_relative(gpt2, "transformer.h.0.attn.relative_attention_bias.weight", 1),
    "neox_alibi": with_alibi(neox),
    "neox_relative": with_relative(neox, "gpt_neox.layers.0.attention.relative_attention_bias.weight", 2),
    "bert_relative": bert_relative,
}


def write(name, build):
    """position_bias_families.write, plus the greedy continuation for decoders."""
    greedy = {}

    def wrapped():
        out = build()
        greedy.update(out[6].pop("greedy", {}))
        return out

    fam.write(name, wrapped)
    path = fam.OUT / name / "reference.json"
    doc = json.loads(path.read_text())
    doc["generator"] = "scripts/reference/position_bias_more.py"
    if greedy:
        doc["greedy"] = greedy
    path.write_text(json.dumps(doc) + "\n")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    with torch.inference_mode():
        for name, build in CONFIGS.items():
            write(name, build)


if __name__ == "__main__":
    main()
