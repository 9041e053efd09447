#!/usr/bin/env python3
"""Write position-bias fixtures for the BART and `torch.nn.Transformer` encoder-decoder presets
under tests/fixtures/bias/<name>/: ALiBi and T5's relative buckets in place of their learned /
sinusoidal positions, per stack (encoder bidirectional, decoder causal; cross-attention unbiased,
as in T5).

The models are seq2seq.py's `bart` and `transformer` fixtures' configs, built and initialised by
its own `build_model` (same seeds and gains), with positions neutralised:
    BART       `embed_positions` of both stacks zeroed (left out of model.safetensors; checked:
               the position module then returns exact zeros for every position used);
    torch      the sinusoidal table `pe` (a buffer) zeroed (checked the same way).
The bias reaches every self-attention as a 4-D additive mask: for BART by a forward pre-hook on
each encoder / decoder layer replacing its `attention_mask` [batch, heads, q, k] (helpers from
position_bias_families.py); for nn.Transformer as the layers' float `mask` / `tgt_mask` of shape
[batch * heads, q, k], which nn.MultiheadAttention adds to the scores. Padded source keys get
float32 min (and the cross-attention its usual key padding mask).

Configs: bart_relative, bart_alibi, torch_relative, torch_alibi, and t5_alibi: seq2seq.py's `t5`
(v1.1, 2 + 3 layers) with both stacks' relative tables zeroed (then layer 0's position bias is
exactly the mask it is given, which the hooks replace by ALiBi; tables left out of the file). Relative: 8 buckets,
max_distance 20, one random [buckets, heads] table per stack, stored as
`[model.]{encoder,decoder}.layers.0.self_attn.relative_attention_bias.weight` (BART: `model.`;
torch: `transformer.`). ALiBi: slopes from transformers' BLOOM code, encoder
`-slope * |j - p|`, decoder `slope * (j - p)`.

reference.json: two sources (30 and 11 tokens), per source the encoder's rows alone
(`encoder_hidden`), a teacher-forced decoder input (decoder start + 23 / 8 tokens) and its logits
alone (`decoder_logits`), and `greedy`: 12 tokens per source, each the argmax of a full
recompute (`greedy_min_margin`: the smallest top-1 minus top-2 logit among them). The script
asserts the right-padded batch of both sources gives the same encoder rows and logits (1e-5) and
records in `checks` how far the logits move without the bias and with the bucket directions /
ALiBi forms swapped between the stacks.

    .cache/venv/bin/python scripts/reference/position_bias_seq2seq.py
"""
import json
import pathlib
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import position_bias_families as fam  # noqa: E402  (sets the offline environment first)
import seq2seq  # noqa: E402
import numpy as np  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

HEADS = 4
SOURCE_LENGTHS, TARGET_LENGTHS = [30, 11], [24, 9]
NEW = 12


def build(family):
    name = {"bart": "bart", "t5": "t5"}.get(family, "transformer")
    spec = seq2seq.CONFIGS[name]
    model = seq2seq.build_model(name, spec, spec["seed"])
    if family == "t5":
        # T5's own bias table, zeroed, adds exact zeros: layer 0's position_bias is then the mask
        # it is given, which carries ALiBi (`checks` shows leaving it out moves the logits).
        for stack in (model.encoder, model.decoder):
            stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight.zero_()
        omit = ["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"]
        root = ""
    elif family == "bart":
        for stack in (model.model.encoder, model.model.decoder):
            stack.embed_positions.weight.zero_()
            probe = stack.embed_positions(torch.zeros(1, 64, dtype=torch.long))
            assert probe.abs().max() == 0, "BART positions are not off"
        omit = ["model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight",
                "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"]
        root = "model."
    else:
        model.pe.zero_()
        assert model.pe.abs().max() == 0
        omit = []
        root = "transformer."
    return spec, model, omit, root


def masks(bias_of, lengths, causal, width=None):
    """[batch, heads, w, w] as position_bias_families.additive builds it."""
    return fam.additive(bias_of, lengths, causal)


def runner(family, spec, model, enc_bias, dec_bias):
    """Encoder rows and decoder logits of right-padded sources / targets with the biases."""
    pad = spec["config"]["pad_token_id"]

    def run(sources, targets):
        src, src_mask = fam.right_pad(sources, pad)
        tgt, _ = fam.right_pad(targets, pad)
        enc = masks(enc_bias, [len(s) for s in sources], causal=False)
        dec = masks(dec_bias, [len(t) for t in targets], causal=True)
        if family in ("bart", "t5"):
            stacks = (model.model.encoder.layers, model.model.decoder.layers) if family == "bart" else (
                model.encoder.block, model.decoder.block)
            hooks = fam.layer_hooks(stacks[0], enc)
            hooks += fam.layer_hooks(stacks[1], dec)
            try:
                out = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, use_cache=False,
                            output_hidden_states=False)
                hidden = model.get_encoder()(input_ids=src, attention_mask=src_mask).last_hidden_state
            finally:
                for h in hooks:
                    h.remove()
            return hidden, out.logits
        b = src.shape[0]
        pad_keys = src_mask == 0
        enc3 = enc.reshape(b * HEADS, *enc.shape[2:])
        dec3 = dec.reshape(b * HEADS, *dec.shape[2:])
        memory = model.transformer.encoder(model.embed(src), mask=enc3)
        y = model.transformer.decoder(model.embed(tgt), memory, tgt_mask=dec3,
                                      memory_key_padding_mask=pad_keys)
        return memory, model.generator(y)

    return run


def draw(seed, n, low, high):
    return np.random.default_rng(seed).integers(low, high, n).tolist()


def config(family, kind):
    spec, model, omit, root = build(family)
    vocab = spec["config"]["vocab_size"]
    start = spec["config"]["decoder_start_token_id"]
    low = max(spec["special_ids"]) + 1
    sources = [draw(fam.SEED + 10 + i, n, low, vocab) for i, n in enumerate(SOURCE_LENGTHS)]
    targets = [[start] + draw(fam.SEED + 20 + i, n - 1, low, vocab) for i, n in enumerate(TARGET_LENGTHS)]
    add = {}
    if kind == "relative":
        gen = torch.Generator().manual_seed(fam.SEED + 30)
        enc_table, dec_table = torch.randn(fam.BUCKETS, HEADS, generator=gen), torch.randn(fam.BUCKETS, HEADS, generator=gen)
        biases = lambda enc_dir, dec_dir: (  # noqa: E731
            lambda w: fam.relative_bias(enc_table, w, enc_dir), lambda w: fam.relative_bias(dec_table, w, dec_dir))
        right, wrong = biases(True, False), biases(False, True)
        add = {f"{root}encoder.layers.0.self_attn.relative_attention_bias.weight": enc_table,
               f"{root}decoder.layers.0.self_attn.relative_attention_bias.weight": dec_table}
    else:
        alibi = lambda form: (lambda w: fam.alibi_bias(HEADS, w, form))  # noqa: E731
        right, wrong = (alibi("symmetric"), alibi("one_sided")), (alibi("one_sided"), alibi("symmetric"))
    zero = lambda w: torch.zeros(HEADS, w, w)  # noqa: E731
    run = runner(family, spec, model, *right)
    alone = [run([s], [t]) for s, t in zip(sources, targets)]
    hidden = [h[0] for h, _ in alone]
    logits = [lg[0] for _, lg in alone]
    bh, blg = run(sources, targets)
    batch_diff = max(max(float((bh[b, :len(s)] - hidden[b]).abs().max()),
                         float((blg[b, :len(t)] - logits[b]).abs().max()))
                     for b, (s, t) in enumerate(zip(sources, targets)))
    assert batch_diff < 1e-5, batch_diff

    def moved(biases):
        other = runner(family, spec, model, *biases)
        return max(float((other([s], [t])[1][0] - lg).abs().max()) for s, t, lg in zip(sources, targets, logits))

    checks = {"max_abs_diff_no_bias": moved((zero, zero)),
              "max_abs_diff_no_encoder_bias": moved((zero, right[1])),
              "max_abs_diff_no_decoder_bias": moved((right[0], zero)),
              "max_abs_diff_stack_conventions_swapped": moved(wrong),
              "max_abs_diff_right_padded_batch": batch_diff}
    for key, value in checks.items():
        if key != "max_abs_diff_right_padded_batch":
            assert value > 0.01, (family, kind, key, value)
    greedy, margin = [], float("inf")
    for s in sources:
        seq = [start]
        for _ in range(NEW):
            row = run([s], [seq])[1][0, -1]
            top = torch.topk(row, 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq.append(int(row.argmax()))
        greedy.append(seq[1:])
    assert margin > 1e-3, margin
    checks["greedy_min_margin"] = margin
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in omit}
    state.update(add)
    doc = {
        "generator": "scripts/reference/position_bias_seq2seq.py",
        "model": type(model).__name__ + ", eager attention, float32, CPU",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "checks": checks,
        "sources": sources,
        "encoder_hidden": [fam.f32_rows(h.numpy()) for h in hidden],
        "decoder_inputs": targets,
        "decoder_logits": [fam.f32_rows(lg.numpy()) for lg in logits],
        "greedy": greedy,
    }
    return state, doc


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    # nn.TransformerEncoderLayer's inference fast path returns NaN for every row given a 3-D float
    # mask holding float32 min (torch 2.9.1); the regular path is the documented math.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.inference_mode():
        for family, kind in (("bart", "relative"), ("bart", "alibi"), ("torch", "relative"), ("torch", "alibi"),
                             ("t5", "alibi")):
            state, doc = config(family, kind)
            out = fam.OUT / f"{family}_{kind}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            safetensors.torch.save_file(state, out / "model.safetensors")
            (out / "reference.json").write_text(json.dumps(doc) + "\n")
            print(out.name, json.dumps(doc["checks"]))


if __name__ == "__main__":
    main()
