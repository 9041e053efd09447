//! all-MiniLM-L6-v2 declared with the macro, where its files are, and its tokenizer.
//! Shared by `examples/embed.rs`, the parity test and the benchmark; each uses a part.
#![allow(dead_code)]

use std::path::PathBuf;

use transformer::text::Tokenizer;
use transformer::Batch;

transformer::model! {
    /// sentence-transformers/all-MiniLM-L6-v2: a 6-layer BERT encoder, 384 wide, 12 heads.
    pub struct MiniLm {
        vocab_size: 30522,
        max_positions: 512,
        type_vocab_size: 2,
        d_model: 384,
        heads: 12,
        layers: 6,
        d_ff: 1536,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

/// The model directory `scripts/fetch-model.sh` fills (override with `MINILM_DIR`).
pub fn model_dir() -> PathBuf {
    match std::env::var_os("MINILM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2"),
    }
}

/// Loads the real weights, or explains how to fetch them.
pub fn load() -> MiniLm {
    let path = model_dir().join("model.safetensors");
    match MiniLm::from_safetensors(&path) {
        Ok(model) => model,
        Err(e) => {
            panic!("{e}\n(run `bash scripts/fetch-model.sh` to fetch all-MiniLM-L6-v2 into .cache/models)")
        }
    }
}

/// The checkpoint's tokenizer (`transformer::text::Tokenizer` turns off its fixed padding to 128
/// and truncation at 128: the batch pads itself, and a text longer than the model takes is an
/// error, not silently cut).
pub fn tokenizer() -> transformer::Result<Tokenizer> {
    Tokenizer::from_file(model_dir().join("tokenizer.json"))
}

/// Tokenises `texts` (with [CLS] and [SEP]) into one padded batch.
pub fn encode(tokenizer: &Tokenizer, texts: &[&str]) -> transformer::Result<Batch> {
    transformer::text::batch(tokenizer, texts, MiniLm::MAX_POSITIONS, transformer::text::Truncation::Refuse)
}
