#!/usr/bin/env python3
"""One benchmark workload of a peer engine (PyTorch or onnxruntime) in this process, printed as one
JSON line; the Python twin of examples/bench_workload.rs (same workloads, same inputs, same
warm-up/timed-run protocol). scripts/harness/run.py starts one process per
(engine, workload, threads, round), so VmHWM is the peak RSS of that one workload.

    .cache/venv/bin/python scripts/harness/peer.py --engine torch --workload minilm_1x128 \\
        --threads 1 --warmup 3 --runs 10

Engines and workloads:
  torch  minilm_{1x128,32x128,1x512}   sentence-transformers SentenceTransformer(model_dir)
                                        forward (transformer + mean pooling + normalize)
         gpt2_prefill128                GPT2LMHeadModel (GPT-2-small shape, random weights, seed 0):
                                        model(ids, use_cache=True, logits_to_keep=1)
         gpt2_decode128                 model.generate(16-token prompt, greedy, 128 new tokens)
         long_{1024,2048,4096}          BertModel (MiniLM dims, max_position_embeddings 4096,
                                        random weights, seed 0, attn_implementation="sdpa",
                                        no pooler): last_hidden_state of one sequence
         t5_encode128                   T5ForConditionalGeneration (t5-small shape, ReLU, tied head,
                                        random weights, seed 0): model.encoder(128 ids)
                                        .last_hidden_state
         t5_decode32                    model.generate(128-token source, greedy, 32 new tokens from
                                        decoder_start_token_id 0): encoder + 32 cached decoder steps
  ort    minilm_*                       .cache/onnx/minilm.onnx (see export_onnx.py)
         gpt2_prefill128                .cache/onnx/gpt2_prefill.onnx
The onnxruntime process does not import torch (its RSS is onnxruntime's alone).
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_DIR = pathlib.Path(os.environ.get("MINILM_DIR", ROOT / ".cache" / "models" / "all-MiniLM-L6-v2"))
ONNX_DIR = ROOT / ".cache" / "onnx"
GPT2_VOCAB = 50257
T5_VOCAB = 32128


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_hwm():
    """After loading: (VmHWM so far, VmRSS now); resets VmHWM (Linux clear_refs 5) so VmHWM at the
    end is the peak while running the workload alone."""
    peak = status_mb("VmHWM")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return peak, status_mb("VmRSS")


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def minilm_ids(batch, seq):
    """Same deterministic ids as examples/bench_workload.rs: [CLS] ... [SEP], no padding."""
    rows = []
    for b in range(batch):
        row = []
        for i in range(seq):
            if i == 0:
                row.append(101)
            elif i == seq - 1:
                row.append(102)
            else:
                row.append(1000 + (i * 7 + b * 13) % 20000)
        rows.append(row)
    return rows


def gpt2_ids(n):
    return [[(i * 7 + 3) % GPT2_VOCAB for i in range(n)]]


def t5_ids(n):
    """Same source ids as examples/bench_workload.rs: GPT-2's spread within t5-small's vocabulary."""
    return [[(i * 7 + 3) % T5_VOCAB for i in range(n)]]


def minilm_shape(workload):
    b, s = workload.split("_")[1].split("x")
    return int(b), int(s)


def time_runs(warmup, runs, fn):
    times = []
    for k in range(warmup + runs):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        if k >= warmup:
            times.append((t1 - t0) * 1e3)
    return times


# ----------------------------------------------------------------------------- torch

def torch_setup(threads):
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import transformers
    transformers.logging.set_verbosity_error()
    return torch


def gpt2_torch_model(torch):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=GPT2_VOCAB, n_positions=1024,
                        bos_token_id=GPT2_VOCAB - 1, eos_token_id=GPT2_VOCAB - 1)
    config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(config).eval().float()
    model.generation_config.eos_token_id = None
    return model


def long_torch_model(torch):
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, hidden_act="gelu", max_position_embeddings=4096,
                        type_vocab_size=2, layer_norm_eps=1e-12)
    config._attn_implementation = "sdpa"
    return BertModel(config, add_pooling_layer=False).eval().float()


def t5_torch_model(torch):
    """t5-small's config.json (the original T5: ReLU feed-forward, tied head), random weights."""
    from transformers import T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    config = T5Config(vocab_size=T5_VOCAB, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                      num_heads=8, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj="relu",
                      tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(config).eval().float()


def run_torch(args):
    torch = torch_setup(args.threads)
    w = args.workload
    info = {}
    with torch.inference_mode():
        if w.startswith("minilm_"):
            from sentence_transformers import SentenceTransformer
            batch, seq = minilm_shape(w)
            model = SentenceTransformer(str(MODEL_DIR), device="cpu").eval().float()
            ids = torch.tensor(minilm_ids(batch, seq), dtype=torch.long)
            feats = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "token_type_ids": torch.zeros_like(ids)}
            out = {}

            def call():
                out["emb"] = model(dict(feats))["sentence_embedding"]
            head = lambda: out["emb"][0, :8].tolist()
        elif w == "gpt2_prefill128":
            model = gpt2_torch_model(torch)
            x = torch.tensor(gpt2_ids(128), dtype=torch.long)
            out = {}

            def call():
                out["logits"] = model(x, use_cache=True, logits_to_keep=1).logits
            head = lambda: out["logits"][0, -1, :4].tolist()
        elif w == "gpt2_decode128":
            model = gpt2_torch_model(torch)
            p = torch.tensor(gpt2_ids(16), dtype=torch.long)
            out = {}

            def call():
                seq = model.generate(p, attention_mask=torch.ones_like(p), do_sample=False, num_beams=1,
                                     max_new_tokens=128, min_new_tokens=128,
                                     pad_token_id=GPT2_VOCAB - 1, eos_token_id=None)
                assert seq.shape == (1, 16 + 128), seq.shape
            head = lambda: []
        elif w.startswith("long_"):
            seq = int(w.split("_")[1])
            model = long_torch_model(torch)
            ids = torch.tensor(minilm_ids(1, seq), dtype=torch.long)
            mask, types = torch.ones_like(ids), torch.zeros_like(ids)
            out = {}

            def call():
                out["h"] = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
            head = lambda: out["h"][0, 0, :4].tolist()
        elif w == "t5_encode128":
            model = t5_torch_model(torch)
            ids = torch.tensor(t5_ids(128), dtype=torch.long)
            mask = torch.ones_like(ids)
            out = {}

            def call():
                out["h"] = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            head = lambda: out["h"][0, 0, :4].tolist()
        elif w == "t5_decode32":
            model = t5_torch_model(torch)
            ids = torch.tensor(t5_ids(128), dtype=torch.long)
            mask = torch.ones_like(ids)

            def call():
                seq = model.generate(ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32,
                                     do_sample=False, num_beams=1, decoder_start_token_id=0)
                assert seq.shape == (1, 1 + 32), seq.shape  # decoder start + 32 new tokens
            head = lambda: []

            def after(times):
                # Where the time goes: the encoder part of one generate call, timed alone.
                enc = time_runs(1, min(args.runs, 3), lambda: model.encoder(input_ids=ids, attention_mask=mask))
                return {"encode_ms": round(statistics.median(enc), 4)}
            info["after"] = after
        else:
            sys.exit(f"torch: unknown workload {w}")
        info["versions"] = {"torch": torch.__version__}
        info["load_peak"], base = reset_hwm()
        times = time_runs(args.warmup, args.runs, call)
        after = info.pop("after", None)
        if after:
            info.update(after(times))
        return times, base, head(), info


# ----------------------------------------------------------------------------- onnxruntime

def run_ort(args):
    import numpy as np
    import onnxruntime as ort
    w = args.workload
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if w.startswith("minilm_"):
        path = ONNX_DIR / "minilm.onnx"
        batch, seq = minilm_shape(w)
        ids = np.array(minilm_ids(batch, seq), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        outputs = ["sentence_embedding"]
    elif w == "gpt2_prefill128":
        path = ONNX_DIR / "gpt2_prefill.onnx"
        feeds = {"input_ids": np.array(gpt2_ids(128), dtype=np.int64)}
        outputs = None  # logits and the KV cache (present keys/values)
    else:
        sys.exit(f"ort: no export for workload {w}")
    if not path.exists():
        sys.exit(f"ort: {path} is missing: run scripts/harness/export_onnx.py")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = {}

    def call():
        out["y"] = sess.run(outputs, feeds)

    load_peak, base = reset_hwm()
    times = time_runs(args.warmup, args.runs, call)
    y = out["y"][0]
    head = y.reshape(y.shape[0], -1)[0, :8].tolist() if w.startswith("minilm_") else y.reshape(-1)[:4].tolist()
    return times, base, head, {"versions": {"onnxruntime": ort.__version__}, "model": path.name,
                               "load_peak": load_peak}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=["torch", "ort"])
    ap.add_argument("--workload", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    load_before = loadavg()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    times, base, head, info = (run_torch if args.engine == "torch" else run_ort)(args)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rec = {
        "workload": args.workload, "engine": args.engine, "threads": args.threads,
        "warmup": args.warmup, "runs": args.runs,
        "times_ms": [round(t, 4) for t in times], "median_ms": round(statistics.median(times), 4),
        "rss_mb": round(max(status_mb("VmHWM"), info.pop("load_peak")), 1),
        "rss_run_peak_mb": round(status_mb("VmHWM"), 1), "rss_base_mb": round(base, 1),
        "out_head": [round(v, 6) for v in head], "cpu_per_wall": round(cpu / wall, 3),
        "loadavg_before": load_before, "loadavg_after": loadavg(), **info,
    }
    if args.workload == "gpt2_decode128":
        rec["new_tokens"] = 128
        rec["tokens_per_s"] = round(128 / (statistics.median(times) / 1e3), 3)
    if args.workload == "t5_decode32":
        total = statistics.median(times)
        rec.update({"new_tokens": 32, "total_ms": round(total, 4), "per_token_ms": round(total / 32, 4),
                    "tokens_per_s": round(32 / (total / 1e3), 3),
                    "per_token_after_encode_ms": round((total - rec["encode_ms"]) / 32, 4)})
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
