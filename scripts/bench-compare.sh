#!/usr/bin/env bash
# Compare ours with PyTorch on the same inputs at the same thread count, in one
# run, and print median times and the ratio ours/torch:
#   - all-MiniLM-L6-v2 forward (real weights), batch 1 x 128 and 32 x 128 tokens
#     (tokenisation excluded);
#   - a GPT-2-small-shaped decoder (random weights): prefill of 128 tokens, and
#     greedy decoding of 128 new tokens after a 16-token prompt (Hugging Face
#     `generate`);
#   - a ViT-Base/16-shaped classifier (random weights) at batch 1 and 8.
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
    rm -f target/criterion/gpt2_small/*/new/estimates.json
    cargo bench --bench gpt2 -- --noplot >&2
    rm -f target/criterion/vit_base/*/new/estimates.json
    cargo bench --bench vit -- --noplot >&2
fi

echo "== PyTorch (threads=$THREADS)" >&2
torch_out="$("$PY" scripts/reference/minilm_bench.py --model-dir "$MINILM_DIR" \
    --threads "$THREADS" --warmup 3 --runs 10)"
echo "$torch_out" >&2
gpt2_out="$("$PY" scripts/reference/gpt2_bench.py --threads "$THREADS")"
echo "$gpt2_out" >&2
vit_out="$("$PY" scripts/reference/vit_bench.py --threads "$THREADS")"
echo "$vit_out" >&2
torch_out="$torch_out
$gpt2_out
$vit_out"

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

def criterion_ms(group, bench):
    try:
        with open(f"target/criterion/{group}/{bench}/new/estimates.json") as f:
            return json.load(f)["median"]["point_estimate"] / 1e6
    except FileNotFoundError:
        return None

torch_tps = None
for line in os.environ["TORCH_OUT"].splitlines():
    m = re.match(r"torch decode tokens_per_s=([0-9.eE+-]+)$", line.strip())
    if m:
        torch_tps = float(m.group(1))
prefill = criterion_ms("gpt2_small", "prefill_128")
decode = criterion_ms("gpt2_small", "decode_16_plus_128")
ours_tps = 128 / (decode / 1e3) if decode else None
print()
print(f"GPT-2-small shape (random weights), threads={threads}")
print(f"{'workload':<22} {'ours':>10} {'torch':>10} {'ratio':>11}")
t = torch_ms.get("prefill128")
print(f"{'prefill 128 (ms)':<22} {fmt(prefill, 10)} {fmt(t, 10)} {fmt(prefill / t if prefill and t else None, 11)}")
print(f"{'decode 128 (tokens/s)':<22} {fmt(ours_tps, 10)} {fmt(torch_tps, 10)} {fmt(ours_tps / torch_tps if ours_tps and torch_tps else None, 11)}  (ours/torch, higher is better)")

print()
print(f"ViT-Base/16 224² (random weights), threads={threads}")
print(f"{'workload':<10} {'ours ms':>10} {'torch ms':>10} {'ours/torch':>11}")
for w in ["b1", "b8"]:
    o, t = criterion_ms("vit_base", w), torch_ms.get(f"vit_{w}")
    print(f"{w:<10} {fmt(o, 10)} {fmt(t, 10)} {fmt(o / t if o and t else None, 11)}")
PY
