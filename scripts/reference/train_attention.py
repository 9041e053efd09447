#!/usr/bin/env python3
"""Write tests/fixtures/train/attention/*.json: multi-head scaled-dot-product attention's forward
output, per-(row, head) log-sum-exp and the gradients dq, dk, dv of sum(out * d_out) by PyTorch's
autograd, for transformer-runtime/tests/train_attention.rs.

Each case has seeded random q [rows, heads*hd], k and v [keys, kv_heads*hd] (float32 values,
computed on in float64) and an upstream gradient d_out [rows, heads*hd]. The attention is written
out explicitly, as the Rust kernels define it:

    s[h, p, j] = q[p, h] . k[j, h // (heads / kv_heads)] * scale + bias[h, p, j]
    p          = softmax over the keys j that the query p sees (padding flags, causal limit,
                 trailing window), 0 on the others
    out[p, h]  = sum_j p[h, p, j] v[j, h // group]

bias[h, p, j] = table[h, center + j - p] (ALiBi-like: slope_h * (j - p)) when the case has a
table. A query that sees no key gets out = 0, lse = -inf (written as null) and zero gradients;
the softmax below is written so that such a row gives 0 and no NaN under autograd.

The explicit softmax is checked against F.scaled_dot_product_attention (with the same boolean
mask plus the bias as a float mask) on the rows that see at least one key.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_attention.py
"""
import json
import math
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "train" / "attention"

CASES = [
    # name, hd, heads, kv_heads, rows, keys, causal, window, padded keys, alibi, seed
    dict(name="hd8_gqa_causal_pad0", hd=8, heads=3, kv_heads=1, rows=13, keys=13, causal=True,
         window=None, invalid=[0, 7], alibi=False, seed=1),
    dict(name="hd16_mha_padded", hd=16, heads=3, kv_heads=3, rows=13, keys=13, causal=False,
         window=None, invalid=[3, 11, 12], alibi=False, seed=2),
    dict(name="hd8_mha_causal_alibi", hd=8, heads=3, kv_heads=3, rows=13, keys=13, causal=True,
         window=None, invalid=[], alibi=True, seed=3),
    dict(name="hd16_gqa_window_cross", hd=16, heads=3, kv_heads=1, rows=13, keys=9, causal=True,
         window=4, invalid=[5], alibi=False, seed=4),
]


def alibi_table(heads, rows, keys):
    """slope_h * (j - p) for offsets -(rows - 1)..=(keys - 1); slopes 2^(-8 (h + 1) / heads)."""
    center = rows - 1
    span = rows + keys - 1
    slopes = [2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)]
    table = torch.tensor(
        [[slopes[h] * (i - center) for i in range(span)] for h in range(heads)], dtype=torch.float32
    )
    return table, span, center


def visible(c):
    """[rows, keys] booleans: key j visible to the query at position p."""
    rows, keys = c["rows"], c["keys"]
    p = torch.arange(rows)[:, None]
    j = torch.arange(keys)[None, :]
    sees = torch.ones(rows, keys, dtype=torch.bool)
    valid = torch.ones(keys, dtype=torch.bool)
    valid[c["invalid"]] = False
    sees &= valid[None, :]
    if c["causal"]:
        sees &= j <= p
        if c["window"] is not None:
            sees &= j > p - c["window"]
    elif c["window"] is not None:
        sees &= (j - p).abs() <= c["window"] // 2
    return sees, valid


def attention(q, k, v, sees, bias, c, scale):
    """Explicit masked softmax attention in float64; returns (out [rows, heads*hd], lse [rows, heads])."""
    hd, heads, kv_heads, rows, keys = c["hd"], c["heads"], c["kv_heads"], c["rows"], c["keys"]
    group = heads // kv_heads
    qh = q.view(rows, heads, hd).transpose(0, 1)  # [heads, rows, hd]
    kh = k.view(keys, kv_heads, hd).transpose(0, 1).repeat_interleave(group, dim=0)
    vh = v.view(keys, kv_heads, hd).transpose(0, 1).repeat_interleave(group, dim=0)
    s = qh @ kh.transpose(1, 2) * scale + bias  # [heads, rows, keys]
    s = s.masked_fill(~sees[None], float("-inf"))
    m = s.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    denom = e.sum(-1, keepdim=True)
    p = e / denom.clamp_min(1e-300)
    out = (p @ vh).transpose(0, 1).reshape(rows, heads * hd)
    lse = (torch.log(denom) + m).squeeze(-1).transpose(0, 1)  # -inf where no key is seen
    return out, lse


def sdpa_check(q, k, v, sees, bias, c, scale, out):
    hd, heads, kv_heads, rows, keys = c["hd"], c["heads"], c["kv_heads"], c["rows"], c["keys"]
    group = heads // kv_heads
    qh = q.view(rows, heads, hd).transpose(0, 1)
    kh = k.view(keys, kv_heads, hd).transpose(0, 1).repeat_interleave(group, dim=0)
    vh = v.view(keys, kv_heads, hd).transpose(0, 1).repeat_interleave(group, dim=0)
    float_mask = torch.where(sees[None], bias, torch.tensor(float("-inf"), dtype=torch.float64))
    ref = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=float_mask, scale=scale)
    ref = ref.transpose(0, 1).reshape(rows, heads * hd)
    any_key = sees.any(-1)
    err = (ref[any_key] - out[any_key]).abs().max().item()
    assert err < 1e-12, f"{c['name']}: explicit softmax vs SDPA differ by {err}"


def flat(t):
    """A float32 tensor's values, each as the shortest decimal that reads back as that float32."""
    return [float(str(x)) for x in t.reshape(-1).numpy().astype(np.float32)]


def rounded(t, digits=9):
    return [None if not math.isfinite(x) else float(f"{x:.{digits}g}") for x in t.reshape(-1).tolist()]


def case(c):
    g = torch.Generator().manual_seed(c["seed"])
    hd, heads, kv_heads, rows, keys = c["hd"], c["heads"], c["kv_heads"], c["rows"], c["keys"]
    scale = float(np.float32(1.0 / math.sqrt(hd)))  # the float32 the Rust side uses
    q32 = torch.randn(rows, heads * hd, generator=g, dtype=torch.float32)
    k32 = torch.randn(keys, kv_heads * hd, generator=g, dtype=torch.float32)
    v32 = torch.randn(keys, kv_heads * hd, generator=g, dtype=torch.float32)
    d_out32 = torch.randn(rows, heads * hd, generator=g, dtype=torch.float32)
    sees, valid = visible(c)
    if c["alibi"]:
        table32, span, center = alibi_table(heads, rows, keys)
        p = torch.arange(rows)[:, None]
        j = torch.arange(keys)[None, :]
        idx = center + j - p
        bias = table32.double()[:, idx]  # [heads, rows, keys]
    else:
        table32, span, center = None, 0, 0
        bias = torch.zeros(heads, rows, keys, dtype=torch.float64)
    q, k, v = (t.double().requires_grad_() for t in (q32, k32, v32))
    out, lse = attention(q, k, v, sees, bias, c, scale)
    sdpa_check(q.detach(), k.detach(), v.detach(), sees, bias, c, scale, out.detach())
    (out * d_out32.double()).sum().backward()
    for t in (out, q.grad, k.grad, v.grad):
        assert torch.isfinite(t).all(), f"{c['name']}: non-finite values"
    no_key = ~sees.any(-1)
    assert (q.grad.view(rows, heads * hd)[no_key] == 0).all()
    return {
        "name": c["name"],
        "hd": hd,
        "heads": heads,
        "kv_heads": kv_heads,
        "rows": rows,
        "keys": keys,
        "causal": c["causal"],
        "window": c["window"],
        "key_valid": [bool(x) for x in valid.tolist()],
        "bias": None if table32 is None else {"table": flat(table32), "span": span, "center": center},
        "scale": scale,
        # Inputs: float32 values, written exactly (shortest repr of the float32 value as a double).
        "q": flat(q32),
        "k": flat(k32),
        "v": flat(v32),
        "d_out": flat(d_out32),
        # Outputs: float64 results to 9 significant digits (beyond float32's precision).
        "out": rounded(out.detach()),
        "lse": rounded(lse.detach()),
        "dq": rounded(q.grad),
        "dk": rounded(k.grad),
        "dv": rounded(v.grad),
        "rows_without_keys": int(no_key.sum()),
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    for c in CASES:
        fixture = case(c)
        path = OUT / f"{c['name']}.json"
        path.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes, "
              f"rows without keys {fixture['rows_without_keys']}")


if __name__ == "__main__":
    main()
