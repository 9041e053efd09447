#!/usr/bin/env bash
# Measures what declaring a model costs at compile time: how long `cargo build --release` takes
# for a small crate that declares a 12-layer GPT-2-small-shaped decoder, and how big the macro's
# expansion is. A throwaway crate (under a temp dir, own target dir, removed at exit) depends on
# this repository's `transformer` by path and is built with four `src/main.rs` variants:
#
#   baseline        `fn main() {}`: the floor (dependencies built, nothing declared)
#   preset, 12      GPT-2 small declared with the preset keys (`tests/composed.rs`'s `PresetGpt2`)
#   composed, 12    the same model as composed blocks (`ComposedGpt2`), `layers: 12`
#   composed, 1     the composed model with `layers: 1` (same code expected: one type per block)
#
# The dependencies are built once first, so each timed build is the probe crate alone (touch
# `src/main.rs`, build; median of COMPILE_TIME_RUNS runs, default 3), as wall time and as CPU time
# (user + sys: steadier than wall time on a shared machine). A run during which the repository
# changed (cargo rebuilt `transformer` too) is repeated. The model variants call `from_safetensors`,
# `logits` and `generate` (behind a command-line argument the script never passes), so the
# generated code is reachable and really compiled, not dropped as dead code. Variant (b) is also
# built once with a cold target dir (the full build, dependencies included).
#
# Code size, three ways: the release binary; the optimised LLVM IR of the crate (`cargo rustc
# --release -- --emit=llvm-ir,link`: the model's items plus every runtime generic they instantiate
# for its dims); and, with a nightly toolchain, the macro's expansion itself (`cargo +nightly rustc
# --release -- -Zunpretty=expanded`; its size minus the baseline's is the model's generated code).
# COMPILE_TIME_KEEP_EXPANSIONS=dir keeps the expanded sources.
#
# Usage: bash scripts/compile-time.sh   (from any directory; crates.io must be in the local cache)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
runs="${COMPILE_TIME_RUNS:-3}"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/transformer-compile-time.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
crate="$tmp/probe"
mkdir -p "$crate/src"
export CARGO_TARGET_DIR="$tmp/target"
# The probe's own lockfile starts from the workspace's, so it resolves to the same, cached,
# versions without asking the registry.
cp "$repo/Cargo.lock" "$crate/Cargo.lock"
cat >"$crate/Cargo.toml" <<EOF
[package]
name = "compile_time_probe"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
transformer = { path = "$repo" }

# Its own workspace, whatever directory the temp dir is under.
[workspace]
EOF

write_baseline() {
    printf 'fn main() {}\n' >"$crate/src/main.rs"
}

# The part every model variant shares: reachable uses of the generated API, behind an argument the
# script never passes. (No comments in this Rust: `-Zunpretty=expanded` prints source comments at
# odd places, inside the model's expansion among them.)
main_fn() {
    cat <<'EOF'

use transformer::{Batch, GenerateOptions};

fn main() -> Result<(), transformer::Error> {
    let Some(path) = std::env::args().nth(1) else { return Ok(()) };
    let model = Gpt2::from_safetensors(&path)?;
    let prompt: &[u32] = &[464, 3290, 318];
    let logits = model.logits(&Batch::from_sequences(&[prompt])?)?;
    let tokens = model.generate(&[prompt], &GenerateOptions::default())?;
    println!("{} {:?}", logits.len(), tokens);
    Ok(())
}
EOF
}

write_preset() {
    {
        cat <<'EOF'
transformer::model! {
    /// GPT-2 small (124M) as the preset declares it.
    pub struct Gpt2 {
        vocab_size: 50257,
        max_positions: 1024,
        d_model: 768,
        heads: 12,
        layers: 12,
        d_ff: 3072,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}
EOF
        main_fn
    } >"$crate/src/main.rs"
}

write_composed() { # $1: layers
    {
        sed "s/@LAYERS@/$1/" <<'EOF'
transformer::model! {
    /// GPT-2 small as composed blocks: pre-norm layer, Conv1D weights.
    pub struct Gpt2 {
        vocab_size: 50257,
        max_positions: 1024,
        d_model: 768,
        heads: 12,
        d_ff: 3072,
        layers: @LAYERS@,
    }

    #[weights(ignore = ["transformer.h.{layer}.attn.bias", "transformer.h.{layer}.attn.masked_bias"])]
    fn forward(tokens) -> logits {
        #[weights = "transformer.wte"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "transformer.wpe"]
        let x = x + embedding(positions, max_positions, d_model);
        #[weights = "transformer.h.{layer}"]
        for layer in 0..layers {
            #[weights = "ln_1"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights = "attn.c_attn"]
            let qkv = linear(h, 3 * d_model, layout = conv1d);
            let context = attention(qkv, heads = heads, causal);
            #[weights = "attn.c_proj"]
            x = x + linear(context, d_model, layout = conv1d);
            #[weights = "ln_2"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights("mlp.c_fc", "mlp.c_proj")]
            x = x + linear(gelu_tanh(linear(h, d_ff, layout = conv1d)), d_model, layout = conv1d);
        }
        #[weights = "transformer.ln_f"]
        let x = layer_norm(x, eps = 1e-5);
        // Tied: the head reads the token-embedding matrix.
        #[weights = "transformer.wte"]
        linear(x, vocab_size, bias = false)
    }
}
EOF
        main_fn
    } >"$crate/src/main.rs"
}

write_variant() { # $1: baseline | preset12 | composed12 | composed1
    case "$1" in
        baseline) write_baseline ;;
        preset12) write_preset ;;
        composed12) write_composed 12 ;;
        composed1) write_composed 1 ;;
    esac
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Runs a cargo command in the probe crate (stdout to $1.out, stderr to $1) under bash's `time`,
# setting `wall` and `cpu` (user + sys, rustc included: it is a waited-for child), in seconds.
# $2: the number of crates the build must compile, or `any`. The repository is a path dependency,
# so an edit to it while the script runs makes cargo rebuild `transformer` too; such a run does not
# measure the probe alone, and is repeated (at most 5 times).
discarded=0
timed() { # $1: log, $2: expected crates or any, rest: the command
    local log="$1" expect="$2" attempt status times compiled
    shift 2
    for attempt in 1 2 3 4 5; do
        touch "$crate/src/main.rs"
        status=0
        times="$({ time (cd "$crate" && "$@" >"$log.out" 2>"$log"); } 2>&1)" || status=$?
        if [[ "$status" != 0 ]]; then
            echo "failed: $*" >&2
            tail -n 60 "$log" >&2
            exit 1
        fi
        read -r wall user sys <<<"$times"
        cpu="$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')"
        wall="$(awk -v w="$wall" 'BEGIN { printf "%.2f", w }')"
        compiled="$(grep -c '^ *Compiling' "$log" || true)"
        if [[ "$expect" == any || "$compiled" == "$expect" ]]; then
            return 0
        fi
        discarded=$((discarded + 1))
        echo "  (attempt $attempt compiled $compiled crates, not $expect: the repository changed; again)" >&2
    done
    echo "gave up: the repository keeps changing under the build" >&2
    exit 1
}
TIMEFORMAT='%3R %3U %3S'

variants=(baseline preset12 composed12 composed1)
declare -A label=(
    [baseline]="(d) baseline: \`fn main() {}\`"
    [preset12]="(a) preset GPT-2 small, 12 layers"
    [composed12]="(b) composed GPT-2 small, 12 layers"
    [composed1]="(c) composed GPT-2 small, 1 layer"
)
declare -A build_wall build_cpu build_samples binary_bytes ir_lines
declare -A expand_lines expand_bytes expand_secs

echo "probe crate: $crate (target dir $CARGO_TARGET_DIR); $runs timed run(s) per variant" >&2
echo "building the dependencies once (untimed)..." >&2
write_variant baseline
timed "$tmp/deps.log" any cargo build --release

for v in "${variants[@]}"; do
    write_variant "$v"
    walls=()
    cpus=()
    for ((i = 1; i <= runs; i++)); do
        timed "$tmp/$v.$i.log" 1 cargo build --release
        walls+=("$wall")
        cpus+=("$cpu")
    done
    build_samples[$v]="${walls[*]}"
    build_wall[$v]="$(median "${walls[@]}")"
    build_cpu[$v]="$(median "${cpus[@]}")"
    binary_bytes[$v]="$(wc -c <"$CARGO_TARGET_DIR/release/compile_time_probe")"
    # The code LLVM is given after optimisation: the model's own items plus every runtime generic
    # they instantiate (kernels specialised for the dims), which the expansion does not show.
    rm -f "$CARGO_TARGET_DIR"/release/deps/compile_time_probe-*.ll
    timed "$tmp/$v.ir.log" 1 cargo rustc --release -- --emit=llvm-ir,link
    ir_lines[$v]="$(cat "$CARGO_TARGET_DIR"/release/deps/compile_time_probe-*.ll | wc -l)"
    echo "  $v: wall ${walls[*]} s, cpu ${cpus[*]} s; binary ${binary_bytes[$v]} B; IR ${ir_lines[$v]} lines" >&2
done

echo "cold build of (b), dependencies included (separate target dir)..." >&2
write_variant composed12
CARGO_TARGET_DIR="$tmp/target-cold" timed "$tmp/cold.log" any cargo build --release
cold_wall="$wall" cold_cpu="$cpu"
cold_crates="$(grep -c '^ *Compiling' "$tmp/cold.log" || true)"
rm -rf "$tmp/target-cold"
echo "  cold: wall $cold_wall s, cpu $cold_cpu s ($cold_crates crates compiled)" >&2

have_nightly=0
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
    have_nightly=1
    echo "expanding with $(rustc +nightly --version) (the first call builds the dependencies)..." >&2
    write_variant baseline
    timed "$tmp/expand-deps.log" any cargo +nightly rustc --release -- -Zunpretty=expanded
    for v in "${variants[@]}"; do
        write_variant "$v"
        timed "$tmp/expand-$v.log" 1 cargo +nightly rustc --release -- -Zunpretty=expanded
        expand_secs[$v]="$wall"
        cp "$tmp/expand-$v.log.out" "$tmp/expanded-$v.rs"
        expand_lines[$v]="$(wc -l <"$tmp/expanded-$v.rs")"
        expand_bytes[$v]="$(wc -c <"$tmp/expanded-$v.rs")"
        echo "  $v: ${expand_lines[$v]} lines, ${expand_bytes[$v]} bytes, ${expand_secs[$v]} s" >&2
    done
    # Kept on request, e.g. to read or diff them.
    if [[ -n "${COMPILE_TIME_KEEP_EXPANSIONS:-}" ]]; then
        mkdir -p "$COMPILE_TIME_KEEP_EXPANSIONS"
        cp "$tmp"/expanded-*.rs "$COMPILE_TIME_KEEP_EXPANSIONS/"
    fi
else
    echo "no nightly toolchain (rustup toolchain list): skipping the expansion size" >&2
fi

head="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
dirty="$(git -C "$repo" status --porcelain 2>/dev/null | wc -l)"
echo
echo "$(rustc --version); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg); repository at $head ($dirty paths modified or untracked); $discarded run(s) repeated because the repository changed during them"
echo
echo "| variant | build, s (wall, median of $runs) | build CPU, s (user + sys, median) | wall of each run, s | binary, bytes | optimised LLVM IR, lines | expansion, lines · bytes | model's code (expansion − baseline), lines · bytes | expansion alone, s |"
echo "|---|---|---|---|---|---|---|---|---|"
for v in "${variants[@]}"; do
    if [[ "$have_nightly" == 1 ]]; then
        expansion="${expand_lines[$v]} · ${expand_bytes[$v]}"
        if [[ "$v" == baseline ]]; then
            model="–"
        else
            model="$((expand_lines[$v] - expand_lines[baseline])) · $((expand_bytes[$v] - expand_bytes[baseline]))"
        fi
        secs="${expand_secs[$v]}"
    else
        expansion="–" model="–" secs="–"
    fi
    echo "| ${label[$v]} | ${build_wall[$v]} | ${build_cpu[$v]} | ${build_samples[$v]// / · } | ${binary_bytes[$v]} | ${ir_lines[$v]} | $expansion | $model | $secs |"
done
echo
echo "Cold \`cargo build --release\` of (b), dependencies included ($cold_crates crates): $cold_wall s wall, $cold_cpu s CPU."
if [[ "$have_nightly" == 1 ]]; then
    d="$(diff "$tmp/expanded-composed12.rs" "$tmp/expanded-composed1.rs" | grep -c '^[<>]' || true)"
    echo "Expansions of (b) and (c) differ in $d lines (\`diff | grep -c '^[<>]'\`: each changed line counts twice)."
fi
