#!/usr/bin/env python3
"""Time the PyTorch forward pass of all-MiniLM-L6-v2 (transformer + mean pooling
+ normalize, tokenisation excluded) on fixed synthetic inputs.

Prints one line per workload to stdout:
    torch <workload> median_ms=<float>
Everything else goes to stderr.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import pathlib
import statistics
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = ROOT / ".cache" / "models" / "all-MiniLM-L6-v2"
SEQ = 128
WORKLOADS = [("1x128", 1), ("32x128", 32)]


def make_inputs(batch, seq=SEQ):
    """Same deterministic ids as the Rust bench: [CLS] ... [SEP], no padding."""
    ids = torch.empty((batch, seq), dtype=torch.long)
    for b in range(batch):
        for i in range(seq):
            if i == 0:
                v = 101
            elif i == seq - 1:
                v = 102
            else:
                v = 1000 + (i * 7 + b * 13) % 20000
            ids[b, i] = v
    return {
        "input_ids": ids,
        "attention_mask": torch.ones((batch, seq), dtype=torch.long),
        "token_type_ids": torch.zeros((batch, seq), dtype=torch.long),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model_dir, device="cpu")
    model.eval()
    model.float()
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"warmup={args.warmup}, runs={args.runs}", file=sys.stderr)

    for name, batch in WORKLOADS:
        feats = make_inputs(batch)
        times = []
        with torch.inference_mode():
            for k in range(args.warmup + args.runs):
                t0 = time.perf_counter()
                out = model(dict(feats))
                emb = out["sentence_embedding"]
                t1 = time.perf_counter()
                assert emb.shape == (batch, 384)
                if k >= args.warmup:
                    times.append((t1 - t0) * 1e3)
        print(f"  {name}: min={min(times):.3f} ms max={max(times):.3f} ms", file=sys.stderr)
        print(f"torch {name} median_ms={statistics.median(times):.3f}", flush=True)


if __name__ == "__main__":
    main()
