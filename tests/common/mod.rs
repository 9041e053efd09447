//! Helpers shared by integration tests: weight files built in memory for small models.
#![allow(dead_code)]

use transformer::{WeightLoader, WeightProblem};

/// An in-memory safetensors file of F32 tensors; values come from `value(name, index)`.
pub fn safetensors_bytes(tensors: &[(String, Vec<usize>)], value: impl Fn(&str, usize) -> f32) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let start = data.len();
        for k in 0..n {
            data.extend_from_slice(&value(name, k).to_le_bytes());
        }
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            shape.join(","),
            data.len()
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    bytes
}

/// The tensors a model asks for, found by loading it from an empty file: every one is reported
/// missing, with its expected shape.
pub fn wanted_tensors(load: impl FnOnce(&mut WeightLoader)) -> Vec<(String, Vec<usize>)> {
    let mut loader = WeightLoader::from_bytes(safetensors_bytes(&[], |_, _| 0.0), "empty").unwrap();
    load(&mut loader);
    let err = loader.finish().expect_err("an empty file lacks every tensor");
    err.problems()
        .iter()
        .map(|p| match p {
            WeightProblem::Missing { name, expected_shape } => (name.clone(), expected_shape.clone()),
            other => panic!("unexpected problem with an empty file: {other}"),
        })
        .collect()
}

/// A deterministic value in [-0.5, 0.5) for tensor `name` at `index`; norm scales near 1 so
/// activations keep their size.
pub fn pseudo_random(name: &str, index: usize) -> f32 {
    random_value(name, index, 0.5)
}

/// A deterministic value in [-scale, scale), or in [0.9, 1.1) for a norm's scale (any scheme's
/// naming: `LayerNorm.weight`, `ln_f.weight`, `layernorm_before.weight`, `model.norm.weight`, …).
pub fn random_value(name: &str, index: usize, scale: f32) -> f32 {
    let module = name.strip_suffix(".weight").map(|m| m.rsplit('.').next().unwrap_or(m));
    let is_norm_scale = module.is_some_and(|m| m.to_lowercase().contains("norm") || m.starts_with("ln_"));
    if is_norm_scale {
        return 1.0 + 0.1 * hash_unit(name, index);
    }
    hash_unit(name, index) * scale
}

/// A model loaded from deterministic random weights of magnitude `scale`: `load` runs once on an
/// empty file to learn the tensors it asks for, then on a file that has them all.
pub fn with_random_weights<M>(scale: f32, load: impl Fn(&mut WeightLoader) -> M) -> M {
    let tensors = wanted_tensors(|l| {
        load(l);
    });
    let bytes = safetensors_bytes(&tensors, |name, i| random_value(name, i, scale));
    let mut loader = WeightLoader::from_bytes(bytes, "random weights").expect("a file we built is valid");
    let model = load(&mut loader);
    loader.finish().expect("the file has every tensor the model asked for");
    model
}
fn hash_unit(name: &str, index: usize) -> f32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(index.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}
