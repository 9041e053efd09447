#!/usr/bin/env bash
# Make the transformers 5.x reference environment: the packages pinned in
# scripts/reference/requirements-5.txt (transformers 5.25.0 and what it needs
# beyond the 4.57 venv) installed with --no-deps into .cache/reference5, an
# overlay put in front of .cache/venv on PYTHONPATH. The venv's torch is reused,
# so there is no second torch download. Builds .cache/venv first (via
# scripts/setup-reference.sh) if it is missing. Idempotent; works from any cwd.
#
# Afterwards run a reference script under transformers 5.x with
#   bash scripts/setup-reference5.sh --run scripts/reference/vit.py --transformers5
# or by hand
#   PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/vit.py --transformers5
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=".cache/venv"
TARGET=".cache/reference5"
REQ="scripts/reference/requirements-5.txt"
STAMP="$TARGET/.requirements.sha256"

if [ ! -x "$VENV/bin/python" ]; then
    bash "$ROOT/scripts/setup-reference.sh"
fi

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "installing $REQ into $TARGET (over $VENV)" >&2
    rm -rf "$TARGET"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        --no-deps --target "$TARGET" -r "$REQ"
    echo "$want" > "$STAMP"
fi

# The overlay must win over the venv's 4.57 packages, torch must be the venv's, and every
# requirement of the overlay's packages must be met by the two together (--no-deps checks none).
PYTHONPATH="$TARGET" "$VENV/bin/python" - "$TARGET" <<'PY'
import importlib.metadata as md
import sys
import huggingface_hub, tokenizers, torch, transformers
from packaging.requirements import Requirement
assert transformers.__version__ == "5.25.0", transformers.__version__
assert md.version("transformers") == "5.25.0", md.version("transformers")
assert huggingface_hub.__version__ == "2.4.0", huggingface_hub.__version__
assert "/.cache/venv/" in torch.__file__, torch.__file__
unmet = []
for dist in md.distributions(path=[sys.argv[1]]):
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{dist.metadata['Name']} needs {spec}, found {have}")
if unmet:
    sys.exit("reference5: unmet requirements (update requirements-5.txt):\n  " + "\n  ".join(unmet))
print(f"reference5: transformers {transformers.__version__}, torch {torch.__version__} (from the venv)")
PY

if [ "${1:-}" = "--run" ]; then
    shift
    PYTHONPATH="$TARGET" exec "$VENV/bin/python" "$@"
fi
