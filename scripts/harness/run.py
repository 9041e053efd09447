#!/usr/bin/env python3
"""Benchmark harness: ours (examples/bench_workload.rs) against PyTorch and onnxruntime on
identical inputs, at the same thread counts, with the same warm-up and timed runs, alternating
engines round by round. See docs/BENCHMARKS.md. Usually run through `bash scripts/bench-compare.sh`
(which installs the pinned peers, exports the ONNX models and builds ours first).

    .cache/venv/bin/python scripts/harness/run.py [--workloads a,b] [--threads 1,2] [--rounds 3]
        [--engines ours,torch,ort] [--no-parts] [--quick]

Steps:
 1. machine microbenchmarks (ours, Rust): fp32 FMA throughput at 1 and 2 threads (one OS thread per
    core, 16 independent AVX-512 FMA chains each, 12 with AVX2) and read/copy bandwidth;
 2. per-op breakdown of ours (GEMMs vs attention, decode GEMVs) -- the "why" of the ratios;
 3. for each thread count, each workload, each round r: every engine once, in an order rotated by
    r (round 0: ours, torch, ort; round 1: torch, ort, ours; ...), each in a fresh process doing
    `warmup` untimed and `runs` timed calls. Timed runs are pooled over the rounds; the median is
    reported; peak RSS is VmHWM of the process (max over rounds).
Writes target/harness/results.json and target/harness/results.md; prints the Markdown.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
OURS = ROOT / "target" / "release" / "examples" / "bench_workload"
PY = sys.executable
PEER = ROOT / "scripts" / "harness" / "peer.py"
OUT_DIR = ROOT / "target" / "harness"

# name: (engines, warm-up calls, timed calls per round, most rounds). Every engine gets the same
# protocol; the slow workloads run fewer rounds to keep the whole harness under ~20 minutes on a
# 2-core machine (one decode call of Hugging Face generate takes 10-60 s there).
WORKLOADS = {
    "minilm_1x128": (["ours", "torch", "ort"], 3, 10, 99),
    "minilm_32x128": (["ours", "torch", "ort"], 1, 3, 99),
    "minilm_1x512": (["ours", "torch", "ort"], 2, 5, 99),
    "gpt2_prefill128": (["ours", "torch", "ort"], 2, 5, 99),
    "gpt2_decode128": (["ours", "torch"], 1, 1, 2),
    "long_1024": (["ours", "torch"], 0, 1, 2),
    "long_2048": (["ours", "torch"], 0, 1, 2),
    "long_4096": (["ours", "torch"], 0, 1, 2),
    # Encoder-decoder, t5-small shape (random weights); no ONNX export (ORT not applicable).
    "t5_encode128": (["ours", "torch"], 2, 5, 99),
    "t5_decode32": (["ours", "torch"], 1, 3, 99),
}
ENGINE_NAMES = {"ours": "ours", "torch": "PyTorch", "ort": "ORT"}

# Model dims for the FLOP formulas (docs/BENCHMARKS.md).
MINILM = dict(L=6, d=384, f=1536)
GPT2 = dict(L=12, d=768, f=3072, V=50257)
T5_SMALL = dict(L=6, d=512, f=2048, V=32128)  # heads × head_dim = d; 6 encoder + 6 decoder layers


def encoder_flop(B, S, L, d, f):
    """(GEMM flop, attention flop) of a BERT encoder forward: 2·params·tokens + 4·S²·d per layer."""
    return 2 * B * S * L * (4 * d * d + 2 * d * f), 4 * B * S * S * d * L


def gpt2_prefill_flop(S, L, d, f, V):
    """GEMMs over S tokens + LM head of the last token; causal attention over the S(S+1)/2 pairs."""
    return 2 * S * L * (4 * d * d + 2 * d * f) + 2 * d * V, 2 * S * (S + 1) * d * L


def gpt2_decode_flop(P, N, L, d, f, V):
    """generate(P-token prompt, N new tokens) = prefill(P) + N-1 one-token steps (step j attends to
    P+j keys); also the bytes streamed per step (fp32 weights + KV cache read)."""
    g, a = gpt2_prefill_flop(P, L, d, f, V)
    w = L * (4 * d * d + 2 * d * f) + d * V
    bytes_ = 0
    for j in range(1, N):
        g += 2 * w
        a += 4 * (P + j) * d * L
        bytes_ += 4 * w + 4 * 2 * (P + j) * d * L
    return g, a, bytes_ / (N - 1)


def t5_decode_flop(S, N, L, d, f, V):
    """generate(S-token source, N new tokens) = encoder(S) + the decoder layers' cross-attention keys
    and values of it (2·S·L·2d²) + N one-token decoder steps (self-attention q,k,v,o + cross q,o +
    FFN + tied head; step j attends to j+1 decoded keys and S source keys); also the bytes streamed
    per step (fp32 weights + self and cross KV read)."""
    g, a = encoder_flop(1, S, L, d, f)
    g += 2 * S * L * 2 * d * d
    w = L * (6 * d * d + 2 * d * f) + d * V
    bytes_ = 0
    for j in range(N):
        g += 2 * w
        a += 4 * (j + 1 + S) * d * L
        bytes_ += 4 * w + 4 * 2 * (j + 1 + S) * d * L
    return g, a, bytes_ / N


def flop_of(workload):
    if workload.startswith("minilm_"):
        b, s = map(int, workload.split("_")[1].split("x"))
        return encoder_flop(b, s, **MINILM)
    if workload.startswith("long_"):
        return encoder_flop(1, int(workload.split("_")[1]), **MINILM)
    if workload == "gpt2_prefill128":
        return gpt2_prefill_flop(128, **GPT2)
    if workload == "gpt2_decode128":
        g, a, _ = gpt2_decode_flop(16, 128, **GPT2)
        return g, a
    if workload == "t5_encode128":
        # The encoder alone (what HF's model.encoder computes); our `encode` also projects the
        # decoder layers' cross-attention keys and values (2·S·L·2d² = 0.81 GFLOP more, not counted).
        return encoder_flop(1, 128, **{k: T5_SMALL[k] for k in "Ldf"})
    if workload == "t5_decode32":
        g, a, _ = t5_decode_flop(128, 32, **T5_SMALL)
        return g, a
    raise KeyError(workload)


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd, timeout=900):
    env = dict(os.environ)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s: {' '.join(map(str, cmd))}"}
    wall = time.perf_counter() - t0
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"exit {p.returncode}: {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}"}
    rec = json.loads(lines[-1])
    rec["process_wall_s"] = round(wall, 2)
    return rec


def engine_cmd(engine, workload, threads, warmup, runs):
    if engine == "ours":
        return [str(OURS), "--workload", workload, "--threads", str(threads), "--warmup", str(warmup),
                "--runs", str(runs)]
    return [PY, str(PEER), "--engine", engine, "--workload", workload, "--threads", str(threads),
            "--warmup", str(warmup), "--runs", str(runs)]


def machine_info():
    info = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ["Architecture", "Model name", "CPU family", "Model", "CPU(s)", "Thread(s) per core",
                "Core(s) per socket", "Socket(s)", "BogoMIPS", "Hypervisor vendor", "L1d cache",
                "L2 cache", "L3 cache", "NUMA node(s)"]
        summary = {}
        for line in lscpu.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in keep:
                summary[k.strip()] = v.strip()
            if k.strip() == "Flags":
                flags = v.split()
                summary["vector ISA"] = " ".join(f for f in ["avx2", "fma", "avx512f", "avx512_bf16",
                                                              "avx512_vnni"] if f in flags)
        info["lscpu"] = summary
    except FileNotFoundError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["MemTotal"] = f.readline().split(":")[1].strip()
    except OSError:
        pass
    try:
        import importlib.metadata as md
        info["versions"] = {p: md.version(p) for p in ["torch", "transformers", "sentence-transformers",
                                                       "onnxruntime", "onnx", "numpy"]}
    except Exception as e:  # noqa: BLE001
        info["versions"] = repr(e)
    try:
        info["rustc"] = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        pass
    return info


def fmt(x, nd=1):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.{nd}f}"
    return f"{x:.{nd + 1}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=os.environ.get("BENCH_WORKLOADS", ",".join(WORKLOADS)))
    ap.add_argument("--threads", default=os.environ.get("BENCH_THREADS", "1,2"))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--engines", default=os.environ.get("BENCH_ENGINES", "ours,torch,ort"))
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("BENCH_DEADLINE_S", "1260")),
                    help="seconds after which remaining rounds are skipped (and listed as skipped)")
    ap.add_argument("--no-parts", action="store_true", default=os.environ.get("BENCH_PARTS", "1") == "0")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "0") == "1",
                    help="1 warm-up, at most 2 timed runs per round (a smoke test)")
    ap.add_argument("--render", action="store_true",
                    help="only re-render target/harness/results.md from results.json")
    args = ap.parse_args()
    if args.render:
        results = json.loads((OUT_DIR / "results.json").read_text())
        tl = [int(t) for t in results["micro"]]
        md = markdown(results, results["summary"], tl,
                      {t: results["fma_peak_per_core_gflops"] * t for t in tl})
        (OUT_DIR / "results.md").write_text(md)
        print(md)
        return
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")
    threads_list = [int(t) for t in args.threads.split(",") if t]
    engines_on = set(args.engines.split(","))
    if not OURS.exists():
        sys.exit(f"{OURS} missing: cargo build --release --example bench_workload")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    onnx_manifest = {}
    try:
        onnx_manifest = json.loads((ROOT / ".cache" / "onnx" / "manifest.json").read_text())["models"]
    except (OSError, KeyError, json.JSONDecodeError):
        pass
    ort_ok = {"minilm": "minilm" in onnx_manifest, "gpt2_prefill128": "gpt2_prefill" in onnx_manifest}

    started = time.perf_counter()
    results = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine_info(), "loadavg_start": loadavg(), "rounds": args.rounds,
               "onnx": onnx_manifest, "micro": {}, "parts": {}, "runs": []}
    log(f"== machine: {results['machine'].get('lscpu', {}).get('Model name')} "
        f"loadavg {results['loadavg_start']}")

    # 1. Machine microbenchmarks.
    for t in threads_list:
        fma = run_json([str(OURS), "--workload", "fma_peak", "--threads", str(t), "--warmup", "1", "--runs", "8"])
        bw = run_json([str(OURS), "--workload", "bandwidth", "--threads", str(t), "--warmup", "1", "--runs", "4"])
        results["micro"][str(t)] = {"fma": fma, "bandwidth": bw}
        log(f"== micro threads={t}: FMA {fma.get('gflops')} GFLOP/s ({fma.get('isa')}), "
            f"read {bw.get('read_gbs')} GB/s, copy {bw.get('copy_gbs')} GB/s, load {fma.get('loadavg')}")
    per_core = max([results["micro"][str(t)]["fma"].get("gflops", 0) / t for t in threads_list] or [0])
    results["fma_peak_per_core_gflops"] = per_core
    peak = {t: per_core * t for t in threads_list}

    # 2. Where our time goes.
    if not args.no_parts:
        parts = ["parts_minilm_1x128", "parts_minilm_32x128", "parts_minilm_1x512", "parts_gpt2_decode"]
        if any(w.startswith("long_") for w in workloads):
            parts.append("parts_long_4096")
        for t in threads_list:
            for p in parts:
                runs = "2" if p == "parts_long_4096" else "5"
                rec = run_json([str(OURS), "--workload", p, "--threads", str(t), "--runs", runs])
                results["parts"][f"{p}@{t}"] = rec
                if "error" in rec:
                    log(f"!! {p}@{t}: {rec['error']}")
                elif p == "parts_gpt2_decode":
                    log(f"== {p}@{t}: GEMVs {rec['gemv_ms_per_token']:.1f} ms/token = {rec['gemv_gbs']} GB/s")
                else:
                    log(f"== {p}@{t}: GEMM {rec['gemm_gflops']} GFLOP/s, attention {rec['attention_gflops']} "
                        f"GFLOP/s, attention {100 * rec['attention_share_of_ops']:.0f}% of op time")

    # 3. Alternating rounds.
    for t in threads_list:
        for w in workloads:
            engines, warmup, runs, max_rounds = WORKLOADS[w]
            if args.quick:
                warmup, runs = 1, min(runs, 2)
            engines = [e for e in engines if e in engines_on]
            if "ort" in engines and not ort_ok.get("minilm" if w.startswith("minilm_") else w, False):
                engines.remove("ort")
            for r in range(min(args.rounds, max_rounds)):
                if time.perf_counter() - started > args.deadline:
                    results.setdefault("skipped", []).append(f"{w}@{t} round {r}")
                    log(f"!! deadline ({args.deadline:.0f} s) passed: skipping {w} t={t} round {r}")
                    continue
                order = engines[r % len(engines):] + engines[:r % len(engines)]
                for e in order:
                    rec = run_json(engine_cmd(e, w, t, warmup, runs))
                    rec.update({"round": r, "engine": e, "workload": w, "threads": t})
                    results["runs"].append(rec)
                    if "error" in rec:
                        log(f"!! {w} {e} t={t} round {r}: {rec['error']}")
                    else:
                        log(f"   {w:<16} t={t} r={r} {e:<5} median {rec['median_ms']:9.2f} ms  "
                            f"rss {rec['rss_mb']:7.1f} MB  load {rec['loadavg_before'][0]}")
            (OUT_DIR / "results.json").write_text(json.dumps(results, indent=1))

    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_end"] = loadavg()
    summary = summarize(results, workloads, threads_list, peak)
    results["summary"] = summary
    md = markdown(results, summary, threads_list, peak)
    (OUT_DIR / "results.json").write_text(json.dumps(results, indent=1))
    (OUT_DIR / "results.md").write_text(md)
    print(md)
    log(f"wrote {OUT_DIR / 'results.json'} and results.md in {results['elapsed_s']:.0f} s")


def summarize(results, workloads, threads_list, peak):
    rows = {}
    for t in threads_list:
        for w in workloads:
            gemm, attn = flop_of(w)
            row = {"workload": w, "threads": t, "gflop": (gemm + attn) / 1e9,
                   "attention_flop_share": attn / (gemm + attn), "engines": {}}
            for e in WORKLOADS[w][0]:
                recs = [x for x in results["runs"] if x["workload"] == w and x["threads"] == t
                        and x["engine"] == e and "error" not in x]
                if not recs:
                    continue
                times = [v for x in recs for v in x["times_ms"]]
                med = statistics.median(times)
                loads = [x["loadavg_before"][0] for x in recs] + [x["loadavg_after"][0] for x in recs]
                ent = {"median_ms": med, "min_ms": min(times), "n": len(times),
                       "round_medians_ms": [x["median_ms"] for x in recs],
                       "rss_mb": max(x["rss_mb"] for x in recs),
                       "rss_run_peak_mb": max(x["rss_run_peak_mb"] for x in recs),
                       "rss_base_mb": min(x["rss_base_mb"] for x in recs),
                       "gflops": (gemm + attn) / 1e9 / (med / 1e3),
                       "cpu_per_wall": statistics.median(x["cpu_per_wall"] for x in recs),
                       "load_min": min(loads), "load_max": max(loads), "out_head": recs[0].get("out_head")}
                ent["peak_fraction"] = ent["gflops"] / peak[t] if peak.get(t) else None
                if w == "gpt2_decode128":
                    ent["tokens_per_s"] = 128 / (med / 1e3)
                    _, _, bytes_per_step = gpt2_decode_flop(16, 128, **GPT2)
                    ent["decode_gbs"] = bytes_per_step * ent["tokens_per_s"] / 1e9
                if w == "t5_decode32":
                    ent["per_token_ms"] = med / 32
                    ent["encode_ms"] = statistics.median(x["encode_ms"] for x in recs if "encode_ms" in x)
                    ent["per_token_after_encode_ms"] = (med - ent["encode_ms"]) / 32
                if w == "t5_encode128" and all("encoder_only_ms" in x for x in recs):
                    ent["encoder_only_ms"] = statistics.median(x["encoder_only_ms"] for x in recs)
                row["engines"][e] = ent
            o = row["engines"].get("ours")
            for e in ("torch", "ort"):
                p = row["engines"].get(e)
                if o and p:
                    row[f"ours_over_{e}"] = o["median_ms"] / p["median_ms"]
                    if o.get("out_head") and p.get("out_head") and w.startswith("minilm_"):
                        row[f"out_head_maxdiff_{e}"] = max(abs(a - b) for a, b in zip(o["out_head"], p["out_head"]))
            rows[f"{w}@{t}"] = row
    return rows


def markdown(results, summary, threads_list, peak):
    m = results["machine"]
    lines = []
    cpu = m.get("lscpu", {})
    lines.append(f"Machine: {cpu.get('Model name', '?')} (family {cpu.get('CPU family', '?')}, model "
                 f"{cpu.get('Model', '?')}), {cpu.get('CPU(s)', '?')} vCPUs, {cpu.get('vector ISA', '')}, "
                 f"L2 {cpu.get('L2 cache', '?')}, L3 {cpu.get('L3 cache', '?')}, {m.get('MemTotal', '?')}, "
                 f"{cpu.get('Hypervisor vendor', 'bare metal')} guest. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
                 + f"; {m.get('rustc', '')}.")
    lines.append(f"Run {results['started']}, {results['rounds']} alternating rounds, "
                 f"{results.get('elapsed_s', 0):.0f} s; load average (1 min) at start {results['loadavg_start']}, "
                 f"at end {results.get('loadavg_end')}.")
    lines.append("")
    lines.append("Machine microbenchmarks (best trial; ours, Rust):")
    lines.append("")
    lines.append("| threads | fp32 FMA GFLOP/s | ISA | read GB/s (sum, 1 GiB) | copy GB/s (256 MiB, r+w) | load avg |")
    lines.append("|---|---|---|---|---|---|")
    for t in threads_list:
        mi = results["micro"].get(str(t), {})
        f, b = mi.get("fma", {}), mi.get("bandwidth", {})
        lines.append(f"| {t} | {fmt(f.get('gflops'))} | {f.get('isa', '?')} | {fmt(b.get('read_gbs'))} | "
                     f"{fmt(b.get('copy_gbs'))} | {(f.get('loadavg') or ['?'])[0]} |")
    lines.append("")
    lines.append(f"FMA peak used for '% peak': {fmt(results['fma_peak_per_core_gflops'])} GFLOP/s per core × threads "
                 "(best per-core rate measured at any thread count).")
    lines.append("")
    lines.append("| workload | thr | ours ms | PyTorch ms | ORT ms | ours/PyTorch | ours/ORT | GFLOP/s ours · PyTorch · ORT "
                 "| ours % FMA peak | peak RSS MB ours · PyTorch · ORT | load avg (1 min) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, row in summary.items():
        en = row["engines"]
        g = lambda e, k: en.get(e, {}).get(k)
        loads = [v for e in en.values() for v in (e["load_min"], e["load_max"])]
        lines.append(
            f"| {row['workload']} | {row['threads']} | {fmt(g('ours', 'median_ms'))} | {fmt(g('torch', 'median_ms'))} | "
            f"{fmt(g('ort', 'median_ms'))} | {fmt(row.get('ours_over_torch'), 2)} | {fmt(row.get('ours_over_ort'), 2)} | "
            f"{fmt(g('ours', 'gflops'))} · {fmt(g('torch', 'gflops'))} · {fmt(g('ort', 'gflops'))} | "
            f"{fmt(100 * g('ours', 'peak_fraction')) if g('ours', 'peak_fraction') else '–'}% | "
            f"{fmt(g('ours', 'rss_mb'))} · {fmt(g('torch', 'rss_mb'))} · {fmt(g('ort', 'rss_mb'))} | "
            f"{min(loads) if loads else '?'}–{max(loads) if loads else '?'} |")
    dec = [r for r in summary.values() if r["workload"] == "gpt2_decode128"]
    if dec:
        lines.append("")
        lines.append("GPT-2 decode (16-token prompt + 128 new tokens, greedy; tokens/s = 128 / median wall time "
                     "of the whole call; achieved GB/s = fp32 weights + KV cache read per step × tokens/s):")
        lines.append("")
        lines.append("| thr | ours tok/s | HF generate tok/s | ours/HF (higher is better) | ours GB/s | HF GB/s | read GB/s (copy bench) |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in dec:
            o, p = r["engines"].get("ours", {}), r["engines"].get("torch", {})
            bw = results["micro"].get(str(r["threads"]), {}).get("bandwidth", {}).get("read_gbs")
            ratio = o.get("tokens_per_s") / p["tokens_per_s"] if o.get("tokens_per_s") and p.get("tokens_per_s") else None
            lines.append(f"| {r['threads']} | {fmt(o.get('tokens_per_s'))} | {fmt(p.get('tokens_per_s'))} | {fmt(ratio, 2)} | "
                         f"{fmt(o.get('decode_gbs'))} | {fmt(p.get('decode_gbs'))} | {fmt(bw)} |")
    t5 = [r for r in summary.values() if r["workload"].startswith("t5_")]
    if t5:
        lines.append("")
        lines.append("T5 (t5-small shape, random weights, one 128-token source). encode128: ours `encode` (encoder + "
                     "every decoder layer's cross-attention K/V) and, in brackets, ours encoder alone, vs HF "
                     "`model.encoder`. decode32: one `generate` call (encode + 32 greedy tokens), per token = "
                     "total / 32; 'after encode' = (total − the encode part timed alone) / 32:")
        lines.append("")
        lines.append("| workload | thr | ours ms | PyTorch ms | ours/PyTorch | ours per token ms | PyTorch per token ms "
                     "| after encode ms/token ours · PyTorch | ours GB/s |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in t5:
            o, p = r["engines"].get("ours", {}), r["engines"].get("torch", {})
            ours_ms = fmt(o.get("median_ms"))
            if o.get("encoder_only_ms"):
                ours_ms += f" ({fmt(o['encoder_only_ms'])})"
            gbs = None
            if r["workload"] == "t5_decode32" and o.get("per_token_after_encode_ms"):
                _, _, bytes_per_step = t5_decode_flop(128, 32, **T5_SMALL)
                gbs = bytes_per_step / (o["per_token_after_encode_ms"] / 1e3) / 1e9
            lines.append(f"| {r['workload']} | {r['threads']} | {ours_ms} | {fmt(p.get('median_ms'))} | "
                         f"{fmt(r.get('ours_over_torch'), 2)} | {fmt(o.get('per_token_ms'))} | {fmt(p.get('per_token_ms'))} | "
                         f"{fmt(o.get('per_token_after_encode_ms'))} · {fmt(p.get('per_token_after_encode_ms'))} | {fmt(gbs)} |")
    longs = [r for r in summary.values() if r["workload"].startswith("long_")]
    if longs:
        lines.append("")
        lines.append("Long encoder (MiniLM dims, max_positions 4096, batch 1): peak RSS (VmHWM) and growth over the "
                     "RSS after loading (activations + workspace; VmHWM reset after loading, read after the runs):")
        lines.append("")
        lines.append("| seq | thr | ours peak MB | ours growth MB | PyTorch SDPA peak MB | PyTorch growth MB | attention share of FLOPs |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in longs:
            o, p = r["engines"].get("ours", {}), r["engines"].get("torch", {})
            grow = lambda e: e["rss_run_peak_mb"] - e["rss_base_mb"] if e else None
            lines.append(f"| {r['workload'].split('_')[1]} | {r['threads']} | {fmt(o.get('rss_mb'))} | {fmt(grow(o))} | "
                         f"{fmt(p.get('rss_mb'))} | {fmt(grow(p))} | {100 * r['attention_flop_share']:.0f}% |")
    parts = results.get("parts", {})
    if parts:
        lines.append("")
        lines.append("Where our time goes (each op of one layer timed alone through the library's public layers):")
        lines.append("")
        lines.append("| shape | thr | GEMM GFLOP/s | attention GFLOP/s | attention share of op time | per-op GFLOP/s |")
        lines.append("|---|---|---|---|---|---|")
        for k, rec in parts.items():
            if "error" in rec or "per_layer_ops" not in rec:
                continue
            ops = ", ".join(f"{o['op'].split()[0]} {fmt(o['gflops'])}" for o in rec["per_layer_ops"])
            lines.append(f"| {rec['workload'].replace('parts_', '')} | {rec['threads']} | {fmt(rec['gemm_gflops'])} | "
                         f"{fmt(rec['attention_gflops'])} | {100 * rec['attention_share_of_ops']:.0f}% | {ops} |")
        for k, rec in parts.items():
            if rec.get("workload") == "parts_gpt2_decode":
                ops = ", ".join(f"{o['op'].split()[0]} {fmt(o['gbs'])}" for o in rec["ops"])
                lines.append(f"\nDecode GEMVs alone, {rec['threads']} thread(s): {fmt(rec['gemv_ms_per_token'])} ms/token "
                             f"(weights hot in cache between repeats of one op), {fmt(rec['gemv_gbs'])} GB/s; per op GB/s: {ops}.")
    if results.get("skipped"):
        lines.append("")
        lines.append("Skipped at the deadline (BENCH_DEADLINE_S): " + ", ".join(results["skipped"]) + ".")
    lines.append("")
    lines.append("Targets:")
    lines.append("")
    lines.extend(targets(summary, results, threads_list))
    return "\n".join(lines) + "\n"


def targets(summary, results, threads_list):
    out = []

    def mark(ok):
        return "met" if ok else "MISSED"
    for key, row in summary.items():
        w, t = row["workload"], row["threads"]
        if w.startswith("minilm_"):
            for e, lim in (("ort", 0.8), ("torch", 0.5)):
                r = row.get(f"ours_over_{e}")
                if r is not None:
                    out.append(f"- {w} t={t}: ours/{ENGINE_NAMES[e]} = {r:.2f} (target ≤ {lim}): {mark(r <= lim)}")
            if w == "minilm_32x128":
                pf = row["engines"].get("ours", {}).get("peak_fraction")
                if pf is not None:
                    out.append(f"- {w} t={t}: {100 * pf:.0f}% of FMA peak (target ≥ 70%): {mark(pf >= 0.7)}")
        if w == "gpt2_prefill128":
            for e in ("ort", "torch"):
                r = row.get(f"ours_over_{e}")
                if r is not None:
                    out.append(f"- {w} t={t}: ours/{ENGINE_NAMES[e]} = {r:.2f} (target ≤ 0.8): {mark(r <= 0.8)}")
        if w == "gpt2_decode128":
            o, p = row["engines"].get("ours", {}), row["engines"].get("torch", {})
            if o.get("tokens_per_s") and p.get("tokens_per_s"):
                r = o["tokens_per_s"] / p["tokens_per_s"]
                out.append(f"- decode t={t}: ours {o['tokens_per_s']:.1f} tok/s = {r:.2f}× HF (target ≥ 2×): {mark(r >= 2)}")
    for t in threads_list:
        g = {}
        for n in (1024, 2048, 4096):
            o = summary.get(f"long_{n}@{t}", {}).get("engines", {}).get("ours")
            if o:
                g[n] = o["rss_run_peak_mb"] - o["rss_base_mb"]
        if len(g) == 3 and g[1024] > 0:
            # Linear: 4× the tokens, ≈4× the growth (quadratic would be 16×); allow slack for page
            # granularity and allocator rounding.
            r = g[4096] / g[1024]
            out.append(f"- long encoder t={t}: ours RSS growth 1024→2048→4096 = {g[1024]:.0f} → {g[2048]:.0f} → "
                       f"{g[4096]:.0f} MB ({r:.1f}× for 4× tokens; linear ≈ 4×, quadratic 16×): {mark(r <= 5)}")
    return out


if __name__ == "__main__":
    main()
