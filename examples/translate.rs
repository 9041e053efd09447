//! Encoder-decoder generation from a Hugging Face checkpoint directory (T5 or BART):
//!
//! ```text
//! cargo run --release --example translate -- <checkpoint-dir> "translate English to German: Hello"
//! cargo run --release --example translate -- tests/fixtures/seq2seq/t5 --ids 5,17,42
//! ```
//!
//! The directory holds `config.json`, `model.safetensors` and (for text) `tokenizer.json`. Models
//! are statically shaped, so the example declares the shapes it knows (t5-small, flan-t5-small,
//! bart-base and the test fixtures) and picks the one whose dims match `config.json`; any other
//! shape is a clear error naming what was read. Without `tokenizer.json`, pass token ids with
//! `--ids` and ids are printed. Options: `--max-new-tokens N` (default 32), `--sample` with
//! `--temperature T`, `--top-p P`, `--seed S`, `--threads N`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use transformer::{GenerateOptions, Sampling, Threads};

transformer::model! {
    /// google-t5/t5-small: ReLU feed-forward, tied head.
    pub struct T5Small {
        vocab_size: 32128, max_positions: 512, d_model: 512, heads: 8, d_ff: 2048,
        activation: relu, norm: rms_norm, norm_eps: 1e-6, norm_placement: pre,
        positions: relative, relative_buckets: 32, relative_max_distance: 128,
        weights: t5, lm_head: tied, decoder_start: 0,
        encoder: { layers: 6, attention: bidirectional },
        decoder: { layers: 6, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// google/flan-t5-small (T5 v1.1): gated GELU, 6 heads of 64 in a 512-wide model, untied head.
    pub struct FlanT5Small {
        vocab_size: 32128, max_positions: 512, d_model: 512, heads: 6, head_dim: 64, d_ff: 1024,
        activation: geglu_tanh, norm: rms_norm, norm_eps: 1e-6, norm_placement: pre,
        positions: relative, relative_buckets: 32, relative_max_distance: 128,
        weights: t5, lm_head: untied, decoder_start: 0,
        encoder: { layers: 8, attention: bidirectional },
        decoder: { layers: 8, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// facebook/bart-base.
    pub struct BartBase {
        vocab_size: 50265, max_positions: 1024, d_model: 768, heads: 12, d_ff: 3072,
        activation: gelu_erf, norm: layer_norm, norm_eps: 1e-5, norm_placement: post,
        positions: learned, weights: bart, lm_head: tied, decoder_start: 2,
        encoder: { layers: 6, attention: bidirectional },
        decoder: { layers: 6, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// The `t5` test fixture (random weights): T5 v1.1 in miniature.
    pub struct T5Fixture {
        vocab_size: 96, max_positions: 64, d_model: 32, heads: 4, head_dim: 12, d_ff: 40,
        activation: geglu_tanh, norm: rms_norm, norm_eps: 1e-6, norm_placement: pre,
        positions: relative, relative_buckets: 8, relative_max_distance: 20,
        weights: t5, lm_head: untied, decoder_start: 0,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 3, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// The `bart` test fixture (random weights, `scale_embedding: true`).
    pub struct BartFixture {
        vocab_size: 120, max_positions: 64, d_model: 32, heads: 4, d_ff: 48,
        activation: gelu_erf, norm: layer_norm, norm_eps: 1e-5, norm_placement: post,
        positions: learned, embedding_scale: sqrt_d_model, weights: bart, lm_head: tied, decoder_start: 2,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

/// The `config.json` fields that decide a declared shape, as `(key, value)` pairs.
fn signature(config: &Value) -> Vec<(&'static str, String)> {
    let get = |k: &str| config.get(k).map_or_else(|| "-".to_string(), |v| v.to_string());
    match config.get("model_type").and_then(Value::as_str) {
        Some("t5") => vec![
            ("model_type", "t5".into()),
            ("vocab_size", get("vocab_size")),
            ("d_model", get("d_model")),
            ("num_heads", get("num_heads")),
            ("d_kv", get("d_kv")),
            ("d_ff", get("d_ff")),
            ("num_layers", get("num_layers")),
            // transformers defaults the decoder's depth to the encoder's.
            (
                "num_decoder_layers",
                config.get("num_decoder_layers").map_or_else(|| get("num_layers"), Value::to_string),
            ),
            ("feed_forward_proj", get("feed_forward_proj")),
            (
                "tie_word_embeddings",
                config.get("tie_word_embeddings").map_or("true".into(), Value::to_string),
            ),
            ("relative_attention_num_buckets", get("relative_attention_num_buckets")),
            ("relative_attention_max_distance", get("relative_attention_max_distance")),
        ],
        Some("bart") => vec![
            ("model_type", "bart".into()),
            ("vocab_size", get("vocab_size")),
            ("d_model", get("d_model")),
            ("encoder_attention_heads", get("encoder_attention_heads")),
            ("encoder_layers", get("encoder_layers")),
            ("decoder_layers", get("decoder_layers")),
            ("encoder_ffn_dim", get("encoder_ffn_dim")),
            ("max_position_embeddings", get("max_position_embeddings")),
            ("scale_embedding", config.get("scale_embedding").map_or("false".into(), Value::to_string)),
        ],
        other => vec![("model_type", format!("{other:?}"))],
    }
}

/// The declared shapes, by the signature their checkpoints' `config.json` has.
fn known() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let t5 = |vocab, d, heads, kv, ff, layers: (u32, u32), proj: &str, tied, buckets, dist| {
        signature(&serde_json::json!({
            "model_type": "t5", "vocab_size": vocab, "d_model": d, "num_heads": heads, "d_kv": kv, "d_ff": ff,
            "num_layers": layers.0, "num_decoder_layers": layers.1, "feed_forward_proj": proj,
            "tie_word_embeddings": tied, "relative_attention_num_buckets": buckets,
            "relative_attention_max_distance": dist,
        }))
    };
    let bart = |vocab, d, heads, layers: (u32, u32), ff, positions, scale| {
        signature(&serde_json::json!({
            "model_type": "bart", "vocab_size": vocab, "d_model": d, "encoder_attention_heads": heads,
            "encoder_layers": layers.0, "decoder_layers": layers.1, "encoder_ffn_dim": ff,
            "max_position_embeddings": positions, "scale_embedding": scale,
        }))
    };
    vec![
        ("t5-small", t5(32128, 512, 8, 64, 2048, (6, 6), "relu", true, 32, 128)),
        ("flan-t5-small", t5(32128, 512, 6, 64, 1024, (8, 8), "gated-gelu", false, 32, 128)),
        ("bart-base", bart(50265, 768, 12, (6, 6), 3072, 1024, false)),
        ("t5 fixture", t5(96, 32, 4, 12, 40, (2, 3), "gated-gelu", false, 8, 20)),
        ("bart fixture", bart(120, 32, 4, (2, 2), 48, 64, true)),
    ]
}

struct Args {
    dir: PathBuf,
    text: Option<String>,
    ids: Option<Vec<u32>>,
    options: GenerateOptions,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next().ok_or("usage: translate <checkpoint-dir> (\"text\" | --ids 1,2,3) [options]")?,
    );
    let (mut text, mut ids, mut threads) = (None, None, 1);
    let mut options = GenerateOptions { max_new_tokens: 32, ..GenerateOptions::default() };
    let (mut sample, mut temperature, mut top_p) = (false, 1.0f32, None);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--ids" => {
                let list = value("--ids")?;
                let parsed: Result<Vec<u32>, _> = list.split(',').map(|s| s.trim().parse::<u32>()).collect();
                ids = Some(parsed.map_err(|e| format!("--ids {list:?}: {e}"))?);
            }
            "--max-new-tokens" => {
                options.max_new_tokens = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?
            }
            "--seed" => options.seed = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--temperature" => temperature = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--top-p" => top_p = Some(value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?),
            "--threads" => threads = value(&arg)?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--sample" => sample = true,
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => text = Some(arg),
        }
    }
    if sample {
        options.sampling = Sampling::Sample { temperature, top_k: None, top_p };
    }
    if text.is_none() && ids.is_none() {
        return Err("give the input text, or token ids with --ids".into());
    }
    Ok(Args { dir, text, ids, options, threads })
}

/// Loads the declared type `$model` from the directory and generates from `$ids`.
macro_rules! run {
    ($model:ty, $args:expr, $ids:expr) => {{
        let model = <$model>::from_safetensors($args.dir.join("model.safetensors"))
            .map_err(|e| e.to_string())?
            .with_threads(Threads::new($args.threads).map_err(|e| e.to_string())?);
        model.generate(&[&$ids[..]], &$args.options).map_err(|e| e.to_string())?.remove(0)
    }};
}

fn read_config(dir: &Path) -> Result<Value, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = parse_args()?;
    let config = read_config(&args.dir)?;
    let sig = signature(&config);
    let Some((shape, _)) = known().into_iter().find(|(_, s)| *s == sig) else {
        let read: Vec<String> = sig.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let names: Vec<&str> = known().into_iter().map(|(n, _)| n).collect();
        return Err(format!(
            "no declared shape matches {}/config.json ({}); this example declares {}: add a `model!` for yours",
            args.dir.display(),
            read.join(", "),
            names.join(", ")
        ));
    };
    if let Some(eos) = config.get("eos_token_id").and_then(Value::as_u64) {
        args.options.stop_tokens = vec![eos as u32];
    }
    let tokenizer_path = args.dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.exists() {
        Some(
            tokenizers::Tokenizer::from_file(&tokenizer_path)
                .map_err(|e| format!("{}: {e}", tokenizer_path.display()))?,
        )
    } else {
        None
    };
    let ids = match (&args.ids, &args.text, &tokenizer) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(text), Some(tokenizer)) => {
            tokenizer.encode(text.as_str(), true).map_err(|e| format!("tokenizing: {e}"))?.get_ids().to_vec()
        }
        (None, _, None) => {
            return Err(format!("{} has no tokenizer.json: pass token ids with --ids", args.dir.display()))
        }
        (None, None, Some(_)) => return Err("give the input text, or token ids with --ids".into()),
    };
    let out = match shape {
        "t5-small" => run!(T5Small, args, ids),
        "flan-t5-small" => run!(FlanT5Small, args, ids),
        "bart-base" => run!(BartBase, args, ids),
        "t5 fixture" => run!(T5Fixture, args, ids),
        _ => run!(BartFixture, args, ids),
    };
    eprintln!("{shape}: {} source tokens -> {} new tokens", ids.len(), out.len());
    match &tokenizer {
        Some(tokenizer) => {
            println!("{}", tokenizer.decode(&out, true).map_err(|e| format!("decoding: {e}"))?)
        }
        None => println!("{}", out.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")),
    }
    Ok(())
}
