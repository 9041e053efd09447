#!/usr/bin/env python3
"""Write tests/fixtures/train/objectives.json: the pooling backward, the ranking loss and the
sequence-classification head as sentence-transformers, transformers and PyTorch's autograd
compute them, for transformer-runtime/tests/train_objectives.rs.

Every case draws float32 inputs from a seeded generator and runs the reference in float64 on those
exact values (so the reference carries no rounding of its own), storing inputs, outputs and every
gradient as flat row-major lists:

    pooling     sentence_transformers.models.Pooling (mean, cls, max) over a right-padded batch:
                the pooled rows and d_hidden for a random upstream gradient
    normalize   sentence_transformers.models.Normalize (F.normalize): y and dx, and rows whose norm
                is below F.normalize's eps (a zero row, a tiny one)
    ranking     sentence_transformers.losses.MultipleNegativesRankingLoss itself: its forward on
                precomputed embeddings (a two-line module stands in for the SentenceTransformer and
                returns them as "sentence_embedding"), with and without hard negatives, raw and
                pre-normalised embeddings, scale 20 (the default) and 50: loss, d_anchors,
                d_candidates. The loss is cross-checked against the documented computation
                (cross-entropy of scale * cos_sim(anchors, candidates) with label i), and the
                difference is stored (`replication_diff`).
    classifier  a pooled classifier's head and loss: transformers' BertPooler (tanh(dense(h_cls)))
                then nn.Linear then cross-entropy, and mean pooling then nn.Linear: loss and the
                gradients of the hidden states and every weight

Shapes are odd on purpose where the Rust side is not monomorphic over them.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_objectives.py
"""
import json
import pathlib

import sentence_transformers
import torch
import torch.nn.functional as F
import transformers
from sentence_transformers import losses, models
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertPooler

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "train" / "objectives.json"

gen = torch.Generator().manual_seed(20261214)


def rand(*shape, scale=1.0):
    """float32 values (what the Rust side holds), promoted to float64 for the reference."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).double()


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def leaf(t):
    return t.clone().requires_grad_(True)


def padding_mask(lengths, seq):
    return (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()


def pooling_cases():
    cases = []
    batch, seq, d = 4, 7, 16
    lengths = [7, 3, 1, 5]
    for mode in ["mean", "cls", "max"]:
        pooling = models.Pooling(d, pooling_mode=mode).double()
        x = leaf(rand(batch, seq, d))
        mask = padding_mask(lengths, seq)
        # Max pooling writes -1e9 into its input's padding in place: give it a non-leaf.
        y = pooling({"token_embeddings": x * 1.0, "attention_mask": mask})["sentence_embedding"]
        dy = rand(batch, d)
        y.backward(dy)
        cases.append({"mode": mode, "batch": batch, "seq": seq, "d": d, "lengths": lengths, "x": flat(x),
                      "dy": flat(dy), "y": flat(y), "dx": flat(x.grad)})
    return cases


def normalize_cases():
    cases = []
    normalize = models.Normalize()
    d = 16
    regular = rand(9, d, scale=2.0)
    regular[3] = (regular[3] * 1e-3).float().double()  # a short vector, still above eps
    small = torch.zeros(2, d, dtype=torch.float64)
    small[1] = rand(d, scale=1e-14)  # norm below 1e-12: clamped
    for name, x0 in [("regular", regular), ("below_eps", small)]:
        x = leaf(x0)
        y = normalize({"sentence_embedding": x})["sentence_embedding"]
        dy = rand(x0.shape[0], d)
        y.backward(dy)
        cases.append({"name": name, "rows": x0.shape[0], "d": d, "x": flat(x), "dy": flat(dy), "y": flat(y),
                      "dx": flat(x.grad)})
    return cases


class Precomputed(torch.nn.Module):
    """Stands in for the SentenceTransformer: its "sentence_embedding" is the given embedding."""

    def forward(self, features):
        return {"sentence_embedding": features["embedding"]}


def ranking_cases():
    cases = []
    specs = [
        # name, anchors, d, hard-negative columns, scale, pre-normalised, positive noise
        ("pairs", 8, 16, 0, 20.0, False, None),
        ("hard_negatives", 6, 32, 2, 20.0, False, None),
        ("normalized_close", 16, 16, 0, 50.0, True, 2.0),
    ]
    for name, b, d, negatives, scale, normalized, noise in specs:
        anchors = rand(b, d, scale=1.5)
        if noise is None:
            columns = [rand(b, d, scale=0.8) for _ in range(1 + negatives)]
        else:
            columns = [(anchors + rand(b, d, scale=noise)).float().double()]
        if normalized:
            anchors = F.normalize(anchors, dim=1).float().double()
            columns = [F.normalize(c, dim=1).float().double() for c in columns]
        a, cols = leaf(anchors), [leaf(c) for c in columns]
        loss_fn = losses.MultipleNegativesRankingLoss(Precomputed(), scale=scale)
        loss = loss_fn([{"embedding": a}] + [{"embedding": c} for c in cols], None)
        loss.backward()
        candidates = torch.cat([c.detach() for c in cols])
        d_candidates = torch.cat([c.grad for c in cols])

        # The documented computation, by hand.
        scores = scale * (F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T)
        replicated = F.cross_entropy(scores, torch.arange(b))
        diff = abs(float(replicated.detach()) - float(loss.detach()))
        assert diff < 1e-12, f"{name}: the class and its documented computation differ by {diff}"

        cases.append({"name": name, "anchors": b, "candidates": candidates.shape[0], "d": d, "scale": scale,
                      "a": flat(a), "c": flat(candidates), "loss": float(loss.detach()),
                      "replication_diff": diff, "d_a": flat(a.grad), "d_c": flat(d_candidates)})
    return cases


def classifier_cases():
    cases = []
    batch, seq, d, classes = 5, 6, 16, 3
    lengths = [6, 2, 4, 1, 5]
    labels = torch.tensor([2, 0, 1, 1, 0])
    mask = padding_mask(lengths, seq)
    for pooling in ["cls_pooler", "mean"]:
        hidden = leaf(rand(batch, seq, d))
        classifier = torch.nn.Linear(d, classes).double()
        with torch.no_grad():
            classifier.weight.copy_(rand(classes, d, scale=0.5))
            classifier.bias.copy_(rand(classes))
        case = {"pooling": pooling, "batch": batch, "seq": seq, "d": d, "classes": classes,
                "lengths": lengths, "labels": labels.tolist()}
        if pooling == "cls_pooler":
            pooler = BertPooler(BertConfig(hidden_size=d)).double()
            with torch.no_grad():
                pooler.dense.weight.copy_(rand(d, d, scale=0.4))
                pooler.dense.bias.copy_(rand(d, scale=0.5))
            pooled = pooler(hidden)
            case.update({"pooler_w": flat(pooler.dense.weight), "pooler_b": flat(pooler.dense.bias)})
        else:
            pooler = None
            pooled = models.Pooling(d, pooling_mode="mean")(
                {"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
        logits = classifier(pooled)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        case.update({"hidden": flat(hidden), "w": flat(classifier.weight), "b": flat(classifier.bias),
                     "logits": flat(logits), "loss": float(loss.detach()), "d_hidden": flat(hidden.grad),
                     "d_w": flat(classifier.weight.grad), "d_b": flat(classifier.bias.grad)})
        if pooler is not None:
            case.update({"d_pooler_w": flat(pooler.dense.weight.grad),
                         "d_pooler_b": flat(pooler.dense.bias.grad)})
        cases.append(case)
    return cases


def main():
    torch.set_default_dtype(torch.float64)
    fixture = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "pooling": pooling_cases(),
        "normalize": normalize_cases(),
        "ranking": ranking_cases(),
        "classifier": classifier_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    for case in fixture["ranking"]:
        print(f"ranking {case['name']}: loss {case['loss']:.6f}, class vs documented computation "
              f"{case['replication_diff']:.1e}")


if __name__ == "__main__":
    main()
