//! What the generated-trainer tests share: the reference fixtures (`tests/fixtures/train/*`,
//! written by `scripts/reference/train_*.py`) read into the trainer's layout, and the comparisons
//! with their tolerances.
#![allow(dead_code)]

use std::path::PathBuf;

use transformer::__private::ndarray::Array2;
use transformer::train::optim::AdamWConfig;
use transformer::train::params::ParamTable;
use transformer::train::StepReport;
use transformer::{Batch, WeightLoader};

pub fn root(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn json(path: &str) -> serde_json::Value {
    let path = root(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A `[batch, seq]` array of the reference's integers under `key`.
pub fn matrix(reference: &serde_json::Value, key: &str) -> Array2<u32> {
    let rows: Vec<Vec<u32>> = reference[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .collect();
    let (b, s) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((b, s), rows.concat()).unwrap()
}

/// The reference's padded batch (`ids`, `attention_mask`, and `token_type_ids` when it has them).
pub fn batch(reference: &serde_json::Value) -> Batch {
    let (ids, mask) = (matrix(reference, "ids"), matrix(reference, "attention_mask"));
    let types = reference.get("token_type_ids").map(|_| matrix(reference, "token_type_ids"));
    Batch::from_padded(ids.view(), mask.view(), types.as_ref().map(|t| t.view())).unwrap()
}

/// Every tensor of `table` read from a safetensors file of the reference, in the trainer's layout
/// (GPT-2's `Conv1D` weights transposed).
pub fn reference_tensors(table: &ParamTable, path: &str) -> Vec<(String, Vec<f32>)> {
    let mut loader = WeightLoader::open(root(path)).unwrap();
    table
        .specs()
        .iter()
        .map(|spec| (spec.name.clone(), spec.from_stored(loader.take(&spec.name, &spec.stored_shape()))))
        .collect()
}

/// max |ours − reference| / max |reference|.
pub fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
    let scale = reference.iter().fold(0.0f64, |m, &r| m.max(f64::from(r).abs())).max(f64::MIN_POSITIVE);
    ours.iter().zip(reference).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs())) / scale
}

/// The key bias's gradient is zero in exact arithmetic (it adds the same q·b to every score of a
/// query, which softmax ignores): both sides hold rounding noise (|g| ≈ 3e-8), so it is checked in
/// absolute terms.
pub fn is_key_bias(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
}

/// Largest gradient error allowed, relative to the reference tensor's largest magnitude (measured
/// worst: 7.2e-6, the real MiniLM).
pub const GRADIENT_TOLERANCE: f64 = 2e-5;

/// Asserts every gradient within [`GRADIENT_TOLERANCE`] (key biases within 1e-6 absolute);
/// returns the worst error and its tensor.
pub fn assert_gradients(ours: impl Fn(&str) -> Vec<f32>, expected: &[(String, Vec<f32>)]) -> (f64, String) {
    let mut worst = (0.0, String::new());
    for (name, theirs) in expected {
        let ours = ours(name);
        if is_key_bias(name) {
            let largest = ours.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(largest <= 1e-6, "{name}: |g| {largest:.3e} where the exact gradient is zero");
            continue;
        }
        let error = relative_error(&ours, theirs);
        assert!(
            error <= GRADIENT_TOLERANCE,
            "{name}: gradient relative error {error:.3e} > {GRADIENT_TOLERANCE:e}"
        );
        if error > worst.0 {
            worst = (error, name.clone());
        }
    }
    eprintln!("worst gradient error {:.3e} ({})", worst.0, worst.1);
    worst
}

pub fn assert_loss(ours: f32, reference: f64, tolerance: f64, what: &str) {
    let error = (f64::from(ours) - reference).abs() / reference.abs();
    assert!(error <= tolerance, "{what}: {ours} vs {reference} (relative error {error:.3e})");
}

/// The reference's AdamW: its weight decay, and betas and eps where it states them.
pub fn adamw_config(reference: &serde_json::Value) -> AdamWConfig {
    let mut config = AdamWConfig::with_weight_decay(reference["weight_decay"].as_f64().unwrap());
    if let Some(betas) = reference.get("betas").and_then(|b| b.as_array()) {
        config.betas = (betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap());
    }
    if let Some(eps) = reference.get("eps").and_then(|e| e.as_f64()) {
        config.eps = eps;
    }
    config
}

/// Our decay groups are the reference's: `no_decay` lists the tensors without weight decay.
pub fn assert_decay_groups(table: &ParamTable, reference: &serde_json::Value) {
    let no_decay: Vec<&str> =
        reference["no_decay"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for spec in table.specs() {
        assert_eq!(!spec.decay, no_decay.contains(&spec.name.as_str()), "{}: decay group", spec.name);
    }
}

/// Runs one `step` per reference loss; each loss and pre-clip gradient norm within `tolerance`.
pub fn assert_steps(reference: &serde_json::Value, tolerance: f64, mut step: impl FnMut() -> StepReport) {
    let losses = reference["losses"].as_array().unwrap();
    let norms = reference["grad_norms"].as_array().unwrap();
    let mut worst = 0.0f64;
    for (i, (loss, norm)) in losses.iter().zip(norms).enumerate() {
        let report = step();
        let (loss, norm) = (loss.as_f64().unwrap(), norm.as_f64().unwrap());
        assert_loss(report.loss, loss, tolerance, &format!("step {i}: loss"));
        assert_loss(report.grad_norm, norm, tolerance, &format!("step {i}: grad norm"));
        worst = worst.max((f64::from(report.loss) - loss).abs() / loss);
    }
    eprintln!("worst loss error over {} steps {worst:.3e}", losses.len());
}

/// The largest |ours − reference| over every parameter but those `skip` names.
pub fn assert_final_weights(
    table: &ParamTable,
    params: &[f32],
    expected: &[(String, Vec<f32>)],
    skip: impl Fn(&str) -> bool,
) {
    let mut worst = (0.0f64, String::new());
    for ((name, range), (_, theirs)) in table.ranges().zip(expected) {
        if skip(name) {
            continue;
        }
        let error =
            params[range].iter().zip(theirs).fold(0.0f64, |m, (&a, &b)| m.max(f64::from(a - b).abs()));
        if error > worst.0 {
            worst = (error, name.to_string());
        }
    }
    eprintln!("worst final weight |Δ| {:.3e} ({})", worst.0, worst.1);
    assert!(worst.0 <= 1e-4, "final weights: {} off by {:.3e}", worst.1, worst.0);
}

/// With `TRAINED_DIR` set, saves `save`'s checkpoint directory under `TRAINED_DIR/name` with a
/// `check.json` (the batch, transformers-style labels, our loss) for
/// `scripts/reference/check_saved_checkpoint.py`, which loads the directory in transformers and
/// compares its loss. Without it, does nothing.
pub fn save_for_transformers(
    name: &str,
    batch: &Batch,
    labels: &[i64],
    loss: f32,
    save: impl FnOnce(&std::path::Path) -> transformer::Result<()>,
) {
    let Some(root) = std::env::var_os("TRAINED_DIR") else { return };
    let dir = std::path::Path::new(&root).join(name);
    save(&dir).unwrap();
    let seq = batch.seq_len();
    let rows = |v: Vec<i64>| v.chunks(seq).map(<[i64]>::to_vec).collect::<Vec<_>>();
    let mut check = serde_json::json!({
        "input_ids": rows(batch.ids().iter().map(|&i| i64::from(i)).collect()),
        "attention_mask": rows(batch.mask().iter().map(|&m| i64::from(m)).collect()),
        "labels": rows(labels.to_vec()),
        "loss": loss,
    });
    if (0..batch.rows()).any(|r| batch.type_id(r) != 0) {
        check["token_type_ids"] =
            rows((0..batch.rows()).map(|r| i64::from(batch.type_id(r))).collect()).into();
    }
    std::fs::write(dir.join("check.json"), check.to_string()).unwrap();
}

/// transformers' causal-LM labels: the ids, `-100` at padding (the model shifts them itself).
pub fn causal_labels(batch: &Batch) -> Vec<i64> {
    batch.ids().iter().zip(batch.mask()).map(|(&id, &real)| if real { i64::from(id) } else { -100 }).collect()
}
