#!/usr/bin/env bash
# Training tokens/s and peak RSS on two real shapes (issue #18), ours against PyTorch eager and
# llm.c's CPU train_gpt2.c, in one run at 1 and 2 threads:
#
#   gpt2        GPT-2 small (124M), 4 × 64 tokens per step (llm.c's own batch)
#   minilm_mlm  all-MiniLM-L6-v2's shape through BertForMaskedLM's head, 32 × 128 tokens per step
#
# Every engine: random weights, random tokens, no dropout, AdamW lr 1e-4 (betas 0.9/0.999,
# eps 1e-8, no weight decay: llm.c's values); ours and PyTorch also clip_grad_norm_(1.0), which
# llm.c's train_gpt2.c does not do. Ours is examples/bench_train.rs, PyTorch
# scripts/reference/train_bench_big.py, llm.c scripts/bench-llmc.sh (gpt2 only; skipped, with a
# message, when no llm.c binary is given: see that script). For each thread count and model the
# engines run one after another, one process each, ROUNDS times; each process runs WARMUP untimed
# steps, then STEPS timed ones. Prints every round and, per (threads, model), the median tokens/s
# of each engine and the ratios of the medians (ours / PyTorch, ours / llm.c: higher is better
# for us), with the peak RSS (VmHWM) of each engine's process.
#
#   bash scripts/bench-train-big.sh          # STEPS=4 WARMUP=1 ROUNDS=2: roughly 10-15 min on 2 cores
#   LLMC_BIN=/path/to/llm.c/train_gpt2 ROUNDS=3 bash scripts/bench-train-big.sh
#
# Environment: STEPS, WARMUP, ROUNDS, THREADS (default "1 2"), MODELS (default
# "gpt2 minilm_mlm"), PYTHON (default: scripts/setup-reference.sh's .cache/venv/bin/python),
# LLMC_BIN (default .cache/llmc/train_gpt2), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS="${STEPS:-4}"
WARMUP="${WARMUP:-1}"
ROUNDS="${ROUNDS:-2}"
THREADS="${THREADS:-1 2}"
MODELS="${MODELS:-gpt2 minilm_mlm}"
LLMC_BIN="${LLMC_BIN:-.cache/llmc/train_gpt2}"
export LLMC_BIN
if [ -z "${PYTHON:-}" ]; then
    bash scripts/setup-reference.sh >/dev/null
    PYTHON=.cache/venv/bin/python
fi
export PYTHON
export TRANSFORMERS_VERBOSITY=error
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release --example bench_train >/dev/null 2>&1 || cargo build --release --example bench_train
OURS="$TARGET/release/examples/bench_train"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
llmc=0
if [ -x "$LLMC_BIN" ]; then
    llmc=1
    "$PYTHON" scripts/reference/llmc_checkpoint.py "$WORK/llmc" >/dev/null
else
    echo "llm.c skipped: no train_gpt2 binary at $LLMC_BIN (set LLMC_BIN; see scripts/bench-llmc.sh)"
fi

# run ENGINE MODEL THREADS ROUND COMMAND...: runs COMMAND, appends "threads model engine round
# tokens/s rss" to the results, and echoes the tokens/s and RSS.
run() {
    local engine="$1" model="$2" threads="$3" round="$4" out
    shift 4
    if ! out="$("$@" 2>"$WORK/stderr")"; then
        echo "$engine $model at $threads threads failed:" >&2
        cat "$WORK/stderr" >&2
        exit 1
    fi
    local tps rss
    tps="$(sed -n 's/^tokens\/s //p' <<<"$out")"
    rss="$(sed -n 's/^peak_rss_mb //p' <<<"$out")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$threads" "$model" "$engine" "$round" "$tps" "$rss" >>"$RESULTS"
    printf '   %-6s %10s tok/s %8s MB' "$engine" "$tps" "$rss"
}

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs"
echo "steps: $WARMUP warm-up + $STEPS timed per process; rounds: $ROUNDS"
for threads in $THREADS; do
    for model in $MODELS; do
        for round in $(seq "$ROUNDS"); do
            printf '%s threads  %-10s round %s:' "$threads" "$model" "$round"
            run ours "$model" "$threads" "$round" \
                "$OURS" --model "$model" --threads "$threads" --steps "$STEPS" --warmup "$WARMUP"
            run torch "$model" "$threads" "$round" \
                "$PYTHON" scripts/reference/train_bench_big.py --model "$model" --threads "$threads" \
                --steps "$STEPS" --warmup "$WARMUP"
            if [ "$model" = gpt2 ] && [ "$llmc" = 1 ]; then
                run llm.c "$model" "$threads" "$round" \
                    bash scripts/bench-llmc.sh --threads "$threads" --steps "$STEPS" --warmup "$WARMUP" \
                    --dir "$WORK/llmc"
            fi
            echo
        done
    done
done

echo
python3 - "$RESULTS" <<'EOF'
import collections, statistics, sys

runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    threads, model, engine, _round, tps, rss = line.split("\t")
    runs[(threads, model, engine)].append((float(tps), float(rss)))
def median(key, i):
    values = [r[i] for r in runs.get(key, [])]
    return statistics.median(values) if values else None
def fmt(v, spec):
    return format(v, spec) if v is not None else "-"
print(f"{'threads':<8}{'model':<12}{'ours tok/s':>11}{'torch tok/s':>12}{'llm.c tok/s':>12}"
      f"{'ours MB':>9}{'torch MB':>9}{'llm.c MB':>9}{'ours/torch':>11}{'ours/llm.c':>11}")
for threads, model in dict.fromkeys((t, m) for t, m, _ in runs):
    tps = {e: median((threads, model, e), 0) for e in ("ours", "torch", "llm.c")}
    rss = {e: median((threads, model, e), 1) for e in ("ours", "torch", "llm.c")}
    ratio = lambda peer: tps["ours"] / tps[peer] if tps["ours"] and tps[peer] else None
    print(f"{threads:<8}{model:<12}{fmt(tps['ours'], '.1f'):>11}{fmt(tps['torch'], '.1f'):>12}"
          f"{fmt(tps['llm.c'], '.1f'):>12}{fmt(rss['ours'], '.0f'):>9}{fmt(rss['torch'], '.0f'):>9}"
          f"{fmt(rss['llm.c'], '.0f'):>9}{fmt(ratio('torch'), '.2f'):>11}{fmt(ratio('llm.c'), '.2f'):>11}")
print("(medians over the rounds; issue #18 asks ours/torch >= 1.5 and ours/llm.c >= 1.2)")
EOF
