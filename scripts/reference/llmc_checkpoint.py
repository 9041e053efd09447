#!/usr/bin/env python3
"""Writes the files llm.c's CPU trainer (`train_gpt2.c`) reads, with random contents, for
scripts/bench-llmc.sh: a GPT-2 124M model in llm.c's own checkpoint format and token files in its
data-loader format, laid out under OUT the way `train_gpt2.c`'s main() looks for them:

    OUT/gpt2_124M.bin                                      the model
    OUT/dev/data/tinyshakespeare/tiny_shakespeare_train.bin  random tokens
    OUT/dev/data/tinyshakespeare/tiny_shakespeare_val.bin    random tokens

No debug-state file: only test_gpt2.c reads one. No tokenizer file (`gpt2_tokenizer.bin`): without
it train_gpt2.c prints a warning and would print token ids instead of text when it samples (at
step 20), which the benchmark never reaches.

The formats, as train_gpt2.c reads them (llm.c commit f1e2ace, May 2025):
- model (`gpt2_build_from_checkpoint`): 256 int32 — magic 20240326, version 3, max_seq_len,
  vocab_size, num_layers, num_heads, channels, padded_vocab_size, zeros — then every parameter
  as float32, in `fill_in_parameter_sizes`' order: wte [Vp, C], wpe [maxT, C], ln1w [L, C],
  ln1b [L, C], qkvw [L, 3C, C], qkvb [L, 3C], attprojw [L, C, C], attprojb [L, C], ln2w [L, C],
  ln2b [L, C], fcw [L, 4C, C], fcb [L, 4C], fcprojw [L, C, 4C], fcprojb [L, C], lnfw [C], lnfb [C].
- tokens (`dataloader_load_shard_`): 256 int32 — magic 20240520, version 1, token count, zeros —
  then the tokens as uint16.

Weights as transformers' `_init_weights` and our `from_scratch`: matrices and embeddings
N(0, 0.02²), LayerNorm scales 1, biases 0; the padded vocabulary rows (50257..50304) 0, as llm.c's
own train_gpt2.py writes them.

    .cache/venv/bin/python scripts/reference/llmc_checkpoint.py OUT [--seed 0]
"""
import argparse
import os

import numpy as np

MODEL_MAGIC, MODEL_VERSION = 20240326, 3
DATA_MAGIC, DATA_VERSION = 20240520, 1
MAX_T, V, VP, L, NH, C = 1024, 50257, 50304, 12, 12, 768
B, T = 4, 64  # train_gpt2.c's main()


def header(*values):
    h = np.zeros(256, dtype=np.int32)
    h[: len(values)] = values
    return h.tobytes()


def write_model(path, rng):
    normal = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
    ones = lambda *shape: np.ones(shape, dtype=np.float32)
    zeros = lambda *shape: np.zeros(shape, dtype=np.float32)
    wte = zeros(VP, C)
    wte[:V] = normal(V, C)
    tensors = [
        wte, normal(MAX_T, C),
        ones(L, C), zeros(L, C),              # ln1
        normal(L, 3 * C, C), zeros(L, 3 * C),  # qkv
        normal(L, C, C), zeros(L, C),         # attention projection
        ones(L, C), zeros(L, C),              # ln2
        normal(L, 4 * C, C), zeros(L, 4 * C),  # fc
        normal(L, C, 4 * C), zeros(L, C),     # fc projection
        ones(C), zeros(C),                    # final LayerNorm
    ]
    with open(path, "wb") as f:
        f.write(header(MODEL_MAGIC, MODEL_VERSION, MAX_T, V, L, NH, C, VP))
        for t in tensors:
            f.write(np.ascontiguousarray(t, dtype=np.float32).tobytes())
    return sum(t.size for t in tensors)


def write_tokens(path, count, rng):
    with open(path, "wb") as f:
        f.write(header(DATA_MAGIC, DATA_VERSION, count))
        f.write(rng.integers(0, V, size=count, dtype=np.uint16).tobytes())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = os.path.join(args.out, "dev", "data", "tinyshakespeare")
    os.makedirs(data, exist_ok=True)
    n = write_model(os.path.join(args.out, "gpt2_124M.bin"), rng)
    # The train loader shuffles batches within the file; 64 batches outlast any run. The val
    # loader reads 5 batches before steps 0, 10, 20, …; each needs B·T + 1 tokens.
    write_tokens(os.path.join(data, "tiny_shakespeare_train.bin"), 64 * B * T + 1, rng)
    write_tokens(os.path.join(data, "tiny_shakespeare_val.bin"), 8 * B * T + 1, rng)
    print(f"llm.c files in {args.out}: {n} parameters (vocabulary padded to {VP})")


if __name__ == "__main__":
    main()
