#!/usr/bin/env python3
"""Write tests/fixtures/recurrent/<case>/: torch.nn.LSTM and torch.nn.GRU (batch_first=True)
forward and backward, for transformer-runtime/tests/recurrent.rs.

Each case builds the module with torch's default initialisation from a fixed seed, draws a
float32 input (and, where the case has them, initial states), then runs the module in float64 on
those exact values (so the reference carries no rounding of its own) and backpropagates

    loss = sum(output * R) + sum(h_n * S) [+ sum(c_n * T) for an LSTM]

with fixed random R, S, T. Shapes are odd on purpose (input 5, hidden 7, batch 3, time 11).

Per case it writes
    model.safetensors      the module's state_dict exactly as torch names it (float32)
    reference.safetensors  input, h0, c0, R, S, T, output, h_n, c_n, loss, and the gradients
                           grad.input, grad.h0, grad.c0, grad.<parameter name> (float32)
    config.json            the module's arguments and the shapes

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/recurrent.py
"""
import json
import pathlib

import torch
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "recurrent"

INPUT, HIDDEN, BATCH, TIME = 5, 7, 3, 11

CASES = [
    # name, kind, layers, bidirectional, initial states given
    ("lstm_1layer", "lstm", 1, False, False),
    ("lstm_2layer_bidirectional_h0", "lstm", 2, True, True),
    ("gru_1layer", "gru", 1, False, False),
    ("gru_2layer_bidirectional_h0", "gru", 2, True, True),
]


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def write_case(index, name, kind, layers, bidirectional, initial):
    seed = 20261220 + index
    torch.manual_seed(seed)
    module_class = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    module = module_class(INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    state_dict = {k: f32(v) for k, v in module.state_dict().items()}
    module = module.double()

    gen = torch.Generator().manual_seed(seed)
    directions = 2 if bidirectional else 1

    def draw(*shape):
        """float32 values (what the Rust side holds), promoted to float64."""
        return torch.randn(*shape, generator=gen, dtype=torch.float32).double()

    states_shape = (layers * directions, BATCH, HIDDEN)
    x = draw(BATCH, TIME, INPUT).requires_grad_(True)
    h0 = draw(*states_shape).requires_grad_(True) if initial else None
    c0 = draw(*states_shape).requires_grad_(True) if initial and kind == "lstm" else None
    r = draw(BATCH, TIME, directions * HIDDEN)
    s = draw(*states_shape)
    t = draw(*states_shape)

    if kind == "lstm":
        output, (h_n, c_n) = module(x, (h0, c0) if initial else None)
        loss = (output * r).sum() + (h_n * s).sum() + (c_n * t).sum()
    else:
        output, h_n = module(x, h0)
        c_n = None
        loss = (output * r).sum() + (h_n * s).sum()
    loss.backward()

    reference = {
        "input": f32(x),
        "R": f32(r),
        "S": f32(s),
        "output": f32(output),
        "h_n": f32(h_n),
        "loss": f32(loss.reshape(1)),
        "grad.input": f32(x.grad),
    }
    if kind == "lstm":
        reference.update({"T": f32(t), "c_n": f32(c_n)})
    if h0 is not None:
        reference.update({"h0": f32(h0), "grad.h0": f32(h0.grad)})
    if c0 is not None:
        reference.update({"c0": f32(c0), "grad.c0": f32(c0.grad)})
    for pname, p in module.named_parameters():
        reference[f"grad.{pname}"] = f32(p.grad)

    directory = OUT / name
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, directory / "model.safetensors")
    save_file(reference, directory / "reference.safetensors")
    config = {
        "kind": kind,
        "input_size": INPUT,
        "hidden_size": HIDDEN,
        "num_layers": layers,
        "bidirectional": bidirectional,
        "batch_first": True,
        "batch": BATCH,
        "time": TIME,
        "initial_states": initial,
        "seed": seed,
        "torch": torch.__version__,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{name}: loss {loss.item():.6f}, {len(state_dict)} parameters -> {directory.relative_to(ROOT)}")


def main():
    torch.set_num_threads(1)
    for index, case in enumerate(CASES):
        write_case(index, *case)


if __name__ == "__main__":
    main()
