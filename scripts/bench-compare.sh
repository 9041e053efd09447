#!/usr/bin/env bash
# Compare our all-MiniLM-L6-v2 forward pass with PyTorch on the same inputs
# (batch 1 x 128 and 32 x 128 tokens, tokenisation excluded) at the same
# thread count, and print median times and the ratio ours/torch.
#
#   THREADS=2 bash scripts/bench-compare.sh      # THREADS defaults to 2
#   SKIP_RUST=1 bash scripts/bench-compare.sh    # PyTorch only (ours shown as -)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

THREADS="${THREADS:-2}"
export THREADS
WORKLOADS=(1x128 32x128)
MODEL_DIR="$ROOT/.cache/models/all-MiniLM-L6-v2"
export MINILM_DIR="${MINILM_DIR:-$MODEL_DIR}"

bash scripts/setup-reference.sh >&2
PY="$ROOT/.cache/venv/bin/python"

if [ "${SKIP_RUST:-0}" != "1" ]; then
    echo "== cargo bench --bench minilm (THREADS=$THREADS)" >&2
    for w in "${WORKLOADS[@]}"; do
        rm -f "target/criterion/minilm_forward/$w/new/estimates.json"
    done
    cargo bench --bench minilm -- --noplot >&2
fi

echo "== PyTorch (threads=$THREADS)" >&2
torch_out="$("$PY" scripts/reference/minilm_bench.py --model-dir "$MINILM_DIR" \
    --threads "$THREADS" --warmup 3 --runs 10)"
echo "$torch_out" >&2

TORCH_OUT="$torch_out" python3 - "$THREADS" "${WORKLOADS[@]}" <<'PY'
import json, os, re, sys

threads, workloads = sys.argv[1], sys.argv[2:]
torch_ms = {}
for line in os.environ["TORCH_OUT"].splitlines():
    m = re.match(r"torch (\S+) median_ms=([0-9.eE+-]+)$", line.strip())
    if m:
        torch_ms[m.group(1)] = float(m.group(2))

def ours(w):
    path = f"target/criterion/minilm_forward/{w}/new/estimates.json"
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e6  # ns -> ms
    except FileNotFoundError:
        return None

def fmt(x, width):
    return f"{'-':>{width}}" if x is None else f"{x:{width}.3f}"

print(f"all-MiniLM-L6-v2 forward, median of runs, threads={threads}")
print(f"{'workload':<10} {'ours ms':>10} {'torch ms':>10} {'ours/torch':>11}")
for w in workloads:
    o, t = ours(w), torch_ms.get(w)
    r = o / t if o is not None and t else None
    print(f"{w:<10} {fmt(o, 10)} {fmt(t, 10)} {fmt(r, 11)}")
PY
