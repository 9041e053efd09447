#!/usr/bin/env bash
# llm.c's CPU trainer (train_gpt2.c) on GPT-2 124M with random weights, B = 4, T = 64 (its own
# hard-coded batch), at a given thread count; prints the same two lines as
# examples/bench_train.rs:
#
#   tokens/s X       B·T·STEPS over the STEPS timed steps' own "took X ms" figures
#   peak_rss_mb Y    VmHWM of the train_gpt2 process after those steps
#
#   LLMC_BIN=/path/to/train_gpt2 bash scripts/bench-llmc.sh --threads 1 --steps 5 --warmup 2
#
# This repository carries no llm.c source and builds none: LLMC_BIN (default
# .cache/llmc/train_gpt2) is llm.c's `train_gpt2` binary, built by you from its source as its own
# Makefile builds the CPU trainer (with OpenMP). Without it this script says so and exits
# with status 3, which scripts/bench-train-big.sh reports as "llm.c skipped". If a file
# "$LLMC_BIN.commit" exists, its first line (the llm.c commit) is printed to stderr.
#
# train_gpt2.c's main() is used as is: it reads gpt2_124M.bin and
# dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin from its working directory, so the run
# happens in a directory laid out that way (scripts/reference/llmc_checkpoint.py writes the
# files; --dir DIR reuses a directory it filled, else a temporary one is made and removed). It
# runs 41 steps with a validation loss (5 forward passes, untimed) before steps 0, 10, 20, 30 and
# samples text before step 20; this script reads its output line by line and stops the process
# (SIGTERM, by its pid) once WARMUP + STEPS step lines have appeared, so WARMUP + STEPS <= 20 keeps
# the run clear of the sampling. Its first steps allocate the activations, gradients and AdamW
# moments (lazily); the WARMUP steps are excluded from the figure.
#
# Environment: PYTHON (default .cache/venv/bin/python; needs numpy) to write the files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
LLMC_BIN="${LLMC_BIN:-.cache/llmc/train_gpt2}"
PYTHON="${PYTHON:-.cache/venv/bin/python}"
THREADS=1 STEPS=5 WARMUP=2 DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        *) echo "bench-llmc.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ ! -x "$LLMC_BIN" ]; then
    echo "llm.c skipped: no llm.c train_gpt2 binary at $LLMC_BIN (set LLMC_BIN; this repository does not build llm.c)" >&2
    exit 3
fi
LLMC_BIN="$(cd "$(dirname "$LLMC_BIN")" && pwd)/$(basename "$LLMC_BIN")"
if [ -f "$LLMC_BIN.commit" ]; then
    echo "llm.c: $LLMC_BIN (commit $(head -1 "$LLMC_BIN.commit"))" >&2
fi
if [ $((WARMUP + STEPS)) -gt 41 ]; then
    echo "bench-llmc.sh: train_gpt2.c runs 41 steps; WARMUP + STEPS = $((WARMUP + STEPS))" >&2
    exit 2
fi

cleanup_dir=""
if [ -z "$DIR" ]; then
    DIR="$(mktemp -d)"
    cleanup_dir="$DIR"
fi
LOG="$(mktemp)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    rm -f "$LOG"
    if [ -n "$cleanup_dir" ]; then rm -rf "$cleanup_dir"; fi
}
trap cleanup EXIT
if [ ! -f "$DIR/gpt2_124M.bin" ]; then
    "$PYTHON" "$ROOT/scripts/reference/llmc_checkpoint.py" "$DIR" >&2
fi

# stdbuf -oL: its printf goes to a pipe, line-buffered so that each step's line arrives when it
# is printed. `exec` keeps the pid: $! is train_gpt2 itself.
(cd "$DIR" && OMP_NUM_THREADS="$THREADS" exec stdbuf -oL "$LLMC_BIN") >"$LOG" 2>&1 &
pid=$!
want=$((WARMUP + STEPS))
rss_kb=""
while kill -0 "$pid" 2>/dev/null; do
    if [ "$(grep -c 'took .* ms' "$LOG" || true)" -ge "$want" ]; then
        rss_kb="$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")"
        kill "$pid"
        break
    fi
    sleep 0.2
done
wait "$pid" 2>/dev/null || true
pid=""
if [ -z "$rss_kb" ]; then
    echo "bench-llmc.sh: train_gpt2 stopped before $want steps; its output:" >&2
    cat "$LOG" >&2
    exit 1
fi
sed -n 's/^step \([0-9]*\): train loss \([0-9.]*\).*/llm.c step \1: loss \2/p' "$LOG" | head -n "$want" >&2
sed -n 's/.*(took \([0-9.]*\) ms).*/\1/p' "$LOG" | head -n "$want" | tail -n "$STEPS" |
    awk -v tokens=$((4 * 64)) -v rss="$rss_kb" '
        { ms += $1; n++ }
        END { printf "tokens/s %.1f\npeak_rss_mb %.1f\n", n * tokens / (ms / 1000), rss / 1024 }'
