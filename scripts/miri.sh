#!/usr/bin/env bash
# Runs the Miri subset of the runtime's tests (transformer-runtime/tests/miri_subset.rs: every
# kernel's portable path, the weight loader on valid and corrupt bytes, Batch and KvCache) under
# Miri, which checks every unsafe block for undefined behaviour (out-of-bounds pointer reads,
# uninitialised memory, aliasing violations). Installs the nightly toolchain and its `miri` and
# `rust-src` components if absent. Takes a few minutes; bounded by MIRI_TIMEOUT (default 1200 s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
installed="$(rustup component list --toolchain nightly --installed)"
for component in miri rust-src; do
    if ! grep -q "^$component" <<<"$installed"; then
        rustup component add "$component" --toolchain nightly
    fi
done
cargo +nightly miri setup

# Miri's own target directory, so its artefacts never mix with the normal build's.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/miri"
# Many seeds is for concurrency bugs; the subset is single-threaded, one run is enough.
export MIRIFLAGS="${MIRIFLAGS:-}"
timeout --kill-after=30 "${MIRI_TIMEOUT:-1200}" \
    cargo +nightly miri test -p transformer-runtime --test miri_subset "$@"
