#!/usr/bin/env python3
"""Write tests/fixtures/position_bias.json: T5 relative-position buckets and ALiBi slopes as
Hugging Face transformers computes them, for transformer-runtime/tests/seq2seq_kernels.rs.

    t5_buckets   for several (num_buckets, max_distance, bidirectional) settings, the bucket of
                 every relative position (memory - query) in -300..=300, from
                 T5Attention._relative_position_bucket
    t5_bias      a small T5Attention (has_relative_attention_bias) with seeded random weights:
                 its relative_attention_bias.weight [buckets, heads] and compute_bias(q, k)
                 [heads, q, k], encoder (bidirectional) and decoder (unidirectional)
    alibi        BLOOM's build_alibi_tensor slopes for several head counts (the alibi of key
                 position 1, i.e. the slope itself)

The bucket formula takes a float32 log (torch.log of relative_position.float() / max_exact,
divided by the Python float math.log(max_distance / max_exact) and multiplied by an int, all as
float32 ops) and truncates. The script checks that a float32 re-implementation with those
roundings (C logf) equals torch on every offset written, so the Rust port can follow it.

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/position_bias.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import ctypes
import ctypes.util
import json
import math
import pathlib

import numpy as np
import torch
import transformers
from transformers import T5Config
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.t5.modeling_t5 import T5Attention

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "position_bias.json"

RANGE = 300
# (num_buckets, max_distance, bidirectional). T5's defaults are 32 / 128 (encoder bidirectional,
# decoder not); 32 / 128 puts the distances 16, 32 and 64 exactly on bin boundaries.
T5_SETTINGS = [
    (32, 128, True),
    (32, 128, False),
    (16, 64, True),
    (8, 20, False),
    (6, 10, True),
    (33, 100, True),
    (64, 256, True),
    (128, 1000, False),
    (4, 5, True),
]
ALIBI_HEADS = list(range(1, 17)) + [24, 32, 40]

_libm = ctypes.CDLL(ctypes.util.find_library("m"))
_libm.logf.restype = ctypes.c_float
_libm.logf.argtypes = [ctypes.c_float]


def bucket_f32(relative, bidirectional, num_buckets, max_distance):
    """The f32 recipe the Rust port follows (see t5_bucket in layers/position_bias.rs)."""
    n = num_buckets // 2 if bidirectional else num_buckets
    offset, distance = 0, relative
    if bidirectional:
        offset = n if relative > 0 else 0
        distance = abs(relative)
    else:
        distance = -min(relative, 0)
    max_exact = n // 2
    if distance < max_exact:
        return offset + distance
    log_ratio = np.float32(_libm.logf(np.float32(np.float32(distance) / np.float32(max_exact))))
    log_max = np.float32(math.log(max_distance / max_exact))
    large = max_exact + int(np.float32(np.float32(log_ratio / log_max) * np.float32(n - max_exact)))
    return offset + min(large, n - 1)


def t5_buckets():
    rel = torch.arange(-RANGE, RANGE + 1, dtype=torch.long)
    out = []
    for num_buckets, max_distance, bidirectional in T5_SETTINGS:
        torch_buckets = T5Attention._relative_position_bucket(
            rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
        ).tolist()
        ours = [bucket_f32(r, bidirectional, num_buckets, max_distance) for r in rel.tolist()]
        assert ours == torch_buckets, (num_buckets, max_distance, bidirectional)
        out.append(
            dict(
                num_buckets=num_buckets,
                max_distance=max_distance,
                bidirectional=bidirectional,
                first=-RANGE,
                buckets=torch_buckets,
            )
        )
    return out


def t5_bias():
    torch.manual_seed(7)
    out = []
    for is_decoder in [False, True]:
        config = T5Config(
            d_model=12, d_kv=4, num_heads=3, relative_attention_num_buckets=8,
            relative_attention_max_distance=12, is_decoder=is_decoder, dropout_rate=0.0,
        )
        attn = T5Attention(config, has_relative_attention_bias=True).eval()
        with torch.no_grad():
            attn.relative_attention_bias.weight.normal_()
            q_len, k_len = 10, 10
            bias = attn.compute_bias(q_len, k_len)[0]  # [heads, q, k]
        out.append(
            dict(
                bidirectional=not is_decoder,
                heads=config.num_heads,
                num_buckets=config.relative_attention_num_buckets,
                max_distance=config.relative_attention_max_distance,
                weight=attn.relative_attention_bias.weight.detach().flatten().tolist(),
                q_len=q_len,
                k_len=k_len,
                bias=bias.flatten().tolist(),
            )
        )
    return out


def alibi():
    out = []
    for heads in ALIBI_HEADS:
        mask = torch.ones(1, 2, dtype=torch.long)
        # Position of key 1 is 1: its alibi is the slope.
        slopes = build_alibi_tensor(mask, heads, torch.float32).reshape(heads, 2)[:, 1]
        out.append(dict(heads=heads, slopes=slopes.tolist()))
    return out


def main():
    fixture = dict(
        transformers=transformers.__version__,
        torch=torch.__version__,
        t5_buckets=t5_buckets(),
        t5_bias=t5_bias(),
        alibi=alibi(),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
