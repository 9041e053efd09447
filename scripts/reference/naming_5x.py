#!/usr/bin/env python3
"""Compare what transformers 4.57.1 and 5.25.0 write for every family the fixtures cover:
tensor names and shapes in model.safetensors, config.json and generation_config.json, the
ViT preprocessor_config.json, and whether each version loads the other's files. The
findings are written up in scripts/reference/naming-5x.md.

Every model is the tiny config of the sibling fixture script (vit.py's `small`, gpt2.py's
`tiny` and `odd`, llama.py's four, neox.py's, bloom.py's, seq2seq.py's `t5`, `t5_tied`,
`bart`, reformer.py's two) or, for BERT, a MiniLM-shaped BertModel; weights are random
(every parameter and persistent float buffer redrawn, so no two tensors are equal and a
tensor can be recognised by its bytes).

transformers 5.x keeps new module names in memory (e.g. ViT's `vit.layers.{i}.attention.q_proj`)
and `save_pretrained` by default writes the old (4.x) names back through its conversion
mapping (`save_original_format=True`); with `save_original_format=False` -- and with any
writer of `model.state_dict()` -- the new names reach the file. All three are dumped here:
`default`, `native`, and `resaved` (the native directory loaded by from_pretrained and saved
again with the defaults: the reverse mapping is the one recorded at load, empty for a file that
already had the new names, so they stay).

    # 1. dump what each version writes (models saved under DIR/<version>/<case>/<how>/)
    .cache/venv/bin/python scripts/reference/naming_5x.py dump --dir /tmp/naming
    PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/naming_5x.py dump --dir /tmp/naming
    # 2. load each version's files with the other version (and itself)
    .cache/venv/bin/python scripts/reference/naming_5x.py crossload --dir /tmp/naming
    PYTHONPATH=.cache/reference5 .cache/venv/bin/python scripts/reference/naming_5x.py crossload --dir /tmp/naming
    # 3. the report (any Python with the standard library)
    python3 scripts/reference/naming_5x.py diff --dir /tmp/naming > /tmp/naming/report.md

(`bash scripts/setup-reference5.sh` makes .cache/reference5.)
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import hashlib
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent


def version_tag(v):
    return "v" + v.split(".")[0]


# ----------------------------------------------------------------------------- the cases

def cases():
    """name -> (family, model class, config, forward inputs). Imported lazily: `diff` runs
    without torch."""
    sys.path.insert(0, str(HERE))
    import torch
    import transformers as tf

    import bloom
    import gpt2
    import llama
    import neox
    import reformer
    import seq2seq
    import vit

    ids = lambda n, v, seed: torch.randint(3, v, (1, n), generator=torch.Generator().manual_seed(seed))

    def text(v, n=9):
        return lambda: {"input_ids": ids(n, v, 5)}

    def s2s(v):
        return lambda: {"input_ids": ids(11, v, 5), "decoder_input_ids": ids(6, v, 6)}

    def pixels(cfg):
        return lambda: {"pixel_values": torch.rand((1, cfg.num_channels, cfg.image_size, cfg.image_size),
                                                   generator=torch.Generator().manual_seed(5))}

    out = {}
    # BERT / MiniLM shaped (all-MiniLM-L6-v2 is a BertModel with its pooler)
    bert_cfg = tf.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=48, hidden_act="gelu", max_position_embeddings=64,
                             type_vocab_size=2, layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    out["bert"] = ("bert", tf.BertModel, bert_cfg, text(96))
    vit_cfg = vit.make_config(vit.CONFIGS["small"][0])
    out["vit"] = ("vit", tf.ViTForImageClassification, vit_cfg, pixels(vit_cfg))
    out["vit_bare"] = ("vit", tf.ViTModel, vit.make_config(vit.CONFIGS["small"][0]), pixels(vit_cfg))
    for name in ("tiny", "odd"):
        cfg = gpt2.make_config(gpt2.CONFIGS[name][0])
        out[f"gpt2_{name}"] = ("gpt2", tf.GPT2LMHeadModel, cfg, text(cfg.vocab_size))
    out["gpt2_bare"] = ("gpt2", tf.GPT2Model, gpt2.make_config(gpt2.CONFIGS["tiny"][0]), text(512))
    for name, spec in llama.CONFIGS.items():
        cfg = llama.make_config(spec)
        out[name] = ("llama", llama.CLASSES[spec["cls"]][1], cfg, text(cfg.vocab_size))
    out["neox"] = ("neox", tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(**neox.CONFIG), text(320))
    out["neox_bare"] = ("neox", tf.GPTNeoXModel, tf.GPTNeoXConfig(**neox.CONFIG), text(320))
    out["bloom"] = ("bloom", tf.BloomForCausalLM, tf.BloomConfig(**bloom.CONFIG), text(320))
    out["bloom_bare"] = ("bloom", tf.BloomModel, tf.BloomConfig(**bloom.CONFIG), text(320))
    for name in ("t5", "t5_tied"):
        out[name] = ("t5", tf.T5ForConditionalGeneration, tf.T5Config(**seq2seq.CONFIGS[name]["config"]), s2s(96))
    out["t5_encoder"] = ("t5", tf.T5EncoderModel, tf.T5Config(**seq2seq.CONFIGS["t5"]["config"]), text(96))
    out["bart"] = ("bart", tf.BartForConditionalGeneration, tf.BartConfig(**seq2seq.CONFIGS["bart"]["config"]),
                   s2s(120))
    for name, spec in reformer.VARIANTS.items():
        # 32 tokens: two LSH chunks, so hashing runs; its rotations come from the global RNG
        # (seeded before every forward).
        out[f"reformer_{name}"] = ("reformer", spec["model_class"], tf.ReformerConfig(**spec["config"]),
                                   text(320, 32))
    return out


# ----------------------------------------------------------------------------- helpers

def tensor_digest(t):
    import torch
    return hashlib.sha256(t.detach().contiguous().to(torch.float32).numpy().tobytes()).hexdigest()[:16]


def read_dir(d):
    """Names, shapes, dtypes and digests of model.safetensors; the JSON files beside it."""
    from safetensors import safe_open
    d = pathlib.Path(d)
    doc = {"files": sorted(p.name for p in d.iterdir())}
    with safe_open(str(d / "model.safetensors"), framework="pt") as f:
        doc["metadata"] = f.metadata()
        doc["tensors"] = {k: {"shape": list(f.get_slice(k).get_shape()),
                              "dtype": str(f.get_slice(k).get_dtype()),
                              "digest": tensor_digest(f.get_tensor(k))} for k in f.keys()}
    for name in ("config.json", "generation_config.json", "preprocessor_config.json"):
        if (d / name).exists():
            doc[name] = json.loads((d / name).read_text())
    return doc


def _torch():
    import torch
    return torch


def randomise(model, seed):
    """Every parameter (tied ones once) and persistent float buffer ~ N(0, 0.2) + 1 for norm
    weights, in sorted-name order; distinct values everywhere."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    params = list(model.named_parameters(remove_duplicate=False))
    persistent = set(model.state_dict())
    bufs = [(n, b) for n, b in model.named_buffers(remove_duplicate=False)
            if n in persistent and b.is_floating_point()]
    with torch.no_grad():
        for name, p in sorted(params + bufs, key=lambda t: t[0]):
            if p.data_ptr() in seen:
                continue
            seen.add(p.data_ptr())
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            norm = re.search(r"(norm|ln_|layernorm|LayerNorm)", name) and name.endswith("weight")
            p.copy_((1.0 + 0.1 * noise) if norm else 0.2 * noise)


def forward(model, inputs):
    torch = _torch()
    torch.manual_seed(1234)  # the Reformer's LSH rotations
    with torch.inference_mode():
        out = model(**inputs)
    t = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    return t.float()


def tied_groups(model):
    """Groups of parameter names that are one tensor (ties) in memory."""
    by_ptr = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_ptr.setdefault(p.data_ptr(), []).append(n)
    return sorted(sorted(g) for g in by_ptr.values() if len(g) > 1)


def conversion_rules(model):
    """transformers 5.x: the conversion rules get_model_conversion_mapping finds for `model`."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
    except ImportError:
        return None
    rules = []
    for t in get_model_conversion_mapping(model, add_legacy=False):
        rules.append({
            "kind": type(t).__name__,
            "source": list(getattr(t, "source_patterns", [])),
            "target": list(getattr(t, "target_patterns", [])),
            "operations": [type(o).__name__ for o in getattr(t, "operations", []) or []],
            "scope_prefix": getattr(t, "scope_prefix", None),
        })
    return rules


def save_vit_processor(out_dir):
    import vit
    from transformers import ViTImageProcessor
    proc_kwargs = vit.CONFIGS["small"][1]
    try:
        proc = vit.make_processor(32, proc_kwargs)
    except Exception as e:  # noqa: BLE001 -- reported
        return f"{type(e).__name__}: {e}"
    proc.save_pretrained(out_dir)
    return type(proc).__name__ + (" (ViTImageProcessor)" if isinstance(proc, ViTImageProcessor) else "")


# ----------------------------------------------------------------------------- commands

def cmd_dump(args):
    torch = _torch()
    import transformers
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    v = transformers.__version__
    root = pathlib.Path(args.dir) / version_tag(v)
    root.mkdir(parents=True, exist_ok=True)
    summary = {"transformers": v, "torch": torch.__version__, "cases": {}}
    for name, (family, cls, cfg, inputs) in cases().items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = cls(cfg).eval()
        if hasattr(model, "set_attn_implementation"):
            try:
                model.set_attn_implementation("eager")
            except Exception:  # noqa: BLE001 -- models without a choice
                pass
        randomise(model, 7)
        x = inputs()
        y = forward(model, x)
        case = {"family": family, "class": cls.__name__,
                "memory_names": {n: list(p.shape) for n, p in model.named_parameters(remove_duplicate=False)},
                "state_dict": {k: list(t.shape) for k, t in model.state_dict().items()},
                "tied": tied_groups(model),
                "config_attrs": {k: getattr(model.config, k) for k in
                                 ("tie_word_embeddings", "scale_decoder_outputs", "tie_encoder_decoder")
                                 if hasattr(model.config, k)},
                "output_shape": list(y.shape),
                "output": y.flatten()[:4096].tolist(),
                "rules": conversion_rules(model),
                "saved": {}}
        hows = {"default": {}}
        if int(v.split(".")[0]) >= 5:
            hows["native"] = {"save_original_format": False}
            hows["resaved"] = {}  # the native directory loaded, then saved with the defaults
        for how, kw in hows.items():
            d = root / name / how
            d.mkdir(parents=True, exist_ok=True)
            for f in d.iterdir():
                f.unlink()
            source = cls.from_pretrained(root / name / "native") if how == "resaved" else model
            source.save_pretrained(d, **kw)
            if family == "vit" and how == "default":
                case["processor"] = save_vit_processor(d)
            case["saved"][how] = read_dir(d)
        summary["cases"][name] = case
        print(f"{v} {name}: {len(case['saved']['default']['tensors'])} tensors"
              + (f", native {len(case['saved']['native']['tensors'])}" if "native" in case["saved"] else ""),
              file=sys.stderr)
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")


def cmd_crossload(args):
    """Load every saved directory (both versions, default and native) with this version's
    class; record loading info and the output difference to the writer's own output."""
    torch = _torch()
    import transformers
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    v = transformers.__version__
    base = pathlib.Path(args.dir)
    mine = cases()
    result = {"transformers": v, "loads": {}}
    for summary_path in sorted(base.glob("v*/summary.json")):
        writer = json.loads(summary_path.read_text())
        for name, case in writer["cases"].items():
            if name not in mine or (args.only and name not in args.only):
                continue
            family, cls, _, inputs = mine[name]
            for how in case["saved"]:
                d = summary_path.parent / name / how
                key = f"{version_tag(writer['transformers'])}/{name}/{how}"
                entry = {}
                try:
                    model, info = cls.from_pretrained(d, output_loading_info=True, torch_dtype=torch.float32)
                    model.eval()
                    if hasattr(model, "set_attn_implementation"):
                        try:
                            model.set_attn_implementation("eager")
                        except Exception:  # noqa: BLE001
                            pass
                    entry["loading_info"] = {k: sorted(map(str, val)) for k, val in info.items() if val}
                    y = forward(model, inputs()).flatten()[:4096]
                    ref = torch.tensor(case["output"])
                    entry["max_abs_output_diff"] = float((y - ref).abs().max())
                    entry["config_attrs"] = {k: getattr(model.config, k) for k in
                                             ("tie_word_embeddings", "scale_decoder_outputs", "tie_encoder_decoder")
                                             if hasattr(model.config, k)}
                    entry["tied"] = tied_groups(model)
                except Exception as e:  # noqa: BLE001 -- reported
                    entry["error"] = f"{type(e).__name__}: {str(e)[:500]}"
                result["loads"][key] = entry
                print(f"{v} loads {key}: " + (entry.get("error") or
                      f"diff {entry['max_abs_output_diff']:.3g} {entry['loading_info'] or ''}"), file=sys.stderr)
    (base / f"crossload-{version_tag(v)}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")


def config_diff(a, b):
    ignore = {"transformers_version"}
    ka, kb = set(a) - ignore, set(b) - ignore
    return {
        "removed": {k: a[k] for k in sorted(ka - kb)},
        "added": {k: b[k] for k in sorted(kb - ka)},
        "changed": {k: [a[k], b[k]] for k in sorted(ka & kb) if a[k] != b[k]},
    }


def generalise(name):
    return re.sub(r"\.\d+\.", ".{i}.", name)


def cmd_diff(args):
    base = pathlib.Path(args.dir)
    old = json.loads((base / "v4" / "summary.json").read_text())
    new = json.loads((base / "v5" / "summary.json").read_text())
    loads = {}
    for p in sorted(base.glob("crossload-v*.json")):
        c = json.loads(p.read_text())
        loads[c["transformers"]] = c["loads"]
    w = print
    w(f"# transformers {old['transformers']} vs {new['transformers']}: what save_pretrained writes\n")
    for name, a in old["cases"].items():
        b = new["cases"][name]
        w(f"## {name} ({a['class']})\n")
        ta = a["saved"]["default"]["tensors"]
        for how in ("default", "native", "resaved"):
            tb = b["saved"][how]["tensors"]
            same = (set(ta) == set(tb) and all(ta[k]["shape"] == tb[k]["shape"] for k in ta))
            w(f"- 5.x `{how}` file vs 4.57 file: " + ("same names and shapes" if same else "DIFFERENT"))
            if not same:
                # old -> new, matched by the bytes of 5.x's own default save (same model)
                dflt = b["saved"]["default"]["tensors"]
                by_digest = {}
                for k, t in tb.items():
                    by_digest.setdefault(t["digest"], []).append(k)
                pairs, unmatched = {}, []
                for k, t in dflt.items():
                    hit = by_digest.get(t["digest"])
                    if hit:
                        for h in hit:
                            pairs.setdefault(generalise(k), set()).add(generalise(h))
                    else:
                        unmatched.append(k)
                w("  - old name (4.57 and 5.x default) -> new name (5.x native), per module:")
                for k in sorted(pairs):
                    tgt = sorted(pairs[k])
                    if tgt != [k]:
                        w(f"    - `{k}` -> " + ", ".join(f"`{t}`" for t in tgt))
                if unmatched:
                    w(f"  - default tensors with no byte-equal native tensor: {unmatched}")
                extra = sorted(set(tb) - {h for hs in by_digest.values() for h in hs if any(
                    dflt[k]['digest'] == tb[h]['digest'] for k in dflt)})
                if extra:
                    w(f"  - native tensors with no byte-equal default tensor: {extra}")
                only_old = sorted(dict.fromkeys(generalise(k) for k in set(ta) - set(tb)))
                only_new = sorted(dict.fromkeys(generalise(k) for k in set(tb) - set(ta)))
                w(f"  - only in 4.57: {only_old}; only in 5.x {how}: {only_new}")
                for k in set(ta) & set(tb):
                    if ta[k]["shape"] != tb[k]["shape"]:
                        w(f"  - shape of `{k}`: {ta[k]['shape']} -> {tb[k]['shape']}")
        for how in ("default", "native"):
            if b["saved"][how]["metadata"] != a["saved"]["default"]["metadata"]:
                w(f"- safetensors metadata ({how}): {a['saved']['default']['metadata']} -> {b['saved'][how]['metadata']}")
        w(f"- files: 4.57 {a['saved']['default']['files']}; 5.x {b['saved']['default']['files']}")
        for fname in ("config.json", "generation_config.json", "preprocessor_config.json"):
            ca, cb = a["saved"]["default"].get(fname), b["saved"]["default"].get(fname)
            if ca is None and cb is None:
                continue
            if ca is None or cb is None:
                w(f"- {fname}: 4.57 {'present' if ca else 'absent'}, 5.x {'present' if cb else 'absent'}")
                continue
            d = config_diff(ca, cb)
            if any(d.values()):
                w(f"- {fname}: removed {json.dumps(d['removed'])}; added {json.dumps(d['added'])}; "
                  f"changed {json.dumps(d['changed'])}")
            else:
                w(f"- {fname}: same keys and values")
            if fname == "config.json":
                cn = b["saved"]["native"].get(fname)
                if cn != cb:
                    w(f"  - native config.json differs from default: {json.dumps(config_diff(cb, cn))}")
        if "processor" in a or "processor" in b:
            w(f"- image processor class: 4.57 {a.get('processor')}; 5.x {b.get('processor')}")
        if a["config_attrs"] != b["config_attrs"]:
            w(f"- config attributes in memory: 4.57 {a['config_attrs']}; 5.x {b['config_attrs']}")
        if a["tied"] != b["tied"]:
            w(f"- ties in memory: 4.57 {a['tied']}; 5.x {b['tied']}")
        if [generalise(k) for k in a["memory_names"]] != [generalise(k) for k in b["memory_names"]]:
            w(f"- module (parameter) names in memory differ: 5.x " +
              ", ".join(f"`{k}`" for k in dict.fromkeys(generalise(k) for k in b["memory_names"])))
        rules = [r for r in b["rules"] or []]
        if rules:
            w("- 5.x conversion rules: " + "; ".join(
                f"{r['kind']} {r['source']} -> {r['target']}" + (f" ops {r['operations']}" if r['operations'] else "")
                + (f" scope `{r['scope_prefix']}`" if r['scope_prefix'] else "") for r in rules))
        try:
            import math
            diff_out = max(abs(x - y) for x, y in zip(a["output"], b["output"]))
        except ValueError:
            diff_out = math.nan
        w(f"- same random init, output of 4.57 vs 5.x in memory: max |diff| {diff_out:.3g} "
          "(names differ -> sorted-name init differs -> a difference says nothing)")
        for reader, lmap in loads.items():
            for key, e in lmap.items():
                if f"/{name}/" not in key:
                    continue
                if "error" in e:
                    w(f"- {reader} loading {key}: ERROR {e['error']}")
                else:
                    info = {k: v for k, v in e["loading_info"].items()}
                    w(f"- {reader} loading {key}: max |output diff| {e['max_abs_output_diff']:.3g}"
                      + (f"; {json.dumps(info)}" if info else "")
                      + (f"; config {e['config_attrs']}" if e["config_attrs"] else ""))
        w("")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("dump", "crossload", "diff"):
        p = sub.add_parser(c)
        p.add_argument("--dir", required=True)
        p.add_argument("--only", action="append")
    args = ap.parse_args()
    {"dump": cmd_dump, "crossload": cmd_crossload, "diff": cmd_diff}[args.cmd](args)


if __name__ == "__main__":
    main()
