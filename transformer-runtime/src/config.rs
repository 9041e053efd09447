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

/// Generation settings from a checkpoint directory's `generation_config.json`, as
/// `model.generate(…)` in transformers would start from them: `eos_token_id` (one id or a list)
/// becomes the stop tokens, `max_new_tokens` the length, `do_sample` with `temperature`, `top_k`
/// (transformers' default 50) and `top_p` the sampling. Without the file, the defaults. Beam search
/// (`num_beams` > 1) is not something this library does: an error, not a silently greedy run.
pub fn generation_options(dir: &Path) -> Result<crate::GenerateOptions, ConfigError> {
    let path = dir.join("generation_config.json");
    let mut options = crate::GenerateOptions::default();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(options),
        Err(source) => return Err(ConfigError::Io { path, source }),
    };
    let format = |reason: String| ConfigError::Format { path: path.clone(), reason };
    let config: Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let field = |key: &str| config.get(key).filter(|v| !v.is_null());
    let id = |v: &Value| v.as_u64().and_then(|i| u32::try_from(i).ok());
    if let Some(eos) = field("eos_token_id") {
        options.stop_tokens = match eos {
            Value::Array(ids) => ids.iter().map(id).collect::<Option<Vec<u32>>>(),
            one => id(one).map(|i| vec![i]),
        }
        .ok_or_else(|| format(format!("eos_token_id {eos} is not a token id or a list of them")))?;
    }
    if let Some(n) = field("max_new_tokens") {
        options.max_new_tokens = n
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format(format!("max_new_tokens {n} is not a count")))?;
    }
    if let Some(beams) = field("num_beams").and_then(Value::as_u64).filter(|&b| b > 1) {
        return Err(format(format!(
            "num_beams {beams}: beam search is not supported (greedy or sampling only)"
        )));
    }
    if field("do_sample").and_then(Value::as_bool) == Some(true) {
        let float = |key: &str| field(key).and_then(Value::as_f64);
        options.sampling = crate::Sampling::Sample {
            temperature: float("temperature").unwrap_or(1.0) as f32,
            top_k: match field("top_k").and_then(Value::as_u64) {
                Some(0) => None,
                Some(k) => Some(k as usize),
                None => Some(50),
            },
            top_p: float("top_p").filter(|&p| p < 1.0).map(|p| p as f32),
        };
    }
    Ok(options)
}

/// The config.json a declaration implies: every key of `expects` under its first spelling, with
/// the declared value (the first of several accepted spellings), and `architectures`. Keys only
/// a classifier has (`id2label`, a count) are left out. What [`check_file`] reads back without a
/// difference, and what transformers' `from_pretrained` reads.
pub fn config_json(expects: &[Expect], architecture: &str) -> Value {
    let mut config = serde_json::Map::new();
    config.insert("architectures".into(), Value::from(vec![architecture]));
    for expect in expects {
        let value = match expect.value {
            Setting::Int(i) => Value::from(i),
            Setting::Float(x) => Value::from(x),
            Setting::Bool(b) => Value::from(b),
            Setting::Str(s) => Value::from(s),
            Setting::OneOf(options) => Value::from(options[0]),
            Setting::Strs(items) => Value::from(items.to_vec()),
            Setting::Ints(items) => Value::from(items.to_vec()),
            Setting::Null => Value::Null,
            Setting::Count(_) => continue,
        };
        insert_path(&mut config, expect.keys[0], value);
    }
    Value::Object(config)
}

/// `map[a][b]… = value` for the dotted key `a.b…`.
fn insert_path(map: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            map.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = map.entry(head).or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Value::Object(inner) = inner {
                insert_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_of(json: &str) -> Result<crate::GenerateOptions, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("transformer-genconfig-{}-{}", std::process::id(), json.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("generation_config.json"), json).unwrap();
        let out = generation_options(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn stop_tokens_length_and_sampling_come_from_the_file() {
        let o = options_of(r#"{"eos_token_id": [2, 7], "max_new_tokens": 64, "do_sample": true, "temperature": 0.7, "top_p": 0.9}"#).unwrap();
        assert_eq!((o.stop_tokens, o.max_new_tokens), (vec![2, 7], 64));
        assert_eq!(
            o.sampling,
            crate::Sampling::Sample { temperature: 0.7, top_k: Some(50), top_p: Some(0.9) }
        );
        let o = options_of(r#"{"eos_token_id": 511, "bos_token_id": 511}"#).unwrap();
        assert_eq!((o.stop_tokens, o.sampling), (vec![511], crate::Sampling::Greedy));
    }

    #[test]
    fn no_file_is_the_defaults_and_beam_search_is_refused() {
        let missing = std::env::temp_dir().join("transformer-genconfig-none");
        assert_eq!(generation_options(&missing).unwrap(), crate::GenerateOptions::default());
        let err = options_of(r#"{"num_beams": 4}"#).unwrap_err().to_string();
        assert!(err.contains("num_beams 4"), "{err}");
        assert!(options_of(r#"{"eos_token_id": "x"}"#).is_err());
    }
}
