#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it: fetches the real model if absent
# (the parity tests need it), then every crate's unit, integration, UI and doc tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/fetch-model.sh
cargo test --workspace "$@"
