"""What the reference scripts share for their `--transformers5` mode: fixtures saved by
transformers 5.x (scripts/setup-reference5.sh) next to the 4.57 ones, with the same weights.

A script run with `--transformers5` writes `<variant>_v5/` beside `<variant>/`:
  - its model is built with the 4.57 variant's config and seed, and every parameter is drawn
    in the order and by the rule of its 4.x checkpoint name (`checkpoint_names`), so the
    weights are the 4.57 fixture's, whatever transformers 5.x calls the modules in memory;
  - it is saved by transformers 5.x, with `save_original_format=False` where the family's
    names changed (the new names reach the file: what a 5.x checkpoint written that way, or
    from `model.state_dict()`, holds), else with plain `save_pretrained`;
  - reference.json is computed by transformers 5.x from the directory it wrote, and records
    how the file relates to the 4.57 fixture (`v4_fixture`: every tensor equal, by name map).

Without the flag a script refuses to run under transformers 5.x (the 4.57 fixtures stay
4.57's), and with it under 4.x.
"""
import json
import pathlib
import sys

import torch
import transformers
from safetensors import safe_open

ROOT = pathlib.Path(__file__).resolve().parents[2]
MAJOR = int(transformers.__version__.split(".")[0])
SUFFIX = "_v5"


def add_flag(parser):
    parser.add_argument(
        "--transformers5", action="store_true",
        help="write <variant>_v5/ with transformers 5.x (run under scripts/setup-reference5.sh's "
             "overlay: PYTHONPATH=.cache/reference5)")


def require(flag):
    """The flag and the transformers in use agree (see the module doc)."""
    if flag and MAJOR < 5:
        sys.exit(f"--transformers5 needs transformers 5.x, this is {transformers.__version__}: run "
                 "`bash scripts/setup-reference5.sh` and PYTHONPATH=.cache/reference5 .cache/venv/bin/python …")
    if not flag and MAJOR >= 5:
        sys.exit(f"transformers {transformers.__version__}: the 4.57 fixtures are written by the "
                 "4.57 venv (.cache/venv/bin/python, no PYTHONPATH); pass --transformers5 for _v5 variants")


def variant(name, flag):
    return name + SUFFIX if flag else name


def checkpoint_names(model):
    """In-memory parameter name -> the name a 4.x checkpoint (and 5.x's default
    save_pretrained) gives it, through transformers' own reverse conversion mapping
    (identity under 4.x and for families without one). Tied aliases keep their names."""
    names = {n: n for n, _ in model.named_parameters(remove_duplicate=False)}
    if MAJOR < 5:
        return names
    from transformers.core_model_loading import revert_weight_conversion
    # The family's mapping, not the one recorded by from_pretrained (empty when the file
    # already had the new names).
    recorded = model.__dict__.pop("_weight_conversions", None)
    try:
        for n, p in model.named_parameters(remove_duplicate=False):
            reverted = revert_weight_conversion(model, {n: p.detach()})
            assert len(reverted) == 1, (n, list(reverted))
            names[n] = next(iter(reverted))
    finally:
        if recorded is not None:
            model._weight_conversions = recorded
    return names


def save(model, out_dir, native):
    """save_pretrained under 5.x: `native` (new names) or the default (4.x names);
    returns what was passed, for reference.json."""
    kwargs = {"save_original_format": False} if native else {}
    model.save_pretrained(out_dir, **kwargs)
    return {"call": "save_pretrained(dir" + "".join(f", {k}={v}" for k, v in kwargs.items()) + ")",
            "names": "new (5.x) module names" if native else "4.x names (5.x's default reverse mapping)"}


def read_tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def compare_with_v4(v5_file, v4_file, rename, extra=None):
    """How the 5.x file relates to the 4.57 fixture's: `rename` maps each 4.57 name to its
    5.x name (identity for unchanged ones); every mapped tensor must be equal. `extra`:
    names only in the 5.x file, each with a note (checked by the caller). Returns the
    reference.json record."""
    new, old = read_tensors(v5_file), read_tensors(v4_file)
    renamed = {}
    for k, t in old.items():
        k5 = rename(k)
        assert k5 in new, f"{k} (5.x: {k5}) missing from {v5_file}"
        assert new[k5].shape == t.shape and torch.equal(new[k5], t), f"{k} -> {k5} differs"
        if k5 != k:
            renamed[k] = k5
    only_new = sorted(set(new) - {rename(k) for k in old})
    assert sorted(extra or {}) == only_new, (only_new, sorted(extra or {}))
    return {
        "fixture": repo_path(pathlib.Path(v4_file).parent),
        "tensors_equal": f"all {len(old)} tensors of the 4.57 fixture, bit for bit, under the names below",
        "renamed": renamed,
        "only_in_v5": extra or {},
    }


def repo_path(path):
    """`path` relative to the repository when inside it."""
    path = pathlib.Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def max_abs_diff(a, b):
    """Largest |a - b| over (possibly ragged) nested lists of numbers of the same shape."""
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), "shapes differ"
        return max((max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return abs(float(a) - float(b))


def _get(doc, path):
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def record(model, out_dir, v4_dir, saved_by, doc, equal=(), close=(), extra=None, rename=None):
    """reference.json's account of a _v5 variant: how it was saved (`saved_by`), its
    tensors against the 4.57 fixture's (renamed by transformers' own mapping, all equal),
    which inputs and greedy tokens are the 4.57 reference's (`equal`: dotted paths into
    reference.json) and how far its outputs are from the 4.57 reference's (`close`).
    `rename` (4.57 name -> 5.x name) overrides transformers' mapping; `extra` lists the
    names only the 5.x file has, each with a note."""
    to_new = {old: new for new, old in checkpoint_names(model).items()}
    rename = rename or (lambda k: to_new.get(k, k))
    v4_doc = json.loads((pathlib.Path(v4_dir) / "reference.json").read_text())
    out = {
        "saved_by": saved_by,
        "v4_fixture": {
            **compare_with_v4(pathlib.Path(out_dir) / "model.safetensors",
                              pathlib.Path(v4_dir) / "model.safetensors",
                              rename, extra),
            "equal_to_v4_reference": {k: _get(doc, k) == _get(v4_doc, k) for k in equal},
            "max_abs_diff_vs_v4_reference": {k: max_abs_diff(_get(doc, k), _get(v4_doc, k))
                                             for k in close},
        },
    }
    bad = [k for k, ok in out["v4_fixture"]["equal_to_v4_reference"].items() if not ok]
    assert not bad, f"differs from the 4.57 reference: {bad}"
    worst = max(out["v4_fixture"]["max_abs_diff_vs_v4_reference"].values(), default=0.0)
    assert worst < 1e-3, out["v4_fixture"]["max_abs_diff_vs_v4_reference"]
    return out
