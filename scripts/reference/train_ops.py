#!/usr/bin/env python3
"""Write tests/fixtures/train/ops.json: gradients of the training building blocks as PyTorch's
autograd computes them, for transformer-runtime/tests/train_ops.rs.

Every case draws float32 inputs from a seeded generator, runs the op in float64 on those exact
values (so the reference carries no rounding of its own), backpropagates a random upstream
gradient `dy`, and stores inputs, outputs and every gradient as flat lists (row-major):

    linear        y = x·Wᵀ + b (nn.functional.linear), then each activation the forward fuses
                  (gelu erf, gelu tanh, relu, silu, identity): dx, dW, db
    gated         act(gate)·up over rows [gate | up] (SwiGLU, GeGLU): d_gate_up
    layer_norm    nn.functional.layer_norm, eps 1e-5 and BERT's 1e-12: y, dx, dγ, dβ
    rms_norm      HF LlamaRMSNorm's formula: y, dx, dw
    embedding     nn.functional.embedding with padding_idx 0 and repeated ids: d_table
    positions     learned absolute positions of a batch of sequences starting at an offset
    cross_entropy nn.functional.cross_entropy (ignore_index -100, mean and sum): loss, dlogits
    rope          q·cos + rotate_half(q)·sin (HF LLaMA) with full and partial rotary dims

Shapes are odd on purpose (no multiple of a SIMD width or a block size).

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_ops.py
"""
import json
import pathlib

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "train" / "ops.json"

gen = torch.Generator().manual_seed(20261207)


def rand(*shape, scale=1.0):
    """float32 values (what the Rust side holds), promoted to float64 for the reference."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).double()


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def leaf(t):
    return t.clone().requires_grad_(True)


ACTIVATIONS = {
    "identity": lambda x: x,
    "gelu_erf": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def linear_cases():
    cases = []
    for name, act in ACTIVATIONS.items():
        rows, n_in, n_out = 9, 13, 7
        x, w, b = leaf(rand(rows, n_in)), leaf(rand(n_out, n_in, scale=0.5)), leaf(rand(n_out))
        pre = F.linear(x, w, b)
        y = act(pre)
        dy = rand(rows, n_out)
        y.backward(dy)
        cases.append({
            "activation": name, "rows": rows, "in": n_in, "out": n_out,
            "x": flat(x), "w": flat(w), "b": flat(b), "dy": flat(dy),
            "pre": flat(pre), "y": flat(y), "dx": flat(x.grad), "dw": flat(w.grad), "db": flat(b.grad),
        })
    return cases


def gated_cases():
    cases = []
    for name in ["silu", "gelu_tanh", "gelu_erf"]:
        rows, f = 5, 11
        gate_up = leaf(rand(rows, 2 * f))
        gate, up = gate_up[:, :f], gate_up[:, f:]
        y = ACTIVATIONS[name](gate) * up
        dy = rand(rows, f)
        y.backward(dy)
        cases.append({"activation": name, "rows": rows, "f": f, "gate_up": flat(gate_up), "dy": flat(dy),
                      "y": flat(y), "d_gate_up": flat(gate_up.grad)})
    return cases


def layer_norm_cases():
    cases = []
    for eps in [1e-5, 1e-12]:
        rows, d = 6, 11
        x = leaf(rand(rows, d, scale=3.0) + 0.7)
        g, b = leaf(rand(d)), leaf(rand(d))
        y = F.layer_norm(x, (d,), g, b, eps)
        dy = rand(rows, d)
        y.backward(dy)
        cases.append({"eps": eps, "rows": rows, "d": d, "x": flat(x), "gamma": flat(g), "beta": flat(b),
                      "dy": flat(dy), "y": flat(y), "dx": flat(x.grad), "d_gamma": flat(g.grad),
                      "d_beta": flat(b.grad)})
    return cases


def rms_norm_cases():
    rows, d, eps = 6, 11, 1e-6
    x, w = leaf(rand(rows, d, scale=2.0)), leaf(rand(d))
    y = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    dy = rand(rows, d)
    y.backward(dy)
    return [{"eps": eps, "rows": rows, "d": d, "x": flat(x), "weight": flat(w), "dy": flat(dy), "y": flat(y),
             "dx": flat(x.grad), "d_weight": flat(w.grad)}]


def embedding_cases():
    vocab, d = 10, 5
    ids = torch.tensor([3, 0, 7, 3, 9, 0, 3, 1], dtype=torch.int64)
    table = leaf(rand(vocab, d))
    y = F.embedding(ids, table, padding_idx=0)
    dy = rand(len(ids), d)
    y.backward(dy)
    return [{"vocab": vocab, "d": d, "padding_idx": 0, "ids": ids.tolist(), "dy": flat(dy),
             "d_table": flat(table.grad)}]


def position_cases():
    positions, d, seq, batch, first = 12, 5, 4, 3, 2
    table = leaf(rand(positions, d))
    idx = torch.arange(first, first + seq).repeat(batch)
    y = F.embedding(idx, table)
    dy = rand(batch * seq, d)
    y.backward(dy)
    return [{"positions": positions, "d": d, "seq": seq, "first": first, "dy": flat(dy),
             "d_table": flat(table.grad)}]


def cross_entropy_cases():
    cases = []
    rows, classes = 7, 19
    labels = torch.tensor([4, -100, 0, 18, 4, -100, 11], dtype=torch.int64)
    for reduction in ["mean", "sum"]:
        logits = leaf(rand(rows, classes, scale=3.0))
        loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction=reduction)
        loss.backward()
        cases.append({"reduction": reduction, "rows": rows, "classes": classes, "labels": labels.tolist(),
                      "logits": flat(logits), "loss": float(loss.detach()), "dlogits": flat(logits.grad)})
    return cases


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cases():
    cases = []
    for head_dim, rotary in [(8, 8), (10, 4)]:
        positions, heads, theta = 5, 3, 10000.0
        inv_freq = 1.0 / (theta ** (torch.arange(0, rotary, 2, dtype=torch.float64) / rotary))
        angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
        x = leaf(rand(positions, heads, head_dim))
        rot, rest = x[..., :rotary], x[..., rotary:]
        y = torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)
        dy = rand(positions, heads, head_dim)
        y.backward(dy)
        cases.append({"head_dim": head_dim, "rotary": rotary, "positions": positions, "heads": heads,
                      "theta": theta, "x": flat(x), "dy": flat(dy), "y": flat(y), "dx": flat(x.grad)})
    return cases


def main():
    fixture = {
        "torch": torch.__version__,
        "linear": linear_cases(),
        "gated": gated_cases(),
        "layer_norm": layer_norm_cases(),
        "rms_norm": rms_norm_cases(),
        "embedding": embedding_cases(),
        "positions": position_cases(),
        "cross_entropy": cross_entropy_cases(),
        "rope": rope_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
