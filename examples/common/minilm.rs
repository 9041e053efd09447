//! all-MiniLM-L6-v2 declared with the macro, where its files are, and its tokenizer.
//! Shared by `examples/embed.rs`, the parity test and the benchmark; each uses a part.
#![allow(dead_code)]

use std::path::PathBuf;

use tokenizers::Tokenizer;
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

/// The checkpoint's tokenizer, with its fixed padding to 128 and truncation at 128 turned off: the
/// batch pads itself, and a text longer than the model takes is an error, not silently cut.
pub fn tokenizer() -> Result<Tokenizer, String> {
    let path = model_dir().join("tokenizer.json");
    let mut tokenizer =
        Tokenizer::from_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| e.to_string())?;
    Ok(tokenizer)
}

/// Tokenises `texts` (with [CLS] and [SEP]) into one padded batch.
pub fn encode(
    tokenizer: &Tokenizer,
    texts: &[&str],
) -> Result<Batch, Box<dyn std::error::Error + Send + Sync>> {
    let encodings = tokenizer.encode_batch(texts.to_vec(), true)?;
    let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
    let types: Vec<&[u32]> = encodings.iter().map(|e| e.get_type_ids()).collect();
    Ok(Batch::from_sequences(&ids)?.with_token_types(&types)?)
}
