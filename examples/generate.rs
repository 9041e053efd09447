//! Streams a continuation of a prompt with a GPT-2-family checkpoint directory
//! (`config.json`, `model.safetensors`, `tokenizer.json`).
//!
//! ```text
//! cargo run --release --example generate -- tests/fixtures/gpt2/tiny "Once upon a time"
//! cargo run --release --example generate -- tests/fixtures/gpt2/odd "The cat" --temperature 0.8 --top-k 40 --seed 7
//! ```
//!
//! This library compiles one binary per architecture: the dims are part of the generated types.
//! So the example declares the architectures it serves (GPT-2 small and the two test fixtures)
//! and picks the one whose dims match `config.json`; for another shape, add a declaration.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::Tokenizer;
use transformer::{GenerateOptions, Sampling, Threads};

/// Declares a GPT-2-family model with the given dims.
macro_rules! gpt2 {
    ($name:ident, vocab: $v:literal, positions: $p:literal, d_model: $d:literal, heads: $h:literal,
     layers: $l:literal, d_ff: $f:literal, head: $head:ident) => {
        transformer::model! {
            pub struct $name {
                vocab_size: $v,
                max_positions: $p,
                d_model: $d,
                heads: $h,
                layers: $l,
                d_ff: $f,
                activation: gelu_tanh,
                norm: layer_norm,
                norm_eps: 1e-5,
                norm_placement: pre,
                positions: learned,
                attention: causal,
                weights: gpt2,
                lm_head: $head,
            }
        }
    };
}

gpt2!(Gpt2Small, vocab: 50257, positions: 1024, d_model: 768, heads: 12, layers: 12, d_ff: 3072, head: tied);
gpt2!(FixtureTiny, vocab: 512, positions: 128, d_model: 64, heads: 4, layers: 2, d_ff: 256, head: tied);
gpt2!(FixtureOdd, vocab: 517, positions: 96, d_model: 48, heads: 3, layers: 3, d_ff: 136, head: untied);

/// The fields of a Hugging Face GPT-2 `config.json` that fix the architecture.
#[derive(Deserialize, Debug, PartialEq)]
struct Config {
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_head: usize,
    n_layer: usize,
    n_inner: Option<usize>,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default = "gelu_new")]
    activation_function: String,
    eos_token_id: Option<u32>,
}

fn yes() -> bool {
    true
}

fn gelu_new() -> String {
    "gelu_new".into()
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, prompt, options) = parse_args(&args)?;
    let config_path = dir.join("config.json");
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
    if raw["model_type"] != "gpt2" {
        return Err(format!(
            "{} has model_type {}; this example runs GPT-2-family checkpoints (model_type \"gpt2\")",
            config_path.display(),
            raw["model_type"]
        )
        .into());
    }
    let config: Config = serde_json::from_value(raw)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("tokenizer.json").display()))?;
    let ids = tokenizer.encode(prompt.as_str(), false)?.get_ids().to_vec();
    let options = GenerateOptions { stop_tokens: config.eos_token_id.into_iter().collect(), ..options };

    let shape = (config.vocab_size, config.n_positions, config.n_embd, config.n_head, config.n_layer);
    let d_ff = config.n_inner.unwrap_or(4 * config.n_embd);
    if config.activation_function != "gelu_new" {
        return Err(format!("activation {:?} is not GPT-2's gelu_new", config.activation_function).into());
    }
    print!("{prompt}");
    let weights = dir.join("model.safetensors");
    let threads = Threads::all_cores()?;
    let tokens = match (shape, d_ff, config.tie_word_embeddings) {
        ((50257, 1024, 768, 12, 12), 3072, true) => run(Gpt2Small::from_safetensors(weights)?.with_threads(threads), &ids, &options, &tokenizer),
        ((512, 128, 64, 4, 2), 256, true) => run(FixtureTiny::from_safetensors(weights)?.with_threads(threads), &ids, &options, &tokenizer),
        ((517, 96, 48, 3, 3), 136, false) => run(FixtureOdd::from_safetensors(weights)?.with_threads(threads), &ids, &options, &tokenizer),
        _ => {
            return Err(format!(
                "no architecture declared in this example matches {config:?}; add a `gpt2!(…)` line with these dims"
            )
            .into())
        }
    }?;
    println!("\n\n[{} new tokens]", tokens);
    Ok(())
}

/// Streams the continuation, printing each token as it comes; returns how many were generated.
fn run<M: transformer::CausalLm>(
    model: M,
    prompt: &[u32],
    options: &GenerateOptions,
    tokenizer: &Tokenizer,
) -> Result<usize, Box<dyn Error + Send + Sync>> {
    let mut produced = Vec::new();
    let mut printed = 0;
    for token in transformer::stream(&model, prompt, options)? {
        produced.push(token?);
        // Decode the whole continuation each time: byte-level BPE tokens need not be whole
        // characters on their own.
        let text = tokenizer.decode(&produced, true)?;
        if text.len() > printed && text.is_char_boundary(printed) {
            print!("{}", &text[printed..]);
            printed = text.len();
            std::io::stdout().flush()?;
        }
    }
    Ok(produced.len())
}

fn parse_args(args: &[String]) -> Result<(PathBuf, String, GenerateOptions), Box<dyn Error + Send + Sync>> {
    const USAGE: &str = "usage: generate <checkpoint dir> <prompt> [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]";
    let [dir, prompt, flags @ ..] = args else { return Err(USAGE.into()) };
    let mut options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
    let (mut temperature, mut top_k, mut top_p) = (None, None, None);
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let value = flags.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--max-new-tokens" => options.max_new_tokens = value.parse()?,
            "--temperature" => temperature = Some(value.parse()?),
            "--top-k" => top_k = Some(value.parse()?),
            "--top-p" => top_p = Some(value.parse()?),
            "--seed" => options.seed = value.parse()?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
        }
    }
    if temperature.is_some() || top_k.is_some() || top_p.is_some() {
        options.sampling = Sampling::Sample { temperature: temperature.unwrap_or(1.0), top_k, top_p };
    }
    Ok((Path::new(dir).to_path_buf(), prompt.clone(), options))
}
