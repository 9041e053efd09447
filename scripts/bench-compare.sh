#!/usr/bin/env bash
# The benchmark harness in one command (docs/BENCHMARKS.md): on a fresh machine it
#   1. creates .cache/venv with the pinned reference peers (scripts/setup-reference.sh:
#      torch, transformers, sentence-transformers) and fetches all-MiniLM-L6-v2,
#   2. adds the pinned onnxruntime/onnx (scripts/reference/requirements-bench.txt; idempotent),
#   3. builds ours once (cargo build --release --example bench_workload),
#   4. exports MiniLM and GPT-2 prefill to ONNX in .cache/onnx/ and verifies onnxruntime against
#      PyTorch within 1e-4 (fails loudly otherwise),
#   5. runs scripts/harness/run.py: FMA-peak and bandwidth microbenchmarks, a per-op breakdown of
#      ours, then ours vs PyTorch vs onnxruntime in alternating rounds at 1 and 2 threads, and
#      prints a Markdown table (also target/harness/results.{md,json}).
#
#   bash scripts/bench-compare.sh                                  # everything (~20 min on 2 cores)
#   BENCH_WORKLOADS=minilm_1x128,minilm_32x128 BENCH_THREADS=1 BENCH_ROUNDS=2 bash scripts/bench-compare.sh
#   BENCH_QUICK=1 BENCH_PARTS=0 bash scripts/bench-compare.sh      # smoke test
# Knobs: BENCH_WORKLOADS (minilm_1x128, minilm_32x128, minilm_1x512, gpt2_prefill128,
# gpt2_decode128, long_1024, long_2048, long_4096, t5_encode128, t5_decode32; the t5_* ones are
# ours vs PyTorch only), BENCH_THREADS (default 1,2; THREADS is
# accepted too), BENCH_ROUNDS (3), BENCH_ENGINES (ours,torch,ort), BENCH_PARTS (1),
# BENCH_QUICK (0), BENCH_DEADLINE_S (1260: later rounds are skipped and listed). Extra
# arguments go to run.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -n "${THREADS:-}" ] && [ -z "${BENCH_THREADS:-}" ]; then
    export BENCH_THREADS="$THREADS"
fi

bash scripts/setup-reference.sh >&2
VENV="$ROOT/.cache/venv"
PY="$VENV/bin/python"

REQ="scripts/reference/requirements-bench.txt"
STAMP="$VENV/.requirements-bench.sha256"
want="$(cat scripts/reference/requirements.txt "$REQ" | sha256sum | cut -d' ' -f1)"
if [ "$want" != "$(cat "$STAMP" 2>/dev/null || true)" ]; then
    echo "installing $REQ into $VENV" >&2
    "$PY" -m pip install --disable-pip-version-check -q -r "$REQ"
    echo "$want" > "$STAMP"
fi

echo "== cargo build --release --example bench_workload" >&2
cargo build --release --example bench_workload >&2

echo "== ONNX export + verification" >&2
"$PY" scripts/harness/export_onnx.py

echo "== harness" >&2
exec "$PY" scripts/harness/run.py "$@"
