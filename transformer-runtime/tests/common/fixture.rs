//! Reading the training fixtures (`tests/fixtures/train/*.json`, written by
//! `scripts/reference/train_*.py`): cases by op, and their values as floats, rows and counts.

use serde_json::Value;

/// The JSON fixture `tests/fixtures/train/{name}`.
pub fn read(name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/train/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture's cases of one op.
pub fn cases<'f>(fixture: &'f Value, op: &str) -> &'f [Value] {
    fixture[op].as_array().unwrap_or_else(|| panic!("fixture has no {op} cases"))
}

pub fn floats(case: &Value, key: &str) -> Vec<f32> {
    doubles(case, key).into_iter().map(|v| v as f32).collect()
}

pub fn doubles(case: &Value, key: &str) -> Vec<f64> {
    let values = case[key].as_array().unwrap_or_else(|| panic!("case has no {key}"));
    values.iter().map(|v| v.as_f64().unwrap_or_else(|| panic!("{key}: {v} is not a number"))).collect()
}

pub fn number(case: &Value, key: &str) -> usize {
    case[key].as_u64().unwrap_or_else(|| panic!("case has no integer {key}")) as usize
}

pub fn as_rows<const D: usize>(flat: &[f32]) -> Vec<[f32; D]> {
    assert!(flat.len().is_multiple_of(D), "{} floats are not rows of {D}", flat.len());
    flat.chunks_exact(D).map(|c| c.try_into().unwrap()).collect()
}
