#!/usr/bin/env bash
# Create the reference Python environment (.cache/venv, PyTorch +
# sentence-transformers, pinned in scripts/reference/requirements.txt) and fetch
# the all-MiniLM-L6-v2 model into .cache/models/. Idempotent; works from any cwd.
#
# Afterwards:
#   .cache/venv/bin/python scripts/reference/minilm.py        # regenerate fixtures
#   .cache/venv/bin/python scripts/reference/minilm_bench.py  # time PyTorch
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV=".cache/venv"
REQ="scripts/reference/requirements.txt"
STAMP="$VENV/.requirements.sha256"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    mkdir -p .cache
    "$PYTHON" -m venv "$VENV"
fi

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "installing $REQ into $VENV (torch is large; this takes a few minutes the first time)" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
    echo "$want" > "$STAMP"
fi
echo "venv: $ROOT/$VENV"

bash "$ROOT/scripts/fetch-model.sh"
