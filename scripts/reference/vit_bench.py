#!/usr/bin/env python3
"""Time Hugging Face ViTForImageClassification with ViT-Base/16 shapes (image 224x224, patch 16,
hidden 768, 12 heads, 12 layers, intermediate 3072, 1000 labels; random weights from seed 0,
nothing is downloaded or saved) on the CPU. Preprocessing is not timed: the model gets
pixel_values directly.

Inputs (same as the Rust bench): every image of the batch has
    pixel_values[b][c][y][x] = ((c*7 + y*3 + x) % 255) / 127.5 - 1
Workloads: one forward pass at batch 1 (vit_b1) and batch 8 (vit_b8); warm-up 2, median of 10.

Prints to stdout:
    torch vit_b1 median_ms=<float>
    torch vit_b8 median_ms=<float>
Everything else goes to stderr.

    .cache/venv/bin/python scripts/reference/vit_bench.py --threads 2
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import statistics
import sys
import time

import torch
import transformers
from transformers import ViTConfig, ViTForImageClassification

IMAGE = 224
CHANNELS = 3
WORKLOADS = [("vit_b1", 1), ("vit_b8", 8)]


def pixel_values(batch):
    """Deterministic inputs, identical for every image of the batch."""
    c = torch.arange(CHANNELS).view(CHANNELS, 1, 1)
    y = torch.arange(IMAGE).view(1, IMAGE, 1)
    x = torch.arange(IMAGE).view(1, 1, IMAGE)
    img = ((c * 7 + y * 3 + x) % 255).to(torch.float64) / 127.5 - 1
    return img.to(torch.float32).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="HF attention implementation (sdpa is the default when loading)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    config = ViTConfig(image_size=IMAGE, patch_size=16, num_channels=CHANNELS, hidden_size=768,
                       num_attention_heads=12, num_hidden_layers=12, intermediate_size=3072,
                       num_labels=1000, hidden_act="gelu", layer_norm_eps=1e-12)
    config._attn_implementation = args.attn
    model = ViTForImageClassification(config).eval().float()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads={torch.get_num_threads()}, attn={model.config._attn_implementation}, "
          f"params={sum(p.numel() for p in model.parameters()) / 1e6:.1f}M", file=sys.stderr)

    # os.getloadavg() and the process's CPU time / wall time are printed to stderr: on a
    # machine shared with other jobs (load above the thread count), torch's thread pool is
    # oversubscribed and the numbers are not meaningful.
    print(f"  loadavg before: {os.getloadavg()}", file=sys.stderr)
    cpu0, wall0 = time.process_time(), time.perf_counter()

    for name, batch in WORKLOADS:
        x = pixel_values(batch)
        times = []
        with torch.inference_mode():
            for k in range(args.warmup + args.runs):
                t0 = time.perf_counter()
                logits = model(pixel_values=x).logits
                t1 = time.perf_counter()
                assert logits.shape == (batch, 1000), logits.shape
                if k >= args.warmup:
                    times.append((t1 - t0) * 1e3)
        print(f"  {name}: batch {batch}, min={min(times):.3f} ms max={max(times):.3f} ms, "
              f"logits[0][:3]={[round(v, 5) for v in logits[0, :3].tolist()]}", file=sys.stderr)
        print(f"torch {name} median_ms={statistics.median(times):.3f}", flush=True)

    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"  loadavg after: {os.getloadavg()}; process cpu/wall = {cpu / wall:.2f} "
          f"(ideal ~{args.threads})", file=sys.stderr)


if __name__ == "__main__":
    main()
