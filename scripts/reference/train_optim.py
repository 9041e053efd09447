#!/usr/bin/env python3
"""Write tests/fixtures/train/optim/{adamw,schedules}.json: torch.optim.AdamW, clip_grad_norm_ and
transformers' learning-rate schedules, for transformer-runtime/tests/train_optim.rs.

    adamw.json       four float32 parameters of odd sizes (norm.weight [7], proj.weight [5, 3],
                     head.bias [11], ffn.weight [9, 7]) in two parameter groups, a decay group
                     (proj, ffn) and a no-decay group (norm, head),
                     and one seeded random gradient per parameter per step; for each variant, 20
                     optimizer steps of torch.optim.AdamW (single-tensor CPU implementation, the
                     default on CPU) under a LambdaLR schedule:
                       default    torch's defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8),
                                  weight decay 0.01 / 0.0, get_cosine_schedule_with_warmup
                                  (5 warm-up steps of 20), no clipping
                       clipped    the same, with clip_grad_norm_(max_norm=1.0) before every step
                                  (the gradients' scale varies so that some steps clip, some not)
                       custom     lr 3e-3, betas (0.8, 0.95), eps 1e-6, weight decay 0.1 / 0.0,
                                  get_linear_schedule_with_warmup (3 of 20), clipping at 2.0
                     and records the lr each step used, the total norm clip_grad_norm_ returned,
                     the parameters after every step and the moments after the last step.
    schedules.json   base_lr * lambda(step) from LambdaLR with get_linear_schedule_with_warmup,
                     get_cosine_schedule_with_warmup (num_cycles 0.5 and 1.0) and
                     get_constant_schedule_with_warmup, for several (warmup, total) settings, for
                     every step 0..total+5 (past the end, where the cosine rises again): the lr of
                     optimizer step t is base_lr * lambda(t).

Float32 values are written as the Python float of the float32 (exact in JSON and back, even with
serde_json's fast float parser); the float64 learning rates as their repr strings, which Rust's
`str::parse::<f64>` reads back exactly (serde_json without `float_roundtrip` can be one ulp off).

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_optim.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import pathlib

import torch
import transformers
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "train" / "optim"

STEPS = 20
# (name, shape, group): group 0 decays, group 1 does not (norms and biases, as HF's Trainer).
# Tensors of fewer than 16 values take the scalar loop of torch's CPU kernels; ffn.weight (63)
# also takes the AVX2 loop.
PARAMS = [("norm.weight", [7], 1), ("proj.weight", [5, 3], 0), ("head.bias", [11], 1), ("ffn.weight", [9, 7], 0)]

VARIANTS = {
    "default": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=(0.01, 0.0), max_norm=None,
                    schedule=("cosine", 5)),
    "clipped": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=(0.01, 0.0), max_norm=1.0,
                    schedule=("cosine", 5)),
    "custom": dict(lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=(0.1, 0.0), max_norm=2.0,
                   schedule=("linear", 3)),
}


def floats(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def make_schedule(optimizer, kind, warmup, total, num_cycles=0.5):
    if kind == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total, num_cycles=num_cycles)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise ValueError(kind)


def initial_and_grads():
    g = torch.Generator().manual_seed(18)
    init = [torch.randn(shape, generator=g, dtype=torch.float32) for _, shape, _ in PARAMS]
    grads = []
    for step in range(STEPS):
        # Total norm ~ 10 * scale: below 1 (no clipping) on some steps, above 2 on others.
        scale = [0.05, 1.0, 0.3, 2.0][step % 4]
        grads.append([torch.randn(shape, generator=g, dtype=torch.float32) * scale for _, shape, _ in PARAMS])
    return init, grads


def run(variant, init, grads):
    params = [torch.nn.Parameter(p.clone()) for p in init]
    groups = [
        {"params": [p for p, (_, _, grp) in zip(params, PARAMS) if grp == i], "weight_decay": wd}
        for i, wd in enumerate(variant["weight_decay"])
    ]
    opt = torch.optim.AdamW(groups, lr=variant["lr"], betas=variant["betas"], eps=variant["eps"])
    assert opt.defaults["foreach"] is None and opt.defaults["fused"] is None
    kind, warmup = variant["schedule"]
    sched = make_schedule(opt, kind, warmup, STEPS)
    lrs, norms, trajectory = [], [], []
    for step in range(STEPS):
        for p, g in zip(params, grads[step]):
            p.grad = g.clone()
        if variant["max_norm"] is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm=variant["max_norm"])))
        lrs.append(opt.param_groups[0]["lr"])
        assert all(group["lr"] == lrs[-1] for group in opt.param_groups)
        opt.step()
        sched.step()
        trajectory.append({name: floats(p) for p, (name, _, _) in zip(params, PARAMS)})
    state = {
        name: {"exp_avg": floats(opt.state[p]["exp_avg"]), "exp_avg_sq": floats(opt.state[p]["exp_avg_sq"]),
               "step": float(opt.state[p]["step"])}
        for p, (name, _, _) in zip(params, PARAMS)
    }
    return {
        "lr": variant["lr"],
        "betas": list(variant["betas"]),
        "eps": variant["eps"],
        "weight_decay": list(variant["weight_decay"]),
        "max_norm": variant["max_norm"],
        "schedule": {"kind": kind, "warmup": warmup, "total": STEPS},
        "lrs": [repr(lr) for lr in lrs],
        "clip_norms": norms,
        "params": trajectory,
        "state": state,
    }


def adamw_fixture():
    init, grads = initial_and_grads()
    return {
        "torch": torch.__version__,
        "steps": STEPS,
        "params": [{"name": n, "shape": s, "group": grp} for n, s, grp in PARAMS],
        "initial": {n: floats(p) for p, (n, _, _) in zip(init, PARAMS)},
        "grads": [{n: floats(g) for g, (n, _, _) in zip(step, PARAMS)} for step in grads],
        "variants": {name: run(v, init, grads) for name, v in VARIANTS.items()},
    }


def schedules_fixture():
    cases = []
    base_lr = 5e-4
    settings = [(0, 10), (3, 10), (10, 10), (7, 100), (1, 1), (0, 1), (12, 10)]
    for kind, num_cycles in [("linear", None), ("cosine", 0.5), ("cosine", 1.0), ("constant", None)]:
        for warmup, total in settings:
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
            extra = {} if num_cycles is None else {"num_cycles": num_cycles}
            sched = make_schedule(opt, kind, warmup, total, **extra)
            lrs = []
            for _ in range(total + 6):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            cases.append({"kind": kind, "num_cycles": num_cycles, "warmup": warmup, "total": total,
                          "base_lr": base_lr, "lrs": [repr(lr) for lr in lrs]})
    return {"transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, fixture in [("adamw.json", adamw_fixture()), ("schedules.json", schedules_fixture())]:
        path = OUT / name
        path.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
