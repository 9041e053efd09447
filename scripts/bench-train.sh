#!/usr/bin/env bash
# Training speed against PyTorch on the same model and batch: examples/train_gpt.rs's byte-level GPT
# (0.84 M parameters, 16 × 128 tokens per step, AdamW, clipping) and the same GPT2LMHeadModel in
# torch (scripts/reference/train_bench.py), alternated in one run at 1 and 2 threads, each
# repeated ROUNDS times; prints tokens/s and the ratio ours / PyTorch (higher is better for us).
#
#   bash scripts/bench-train.sh            # STEPS=30 ROUNDS=3 by default
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS="${STEPS:-30}"
ROUNDS="${ROUNDS:-3}"
TARGET="${CARGO_TARGET_DIR:-target}"
bash scripts/setup-reference.sh >/dev/null
bash scripts/fetch-text.sh >/dev/null
export TRANSFORMERS_VERBOSITY=error
cargo build --release --example train_gpt >/dev/null 2>&1 || cargo build --release --example train_gpt
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
printf '%-8s %-6s %14s %14s %8s\n' threads round ours torch ratio
for threads in 1 2; do
    for round in $(seq "$ROUNDS"); do
        ours=$("$TARGET"/release/examples/train_gpt --steps "$STEPS" --eval-every 0 --threads "$threads" \
            | sed -n 's/^\([0-9.]*\) tokens\/s.*/\1/p')
        torch=$(.cache/venv/bin/python scripts/reference/train_bench.py --steps "$STEPS" --threads "$threads" \
            | sed -n 's/^tokens\/s //p')
        ratio=$(python3 -c "print(f'{$ours / $torch:.2f}')")
        printf '%-8s %-6s %14s %14s %8s\n' "$threads" "$round" "$ours" "$torch" "$ratio"
    done
done
