//! Checkpoint directories as Hugging Face saves them: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. A sharded checkpoint loads exactly as the single file holding
//! the same tensors; an index that disagrees with its shards, or names a file outside its
//! directory, is refused with the tensor and files named.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use transformer_runtime::weights::{WeightError, WeightLoader, WeightProblem};

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("transformer-sharded-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn values(name: &str, n: usize) -> Vec<f32> {
    // Distinct per tensor, so a tensor read from the wrong place shows.
    let seed = name.bytes().map(f32::from).sum::<f32>();
    (0..n).map(|i| seed + i as f32 * 0.25).collect()
}

/// Writes `names` (each `[2, 3]` f32) to `dir/file`.
fn write_shard(dir: &Path, file: &str, names: &[&str]) {
    let data: Vec<Vec<u8>> =
        names.iter().map(|n| values(n, 6).iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views: Vec<(&str, TensorView<'_>)> = names
        .iter()
        .zip(&data)
        .map(|(n, d)| (*n, TensorView::new(Dtype::F32, vec![2, 3], d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
}

fn write_index(dir: &Path, map: &[(&str, &str)]) {
    let weight_map: serde_json::Map<String, serde_json::Value> =
        map.iter().map(|(n, f)| (n.to_string(), serde_json::Value::from(*f))).collect();
    let index = serde_json::json!({ "metadata": { "total_size": 72 }, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Two shards, as `save_pretrained(max_shard_size=…)` writes them.
fn sharded(dir: &Path) {
    write_shard(dir, "model-00001-of-00002.safetensors", &["a.weight", "b.weight"]);
    write_shard(dir, "model-00002-of-00002.safetensors", &["c.weight"]);
    write_index(
        dir,
        &[
            ("a.weight", "model-00001-of-00002.safetensors"),
            ("b.weight", "model-00001-of-00002.safetensors"),
            ("c.weight", "model-00002-of-00002.safetensors"),
        ],
    );
}

fn format_reason(result: Result<WeightLoader, WeightError>) -> String {
    match result {
        Err(WeightError::Format { reason, .. }) => reason,
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn shards_load_as_the_single_file_does() {
    let (split, single) = (TempDir::new("split"), TempDir::new("single"));
    sharded(&split.0);
    write_shard(&single.0, "model.safetensors", &["a.weight", "b.weight", "c.weight"]);
    for dir in [&split.0, &single.0] {
        let mut weights = WeightLoader::open_dir(dir).expect("the checkpoint opens");
        assert_eq!(weights.names(), ["a.weight", "b.weight", "c.weight"]);
        for name in ["a.weight", "b.weight", "c.weight"] {
            assert_eq!(weights.take(name, &[2, 3]), values(name, 6), "{name} from {}", dir.display());
        }
        weights.finish().expect("every tensor taken");
    }
}

#[test]
fn problems_across_shards_are_listed_together() {
    let dir = TempDir::new("problems");
    sharded(&dir.0);
    let mut weights = WeightLoader::open_sharded(dir.0.join("model.safetensors.index.json")).unwrap();
    let _ = weights.take("a.weight", &[3, 2]);
    let _ = weights.take("d.weight", &[2]);
    let err = weights.finish().expect_err("problems in both shards");
    let problems = err.problems().to_vec();
    assert_eq!(
        problems,
        [
            WeightProblem::ShapeMismatch { name: "a.weight".into(), expected: vec![3, 2], found: vec![2, 3] },
            WeightProblem::Missing { name: "d.weight".into(), expected_shape: vec![2] },
            WeightProblem::Unexpected { name: "b.weight".into() },
            WeightProblem::Unexpected { name: "c.weight".into() },
        ]
    );
    assert!(err.to_string().contains("model.safetensors.index.json"), "{err}");
}

#[test]
fn a_tensor_in_another_shard_than_listed_is_refused() {
    let dir = TempDir::new("misplaced");
    sharded(&dir.0);
    write_index(
        &dir.0,
        &[
            ("a.weight", "model-00001-of-00002.safetensors"),
            ("b.weight", "model-00002-of-00002.safetensors"),
            ("c.weight", "model-00002-of-00002.safetensors"),
        ],
    );
    let reason = format_reason(WeightLoader::open_dir(&dir.0));
    assert!(
        reason.contains("`b.weight`")
            && reason.contains("model-00001-of-00002")
            && reason.contains("model-00002-of-00002"),
        "{reason}"
    );
}

#[test]
fn an_unlisted_or_unstored_tensor_is_refused() {
    let dir = TempDir::new("unlisted");
    sharded(&dir.0);
    write_index(
        &dir.0,
        &[("a.weight", "model-00001-of-00002.safetensors"), ("c.weight", "model-00002-of-00002.safetensors")],
    );
    let reason = format_reason(WeightLoader::open_dir(&dir.0));
    assert!(reason.contains("`b.weight`") && reason.contains("does not list"), "{reason}");

    let dir = TempDir::new("unstored");
    sharded(&dir.0);
    write_index(
        &dir.0,
        &[
            ("a.weight", "model-00001-of-00002.safetensors"),
            ("b.weight", "model-00001-of-00002.safetensors"),
            ("c.weight", "model-00002-of-00002.safetensors"),
            ("d.weight", "model-00002-of-00002.safetensors"),
        ],
    );
    let reason = format_reason(WeightLoader::open_dir(&dir.0));
    assert!(reason.contains("`d.weight`") && reason.contains("does not store"), "{reason}");
}

#[test]
fn a_shard_outside_the_directory_is_refused() {
    for file in ["../model.safetensors", "/etc/passwd", "sub/model.safetensors", ".."] {
        let dir = TempDir::new("outside");
        write_index(&dir.0, &[("a.weight", file)]);
        let reason = format_reason(WeightLoader::open_dir(&dir.0));
        assert!(reason.contains(file) && reason.contains("beside the index"), "{file}: {reason}");
    }
}

#[test]
fn a_missing_shard_or_checkpoint_is_an_io_error_naming_it() {
    let dir = TempDir::new("missing");
    sharded(&dir.0);
    std::fs::remove_file(dir.0.join("model-00002-of-00002.safetensors")).unwrap();
    match WeightLoader::open_dir(&dir.0) {
        Err(e @ WeightError::Io { .. }) => {
            assert!(e.to_string().contains("model-00002-of-00002.safetensors"), "{e}")
        }
        other => panic!("expected an I/O error, got {:?}", other.map(|_| ())),
    }
    let empty = TempDir::new("empty");
    match WeightLoader::open_dir(&empty.0) {
        Err(e @ WeightError::Io { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("model.safetensors") && message.contains("model.safetensors.index.json"),
                "{message}"
            );
        }
        other => panic!("expected an I/O error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_malformed_index_is_a_format_error() {
    for text in ["not json", "{}", r#"{"weight_map": {}}"#, r#"{"weight_map": {"a.weight": 3}}"#] {
        let dir = TempDir::new("malformed");
        std::fs::write(dir.0.join("model.safetensors.index.json"), text).unwrap();
        let reason = format_reason(WeightLoader::open_dir(&dir.0));
        assert!(!reason.is_empty(), "{text}");
    }
}

/// A file of `names` (each `[2, 3]`) opened from memory.
fn loader_of(names: &[&str]) -> WeightLoader {
    let dir = TempDir::new(&format!("rename-{}", names.len()));
    write_shard(&dir.0, "model.safetensors", names);
    WeightLoader::open(dir.0.join("model.safetensors")).unwrap()
}

const VIT_5X: &[transformer_runtime::weights::Rename] = &[
    transformer_runtime::weights::Rename::Segments { theirs: "layers", ours: "encoder.layer" },
    transformer_runtime::weights::Rename::Segments {
        theirs: "attention.q_proj",
        ours: "attention.attention.query",
    },
];

#[test]
fn a_newer_generation_of_names_is_read_under_the_models_names() {
    let mut weights =
        loader_of(&["vit.layers.0.attention.q_proj.weight", "vit.layers.0.layernorm_before.weight"]);
    weights.rename(VIT_5X);
    assert_eq!(
        weights.take("vit.encoder.layer.0.attention.attention.query.weight", &[2, 3]),
        values("vit.layers.0.attention.q_proj.weight", 6)
    );
    // A problem about a renamed tensor names it as the file does.
    let _ = weights.take("vit.encoder.layer.0.layernorm_before.weight", &[6]);
    let message = weights.finish().unwrap_err().to_string();
    assert!(
        message.contains("`vit.layers.0.layernorm_before.weight`: expected shape [6], found [2, 3]"),
        "{message}"
    );
}

#[test]
fn a_tensor_under_both_generations_is_refused() {
    let mut weights = loader_of(&[
        "vit.layers.0.attention.q_proj.weight",
        "vit.encoder.layer.0.attention.attention.query.weight",
    ]);
    weights.rename(VIT_5X);
    let err = weights.finish().unwrap_err();
    assert!(err.problems().iter().any(|p| matches!(p, WeightProblem::TwoNames { .. })), "{err}");
}

#[test]
fn a_preferred_name_replaces_the_leftover() {
    use transformer_runtime::weights::Rename;
    let prefer = [Rename::Prefer { theirs: "lm_head.decoder.bias", ours: "lm_head.bias" }];
    let mut v5 = loader_of(&["lm_head.decoder.bias", "lm_head.bias"]);
    v5.rename(&prefer);
    assert_eq!(v5.take("lm_head.bias", &[2, 3]), values("lm_head.decoder.bias", 6));
    v5.finish().expect("the leftover is not reported");
    let mut v4 = loader_of(&["lm_head.bias"]);
    v4.rename(&prefer);
    assert_eq!(v4.take("lm_head.bias", &[2, 3]), values("lm_head.bias", 6));
    v4.finish().unwrap();
}
