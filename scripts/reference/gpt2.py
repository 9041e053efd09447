#!/usr/bin/env python3
"""Write decoder-only (GPT-2 family) reference fixtures under tests/fixtures/gpt2/<name>/,
computed with Hugging Face transformers on the CPU.

Each directory looks like a user's Hugging Face checkpoint directory plus a reference file:
    config.json, generation_config.json, model.safetensors
                     GPT2LMHeadModel.save_pretrained(dir, safe_serialization=True),
                     random weights from a fixed seed (see init_weights)
    tokenizer.json   a small byte-level BPE tokenizer (GPT-2 style: ByteLevel
                     pre-tokenizer, decoder and post-processor) trained with the
                     `tokenizers` library on CORPUS below; vocab size == config.vocab_size,
                     "<|endoftext|>" is the last id (== bos_token_id == eos_token_id)
    reference.json   prompts + ids, logits of a forward pass, greedy continuations
                     (alone and as a left-padded batch), greedy top1-top2 margins

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/gpt2.py            # all configs
    .cache/venv/bin/python scripts/reference/gpt2.py --only odd
Seeds are fixed in CONFIGS; --search-seeds re-runs the seed search (prints the first
seed that satisfies the margin / diversity criteria) instead of writing fixtures.
"""
import os

# Never touch a model hub: everything is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import math
import pathlib
import shutil
import sys

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors import safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "gpt2"

EOT = "<|endoftext|>"
MAX_NEW_TOKENS = 40
# Acceptance criteria for a seed (checked for every prompt, alone and batched). The parity
# tests need margins >= 1e-3; 5e-3 leaves room for float32 accumulation differences over
# 40 KV-cached steps. Random GPT-2s often fall into short loops ("dog dog dog ..."), so
# each 40-token continuation must also contain at least MIN_DISTINCT different tokens.
MIN_MARGIN = 5e-3          # min over steps of (top1 logit - top2 logit)
MIN_DISTINCT = 20          # distinct tokens among the 40 generated ones

# name -> (GPT2Config kwargs, seed). vocab_size is also the tokenizer's vocab size;
# bos/eos ids are filled in as vocab_size - 1 (the "<|endoftext|>" token).
CONFIGS = {
    "tiny": (
        dict(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=512,
             initializer_range=0.2),
        14,  # chosen by --search-seeds 40 (first seed meeting the criteria)
    ),
    "odd": (
        dict(n_layer=3, n_embd=48, n_head=3, n_inner=136, n_positions=96, vocab_size=517,
             tie_word_embeddings=False, layer_norm_epsilon=1e-5,
             activation_function="gelu_new", initializer_range=0.2),
        33,  # chosen by --search-seeds 40 (first seed meeting the criteria)
    ),
}

# Training text for the BPE tokenizer (fixed; changing it changes every fixture).
CORPUS = [
    "Once upon a time, in a small village at the edge of a great forest, there lived an old "
    "baker and her grandson. Every morning, long before the sun came up, they lit the oven, "
    "mixed the flour with water and salt, and shaped the dough into round loaves.",
    "The quick brown fox jumps over the lazy dog. The lazy dog does not seem to mind; it "
    "simply rolls over and goes back to sleep in the warm afternoon light.",
    "It was a bright cold day in April, and the clocks were striking thirteen. The streets "
    "were empty, the windows were dark, and the wind carried dust and paper along the road.",
    "A transformer model reads a sequence of tokens and predicts the next one. Each layer "
    "mixes information between positions with attention and then applies a small feed-forward "
    "network to every position on its own. Stacking many such layers gives the model the power "
    "to learn grammar, facts, and even a little reasoning from nothing but raw text.",
    "The river ran quickly through the valley, past the mill and the old stone bridge, until "
    "it reached the sea. Fishermen waited on the shore with their nets, talking about the "
    "weather, the price of fish, and the stories their fathers had told them.",
    "She opened the letter slowly. Inside there was a single page, written in a careful hand: "
    "meet me at the station at seven o'clock, and bring the map. Nothing else. No name, no "
    "address, only those few words and a small drawing of a bird.",
    "Numbers are words too: one, two, three, four, five, six, seven, eight, nine, ten. In the "
    "year 1999 the train left at 8:15 and arrived at 10:40, two hours and twenty-five minutes later.",
    "Computers store text as bytes. A byte-level tokenizer starts from the 256 possible bytes "
    "and learns to merge frequent pairs into longer pieces, so that common words become single "
    "tokens while rare words are split into several smaller parts.",
    "In the garden there were roses and tulips, apple trees and a pear tree, and a small pond "
    "where frogs sang every evening. The children played there all summer, building boats out "
    "of paper and sending them across the water.",
    "What do you want to do today? We could walk to the market, buy some bread and cheese, and "
    "have lunch by the river. Or we could stay at home, read a good book, and listen to the rain.",
    "The scientist looked at the results again. The numbers did not make sense: the signal was "
    "stronger at night than during the day, and it seemed to come from the north, where there "
    "was nothing but ice and snow for a thousand miles.",
    "Good morning! How are you? I am fine, thank you. The weather is nice and the birds are "
    "singing. Let us go outside and enjoy the sunshine while it lasts.",
]

# Prompt candidates per target token count; the first word-prefix of a candidate whose
# tokenisation has exactly the target length is used (see pick_prompts). The first two
# prompts also get full [len, vocab] logits in reference.json.
PROMPT_TARGETS = [
    (3, ["Hello world", "Once upon a time", "The cat sat", "Good morning"]),
    (7, ["The quick brown fox jumps over the lazy dog.",
         "She opened the letter and read it twice.",
         "It was a bright cold day in April."]),
    (12, ["Café au lait? The little baker smiled and handed me a warm loaf of bread.",
          "In the morning, the baker opened her shop and sold fresh bread to the village.",
          "The river ran past the mill, under the bridge, and down to the sea."]),
    (20, ["It was a bright cold day in April, and the old man walked slowly home along the "
          "river, thinking about the strange letter he had found under his door that morning.",
          "Computers store text as bytes, and a tokenizer learns to merge frequent pairs of "
          "bytes into longer pieces so that common words become single tokens."]),
]


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


def build_tokenizer(vocab_size):
    """GPT-2 style byte-level BPE with exactly vocab_size ids; EOT is the last id."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    base = tok.get_vocab_size(with_added_tokens=False)
    if base != vocab_size - 1:
        sys.exit(f"BPE trainer produced {base} tokens, want {vocab_size - 1}: extend CORPUS")
    tok.add_special_tokens([EOT])
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    assert tok.token_to_id(EOT) == vocab_size - 1
    return tok


def encode(tok, text):
    return tok.encode(text, add_special_tokens=True).ids


def pick_prompts(tok):
    prompts = []
    for target, candidates in PROMPT_TARGETS:
        chosen = None
        for cand in candidates:
            words = cand.split(" ")
            for k in range(1, len(words) + 1):
                text = " ".join(words[:k])
                ids = encode(tok, text)
                if len(ids) == target:
                    chosen = (text, ids)
                    break
                if len(ids) > target:
                    break
            if chosen:
                break
        if chosen is None:
            sys.exit(f"no prompt candidate tokenises to exactly {target} tokens; add candidates")
        assert tok.decode(chosen[1]) == chosen[0], chosen
        prompts.append({"text": chosen[0], "ids": chosen[1]})
    return prompts


def make_config(kwargs):
    kw = dict(kwargs)
    v = kw["vocab_size"]
    kw.setdefault("bos_token_id", v - 1)
    kw.setdefault("eos_token_id", v - 1)
    # Plain GPT-2 block: no dropout at inference anyway, but keep the file explicit.
    kw.setdefault("resid_pdrop", 0.0)
    kw.setdefault("embd_pdrop", 0.0)
    kw.setdefault("attn_pdrop", 0.0)
    return GPT2Config(**kw)


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic random weights, independent of HF's _init_weights call order.

    Matrices/embeddings ~ N(0, r) (r = initializer_range), attn.c_proj / mlp.c_proj ~
    N(0, r / sqrt(2 n_layer)) like GPT-2; unlike HF's init, the biases and the LayerNorm
    affine parameters are random too (bias ~ N(0, 0.05), ln.weight ~ 1 + N(0, 0.1),
    ln.bias ~ N(0, 0.1)), so a parity test notices a missing bias or LN parameter.
    """
    cfg = model.config
    r = cfg.initializer_range
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    for name, p in sorted(model.named_parameters(remove_duplicate=False), key=lambda t: t[0]):
        if id(p) in seen:  # tied lm_head.weight -> already set via transformer.wte.weight
            continue
        seen.add(id(p))
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if ".ln_" in name:  # transformer.h.<i>.ln_1/ln_2, transformer.ln_f
            val = 1.0 + 0.1 * noise if name.endswith(".weight") else 0.1 * noise
        elif name.endswith(".bias"):
            val = 0.05 * noise
        elif name.endswith("c_proj.weight"):
            val = noise * (r / math.sqrt(2 * cfg.n_layer))
        else:
            val = noise * r
        p.copy_(val)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def build_model(config, seed):
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    init_weights(model, seed)
    model.eval()
    return model


def margins_of(step_logits):
    """top1 - top2 of each row of [steps, vocab]."""
    top2 = torch.topk(step_logits.float(), 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


@torch.inference_mode()
def greedy_alone(model, ids, eos):
    inp = torch.tensor([ids], dtype=torch.long)
    out = model.generate(
        inp, attention_mask=torch.ones_like(inp), do_sample=False, num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS, pad_token_id=eos, eos_token_id=None,
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


@torch.inference_mode()
def greedy_batched(model, hf_tok, texts, eos):
    enc = hf_tok(texts, padding=True, return_tensors="pt", add_special_tokens=True)
    width = enc["input_ids"].shape[1]
    out = model.generate(
        enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False, num_beams=1,
        max_new_tokens=MAX_NEW_TOKENS, pad_token_id=eos, eos_token_id=None,
        return_dict_in_generate=True, output_logits=True,
    )
    new = out.sequences[:, width:].tolist()
    assert all(len(n) == MAX_NEW_TOKENS for n in new)
    step_logits = torch.stack(list(out.logits), dim=1)  # [batch, steps, vocab]
    margins = [margins_of(step_logits[b]) for b in range(len(texts))]
    return enc, new, margins, step_logits[:, 0, :]


def evaluate(model, tok, hf_tok, prompts, eos, check_no_cache=False):
    res = {"greedy": [], "margins": [], "min_margin": [], "distinct": []}
    for p in prompts:
        new, m = greedy_alone(model, p["ids"], eos)
        if check_no_cache:
            nc = greedy_no_cache(model, p["ids"])
            assert nc == new, f"generate (KV cache) vs no-cache greedy differ: {new} vs {nc}"
        res["greedy"].append(new)
        res["margins"].append(m)
        res["min_margin"].append(min(m))
        res["distinct"].append(len(set(new)))
    enc, bnew, bmargins, bfirst = greedy_batched(model, hf_tok, [p["text"] for p in prompts], eos)
    res["batched"] = (enc, bnew, bmargins, bfirst)
    res["batched_equal"] = [a == b for a, b in zip(res["greedy"], bnew)]
    return res


def acceptable(res):
    return (min(res["min_margin"]) >= MIN_MARGIN
            and min(min(m) for m in res["batched"][2]) >= MIN_MARGIN
            and min(res["distinct"]) >= MIN_DISTINCT
            and all(res["batched_equal"]))


def hf_tokenizer(tok, eos_tok=EOT):
    hf = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.to_str()),
        bos_token=eos_tok, eos_token=eos_tok, unk_token=eos_tok, pad_token=eos_tok,
        padding_side="left",
    )
    return hf


# ----------------------------------------------------------------------------- main

def search_seeds(name, kwargs, max_seed):
    config = make_config(kwargs)
    tok = build_tokenizer(config.vocab_size)
    hf_tok = hf_tokenizer(tok)
    prompts = pick_prompts(tok)
    eos = config.eos_token_id
    for seed in range(max_seed):
        model = build_model(config, seed)
        model.generation_config.eos_token_id = None
        res = evaluate(model, tok, hf_tok, prompts, eos)
        ok = acceptable(res)
        print(f"{name} seed {seed:3d}: min_margin={['%.4g' % m for m in res['min_margin']]} "
              f"distinct={res['distinct']} batched_equal={res['batched_equal']} "
              f"{'OK' if ok else ''}", file=sys.stderr)
        if ok:
            print(f"{name}: first acceptable seed = {seed}")
            return seed
    print(f"{name}: no acceptable seed below {max_seed}")
    return None


def write_fixture(name, kwargs, seed, out_root, threads):
    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    config = make_config(kwargs)
    tok = build_tokenizer(config.vocab_size)
    tok.save(str(out_dir / "tokenizer.json"))
    model = build_model(config, seed)
    model.save_pretrained(out_dir, safe_serialization=True)

    # Everything below is computed from what was written to disk, loaded the way a user
    # would load the directory.
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == config.vocab_size
    hf_tok = hf_tokenizer(tok)
    loaded = GPT2LMHeadModel.from_pretrained(out_dir, attn_implementation="eager",
                                             torch_dtype=torch.float32)
    loaded.eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    model = loaded
    model.generation_config.eos_token_id = None  # run the full MAX_NEW_TOKENS
    eos = config.eos_token_id

    with safe_open(str(out_dir / "model.safetensors"), framework="pt") as f:
        tensor_names = list(f.keys())
        tensor_shapes = {k: list(f.get_slice(k).get_shape()) for k in tensor_names}
        st_meta = f.metadata()

    prompts = pick_prompts(tok)
    for p in prompts:
        assert hf_tok(p["text"])["input_ids"] == p["ids"]

    res = evaluate(model, tok, hf_tok, prompts, eos, check_no_cache=True)
    if not acceptable(res):
        sys.exit(f"{name}: seed {seed} does not meet the criteria: min_margin={res['min_margin']} "
                 f"distinct={res['distinct']} batched_equal={res['batched_equal']}; "
                 f"run with --search-seeds")

    logits, last_logits = [], []
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            lg = model(torch.tensor([p["ids"]])).logits[0]
            if i < 2:
                logits.append(f32_list(lg.numpy()))
            last_logits.append(f32_list(lg[-1].numpy()))
        # Cross-check the default (SDPA) attention implementation against eager.
        sdpa = GPT2LMHeadModel.from_pretrained(out_dir, attn_implementation="sdpa",
                                               torch_dtype=torch.float32).eval()
        sdpa_diff = max(
            float((sdpa(torch.tensor([p["ids"]])).logits[0] - model(torch.tensor([p["ids"]])).logits[0])
                  .abs().max())
            for p in prompts)
    sdpa.generation_config.eos_token_id = None
    sdpa_greedy_equal = all(greedy_alone(sdpa, p["ids"], eos)[0] == g
                            for p, g in zip(prompts, res["greedy"]))

    enc, bnew, bmargins, bfirst = res["batched"]
    first_step_diff = [float((bfirst[b] - torch.tensor(last_logits[b])).abs().max())
                       for b in range(len(prompts))]

    cfg = model.config
    doc = {
        "generator": "scripts/reference/gpt2.py",
        "name": name,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
        },
        "seed": seed,
        "init": "random (see init_weights): matrices/embeddings N(0, initializer_range), "
                "c_proj N(0, initializer_range/sqrt(2*n_layer)), biases N(0, 0.05), "
                "ln weight 1+N(0, 0.1), ln bias N(0, 0.1)",
        "torch_threads": threads,
        "attn_implementation": "eager",
        "config": {
            "model_type": cfg.model_type,
            "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd,
            "n_head": cfg.n_head,
            "head_dim": cfg.n_embd // cfg.n_head,
            "n_inner": cfg.n_inner if cfg.n_inner is not None else 4 * cfg.n_embd,
            "n_inner_explicit": cfg.n_inner is not None,
            "n_positions": cfg.n_positions,
            "vocab_size": cfg.vocab_size,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "layer_norm_epsilon": cfg.layer_norm_epsilon,
            "activation_function": cfg.activation_function,
            "initializer_range": cfg.initializer_range,
            "scale_attn_weights": cfg.scale_attn_weights,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
        },
        "files": {
            "model.safetensors": {
                "sha256": sha256(out_dir / "model.safetensors"),
                "metadata": st_meta,
                "tensors": tensor_shapes,
            },
            "tokenizer.json": {"sha256": sha256(out_dir / "tokenizer.json")},
        },
        "tokenizer": {
            "type": "BPE, ByteLevel pre-tokenizer (add_prefix_space=false) + ByteLevel decoder",
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "eos_token": EOT,
            "eos_token_id": tok.token_to_id(EOT),
        },
        "prompts": prompts,
        "logits_prompts": [0, 1],
        "logits": logits,
        "last_logits": last_logits,
        "max_new_tokens": MAX_NEW_TOKENS,
        "generate": "model.generate(ids, attention_mask=1s, do_sample=False, num_beams=1, "
                    f"max_new_tokens={MAX_NEW_TOKENS}, pad_token_id=eos, eos_token_id=None)",
        "greedy": res["greedy"],
        "greedy_text": [tok.decode(g) for g in res["greedy"]],
        "greedy_min_margin": [f32(m) for m in res["min_margin"]],
        "greedy_margins": [[f32(x) for x in m] for m in res["margins"]],
        "greedy_distinct_tokens": res["distinct"],
        "sdpa_vs_eager": {"max_abs_logit_diff": sdpa_diff, "greedy_equal": sdpa_greedy_equal},
        "batched_greedy": {
            "padding_side": "left",
            "pad_token_id": eos,
            "position_ids": "attention_mask.cumsum(-1) - 1 (pads: 1), as HF generate does",
            "input_ids": enc["input_ids"].tolist(),
            "attention_mask": enc["attention_mask"].tolist(),
            "tokens": bnew,
            "equals_alone": res["batched_equal"],
            "min_margin": [f32(min(m)) for m in bmargins],
            "first_step_max_abs_diff_vs_alone_last_logits": first_step_diff,
        },
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    (out_dir / "reference.json").write_text(text + "\n", encoding="utf-8")

    print(f"== {name} (seed {seed})")
    print(f"  tensors ({len(tensor_names)}): {tensor_names[:6]} ...")
    print(f"  lm_head.weight saved: {'lm_head.weight' in tensor_names}; "
          f"buffers saved: {[n for n in tensor_names if n.endswith(('.attn.bias', 'masked_bias'))]}")
    for i, p in enumerate(prompts):
        print(f"  prompt {i} ({len(p['ids'])} tok) {p['text']!r}: min_margin={res['min_margin'][i]:.4g} "
              f"distinct={res['distinct'][i]} batched==alone={res['batched_equal'][i]} "
              f"batched_min_margin={min(bmargins[i]):.4g}")
        print(f"    -> {doc['greedy_text'][i]!r}")
    print(f"  sdpa vs eager: max|dlogit|={sdpa_diff:.3e} greedy_equal={sdpa_greedy_equal}; "
          f"batched first-step diff max={max(first_step_diff):.3e}")
    for f in sorted(out_dir.iterdir()):
        print(f"  {f.name}: {f.stat().st_size} bytes")
    total = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"  total: {total} bytes")
    assert total < 1.5e6, total


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
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)
    transformers.logging.set_verbosity_error()

    names = args.only or list(CONFIGS)
    for name in names:
        kwargs, seed = CONFIGS[name]
        if args.search_seeds:
            search_seeds(name, kwargs, args.search_seeds)
        else:
            write_fixture(name, kwargs, seed, pathlib.Path(args.out), args.threads)


if __name__ == "__main__":
    main()
