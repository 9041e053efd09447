//! A checkpoint's `config.json` checked against the model's declaration: the rules are
//! [`transformer_config`]'s (shared with the macro's compile-time check); this reads the file.

use std::path::Path;

use serde_json::Value;
pub use transformer_config::{check, Expect, Mismatch, Setting, UNREAD};

/// Reads `path` (untrusted JSON: any parse failure is [`ConfigError::Format`]) and [`check`]s it.
pub fn check_file(path: &Path, expects: &[Expect]) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| ConfigError::Format { path: path.to_path_buf(), reason: e.to_string() })?;
    if !config.is_object() {
        return Err(ConfigError::Format { path: path.to_path_buf(), reason: "not a JSON object".into() });
    }
    match check(&config, expects) {
        mismatches if mismatches.is_empty() => Ok(config),
        mismatches => Err(ConfigError::Mismatch { path: path.to_path_buf(), mismatches }),
    }
}

/// A config.json that cannot be read, or that describes another model than the declaration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid config: {reason}", path.display())]
    Format { path: std::path::PathBuf, reason: String },
    /// Display: "N differences between <path> and the declaration:" then one line per key, e.g.
    /// "  - hidden_size 768 ≠ d_model 384".
    #[error("{}", display_mismatches(path, mismatches))]
    Mismatch { path: std::path::PathBuf, mismatches: Vec<Mismatch> },
}

fn display_mismatches(path: &Path, mismatches: &[Mismatch]) -> String {
    let n = mismatches.len();
    let noun = if n == 1 { "difference" } else { "differences" };
    let mut out = format!("{n} {noun} between {} and the declaration:", path.display());
    for m in mismatches {
        out.push_str(&format!("\n  - {m}"));
    }
    out
}
