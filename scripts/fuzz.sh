#!/usr/bin/env bash
# Fuzzes the untrusted-input surfaces with cargo-fuzz (libFuzzer, nightly): every target in
# fuzz/ for SECONDS each (default 30). Installs cargo-fuzz and the nightly toolchain if absent.
# Exits non-zero if a target crashes (panic, out-of-bounds, leak of the memory limits); the
# crashing input is left in fuzz/artifacts/<target>/ for `cargo +nightly fuzz run <target> <file>`.
#
#   bash scripts/fuzz.sh            # 30 s per target
#   bash scripts/fuzz.sh 600        # 10 minutes per target
#   FUZZ_TARGETS=forward bash scripts/fuzz.sh 60
#
# Corpora grown by a run go to a scratch directory (FUZZ_CORPUS_DIR, default a fresh temporary
# one); the committed seeds in fuzz/corpus/<target> are read, never written.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
fi
targets="${FUZZ_TARGETS:-weights_loader forward}"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ -n "${FUZZ_CORPUS_DIR:-}" ]; then
    scratch="$FUZZ_CORPUS_DIR"
    mkdir -p "$scratch"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
fi

# Release build with debug assertions and overflow checks (an overflow is a crash too).
cargo +nightly fuzz build --release --debug-assertions

status=0
for target in $targets; do
    corpus="$scratch/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    dict=()
    if [ -f "fuzz/$target.dict" ]; then
        dict=("-dict=fuzz/$target.dict")
    fi
    echo "== fuzzing $target for ${seconds}s (corpus $corpus)"
    # -rss_limit_mb / -malloc_limit_mb: a header claiming a huge tensor must not turn into a huge
    # allocation. `timeout` bounds the run (with room for a rebuild) even if libFuzzer hangs; -timeout
    # makes any single input slower than 10 s a crash of its own.
    if ! timeout --kill-after=30 "$((seconds + 300))" \
        cargo +nightly fuzz run --release --debug-assertions "$target" "$corpus" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb=512 \
        -malloc_limit_mb=256 \
        -timeout=10 \
        -max_len=8192 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "${dict[@]}"; then
        echo "!! $target crashed or timed out; see $artifacts/" >&2
        status=1
    fi
done
exit "$status"
