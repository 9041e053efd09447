//! What a `transformer` model declaration says about its checkpoint's `config.json`, and the
//! comparison of the two.
//!
//! A declaration becomes one [`Expect`] per config key (`hidden_size` = `d_model` = 384,
//! `layer_norm_eps` = 1e-12, `tie_word_embeddings` = true, …); [`check`] compares them with the
//! file and lists *every* difference, including the keys that change the numerics without
//! changing any shape (an epsilon, an activation, a tied head's scaling, rope theta), which a
//! weight loader alone could never catch. A key the library does not read but that changes the
//! numerics when set ([`UNREAD`]: rope scaling, soft-capping, …) is listed too when the file gives
//! it a value other than its neutral one. Every other key is ignored.
//!
//! The macro uses it at compile time (a declaration naming its config.json) and the runtime at
//! load time (`from_pretrained`); both see the same rules.

use std::fmt;

use serde_json::Value;

/// A value a declaration implies for a config key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Setting {
    Int(i64),
    /// Compared with a relative tolerance of 1e-6 (`1e-12` written as `1e-12` or `1.0e-12`).
    Float(f64),
    Bool(bool),
    Str(&'static str),
    /// Any of these strings (activation spellings: `gelu_new` and `gelu_pytorch_tanh` are the same
    /// function).
    OneOf(&'static [&'static str]),
    /// A list of strings, in order (the Reformer's `attn_layers`).
    Strs(&'static [&'static str]),
    /// A list of integers, in order (the Reformer's `axial_pos_shape`).
    Ints(&'static [i64]),
    /// An object or list of this many entries (`id2label`: the classifier's labels).
    Count(usize),
    /// `null`: the key is off (no rope scaling, no sliding window).
    Null,
}

/// What the declaration says about one config key.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// The key's spellings, tried in order: the first present is compared (`n_embd` in GPT-2's
    /// config, `hidden_size` elsewhere; a renamed key in a newer transformers release, which may
    /// be a dotted path into an object: `rope_parameters.rope_theta`).
    pub keys: &'static [&'static str],
    /// What the declaration calls it, for messages (`d_model`, `norm_eps`, `lm_head: tied`).
    pub declared: &'static str,
    pub value: Setting,
    /// The value transformers assumes when no spelling is present (`null` counts as absent);
    /// `None`: the file must state it.
    pub default: Option<Setting>,
}

/// Keys this library never reads that change a model's numerics when set, with their neutral
/// value: a config giving one any other value describes a model the declaration cannot run.
pub const UNREAD: &[(&str, Setting)] = &[
    ("rope_scaling", Setting::Null),
    // transformers 5: `rope_parameters.rope_type` "default" is no scaling.
    ("rope_parameters.rope_type", Setting::Str("default")),
    ("attn_logit_softcapping", Setting::Null),
    ("final_logit_softcapping", Setting::Null),
    ("scale_attn_by_inverse_layer_idx", Setting::Bool(false)),
    ("attention_bias", Setting::Bool(false)),
    ("mlp_bias", Setting::Bool(false)),
    ("qk_layernorm", Setting::Bool(false)),
    ("position_embedding_type", Setting::Str("absolute")),
    ("embedding_multiplier", Setting::Null),
    ("logits_scaling", Setting::Null),
];

/// One difference between config.json and the declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// The config key (the spelling found, or the first one when none is).
    pub key: String,
    /// The file's value as JSON, or `absent`.
    pub found: String,
    /// The declaration's name for it, or what this library does with an [`UNREAD`] key.
    pub declared: String,
    /// The value the declaration implies.
    pub expected: String,
}

impl fmt::Display for Mismatch {
    /// `hidden_size 768 ≠ d_model 384`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ≠ {} {}", self.key, self.found, self.declared, self.expected)
    }
}

/// Every difference between `config` and `expects` (in their order), then every [`UNREAD`] key
/// `expects` does not cover that `config` sets to a non-neutral value.
pub fn check(config: &Value, expects: &[Expect]) -> Vec<Mismatch> {
    let mut out: Vec<Mismatch> = expects.iter().filter_map(|e| compare(config, e)).collect();
    for &(key, neutral) in UNREAD {
        if expects.iter().any(|e| e.keys.contains(&key)) {
            continue;
        }
        if let Some(found) = present(config, key) {
            if !matches(found, neutral) {
                out.push(Mismatch {
                    key: key.to_string(),
                    found: show(found),
                    declared: "unread: this library cannot run it, expected".into(),
                    expected: describe(neutral),
                });
            }
        }
    }
    out
}

/// The first spelling of the key with a non-null value.
/// The value at `key` (a dotted path reaches into objects: transformers 5 keeps rope settings
/// under `rope_parameters.rope_theta`), `null` counting as absent.
fn present<'c>(config: &'c Value, key: &str) -> Option<&'c Value> {
    key.split('.').try_fold(config, |v, part| v.get(part)).filter(|v| !v.is_null())
}

fn compare(config: &Value, expect: &Expect) -> Option<Mismatch> {
    let found = expect.keys.iter().find_map(|&k| present(config, k).map(|v| (k, v)));
    let mismatch = |key: &str, found: String| Mismatch {
        key: key.to_string(),
        found,
        declared: expect.declared.to_string(),
        expected: describe(expect.value),
    };
    let first = expect.keys.first().copied().unwrap_or("?");
    match (found, expect.default) {
        (Some((key, value)), _) => (!matches(value, expect.value)).then(|| mismatch(key, show(value))),
        // Absent: transformers' default stands in for it.
        (None, Some(default)) => (!same_setting(default, expect.value))
            .then(|| mismatch(first, format!("absent (transformers' default {})", describe(default)))),
        (None, None) if expect.value == Setting::Null => None,
        (None, None) => Some(mismatch(first, "absent".into())),
    }
}

fn matches(value: &Value, setting: Setting) -> bool {
    match setting {
        Setting::Int(i) => value.as_i64() == Some(i) || value.as_f64().is_some_and(|f| f == i as f64),
        Setting::Float(x) => value.as_f64().is_some_and(|f| close(f, x)),
        Setting::Bool(b) => value.as_bool() == Some(b),
        Setting::Str(s) => value.as_str() == Some(s),
        Setting::OneOf(options) => value.as_str().is_some_and(|s| options.contains(&s)),
        Setting::Strs(items) => value.as_array().is_some_and(|a| {
            a.len() == items.len() && a.iter().zip(items).all(|(v, s)| v.as_str() == Some(s))
        }),
        Setting::Ints(items) => value.as_array().is_some_and(|a| {
            a.len() == items.len() && a.iter().zip(items).all(|(v, &i)| v.as_i64() == Some(i))
        }),
        Setting::Count(n) => match value {
            Value::Object(map) => map.len() == n,
            Value::Array(items) => items.len() == n,
            _ => false,
        },
        Setting::Null => value.is_null(),
    }
}

/// Whether a default equals the declared setting (both ours, so compared as settings).
fn same_setting(default: Setting, declared: Setting) -> bool {
    match (default, declared) {
        (Setting::Float(a), Setting::Float(b)) => close(a, b),
        (Setting::Int(a), Setting::Float(b)) | (Setting::Float(b), Setting::Int(a)) => close(a as f64, b),
        (Setting::Str(a), Setting::OneOf(options)) | (Setting::OneOf(options), Setting::Str(a)) => {
            options.contains(&a)
        }
        (a, b) => a == b,
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

/// A config value as written in messages: JSON, with fractional numbers as Rust prints them
/// (`1e-5`, not `0.00001`), as the expected values are.
fn show(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if value.is_f64() => format!("{x:?}"),
        _ => value.to_string(),
    }
}

fn describe(setting: Setting) -> String {
    match setting {
        Setting::Int(i) => i.to_string(),
        Setting::Float(x) => format!("{x:?}"),
        Setting::Bool(b) => b.to_string(),
        Setting::Str(s) => format!("\"{s}\""),
        Setting::OneOf(options) => {
            options.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(" or ")
        }
        Setting::Strs(items) => format!("{items:?}"),
        Setting::Ints(items) => format!("{items:?}"),
        Setting::Count(n) => format!("{n} entries"),
        Setting::Null => "null (or absent)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MINILM: &[Expect] = &[
        Expect { keys: &["hidden_size"], declared: "d_model", value: Setting::Int(384), default: None },
        Expect {
            keys: &["layer_norm_eps"],
            declared: "norm_eps",
            value: Setting::Float(1e-12),
            default: Some(Setting::Float(1e-12)),
        },
        Expect {
            keys: &["hidden_act"],
            declared: "activation: gelu_erf",
            value: Setting::OneOf(&["gelu"]),
            default: Some(Setting::Str("gelu")),
        },
        Expect {
            keys: &["tie_word_embeddings"],
            declared: "lm_head: tied",
            value: Setting::Bool(true),
            default: Some(Setting::Bool(true)),
        },
    ];

    #[test]
    fn every_difference_is_listed_with_both_values() {
        let config = json!({ "hidden_size": 768, "layer_norm_eps": 1e-5, "hidden_act": "relu", "tie_word_embeddings": false });
        let found: Vec<String> = check(&config, MINILM).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "hidden_size 768 ≠ d_model 384",
                "layer_norm_eps 1e-5 ≠ norm_eps 1e-12",
                "hidden_act \"relu\" ≠ activation: gelu_erf \"gelu\"",
                "tie_word_embeddings false ≠ lm_head: tied true",
            ]
        );
    }

    #[test]
    fn an_agreeing_config_and_transformers_defaults_pass() {
        assert!(check(
            &json!({ "hidden_size": 384, "layer_norm_eps": 1.0e-12, "hidden_act": "gelu" }),
            MINILM
        )
        .is_empty());
        // Absent keys with defaults equal to the declaration; `null` counts as absent.
        assert!(check(&json!({ "hidden_size": 384, "tie_word_embeddings": null }), MINILM).is_empty());
    }

    #[test]
    fn a_required_key_absent_or_a_default_that_differs_is_a_mismatch() {
        let found = check(&json!({}), &MINILM[..1]);
        assert_eq!(found[0].to_string(), "hidden_size absent ≠ d_model 384");
        let untied = [Expect {
            keys: &["tie_word_embeddings"],
            declared: "lm_head: untied",
            value: Setting::Bool(false),
            default: Some(Setting::Bool(true)),
        }];
        let found = check(&json!({}), &untied);
        assert_eq!(
            found[0].to_string(),
            "tie_word_embeddings absent (transformers' default true) ≠ lm_head: untied false"
        );
    }

    #[test]
    fn alternative_spellings_are_tried_in_order() {
        let d = [Expect {
            keys: &["n_embd", "hidden_size"],
            declared: "d_model",
            value: Setting::Int(768),
            default: None,
        }];
        assert!(check(&json!({ "hidden_size": 768 }), &d).is_empty());
        assert_eq!(check(&json!({ "n_embd": 1024, "hidden_size": 768 }), &d)[0].key, "n_embd");
    }

    #[test]
    fn unread_keys_that_change_the_numerics_are_listed_when_set() {
        let config = json!({ "hidden_size": 384, "rope_scaling": { "type": "linear", "factor": 2.0 }, "attention_bias": false, "position_embedding_type": "relative_key" });
        let found = check(&config, MINILM);
        let keys: Vec<&str> = found.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["rope_scaling", "position_embedding_type"]);
        assert!(found[1].to_string().contains("\"absolute\""), "{}", found[1]);
    }

    #[test]
    fn lists_counts_and_nulls_compare_by_value() {
        let expects = [
            Expect {
                keys: &["attn_layers"],
                declared: "attn_layers",
                value: Setting::Strs(&["lsh", "local"]),
                default: None,
            },
            Expect {
                keys: &["axial_pos_shape"],
                declared: "axial_positions.shape",
                value: Setting::Ints(&[8, 8]),
                default: None,
            },
            Expect { keys: &["id2label"], declared: "labels", value: Setting::Count(3), default: None },
            Expect {
                keys: &["sliding_window"],
                declared: "window: none",
                value: Setting::Null,
                default: None,
            },
        ];
        let good = json!({ "attn_layers": ["lsh", "local"], "axial_pos_shape": [8, 8], "id2label": { "0": "a", "1": "b", "2": "c" } });
        assert!(check(&good, &expects).is_empty());
        let bad = json!({ "attn_layers": ["local", "lsh"], "axial_pos_shape": [8, 8, 1], "id2label": { "0": "a" }, "sliding_window": 4096 });
        assert_eq!(check(&bad, &expects).len(), 4);
    }
}
