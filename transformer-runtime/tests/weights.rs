//! Tests of the safetensors weight loader: conversions, problem reporting, and robustness against
//! malformed (untrusted) files.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use transformer_runtime::weights::{WeightError, WeightLoader, WeightProblem};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One tensor to write: name, dtype, shape, raw little-endian bytes.
type Spec = (&'static str, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()
}

/// A valid safetensors file, written by the safetensors crate itself.
fn file(tensors: &[Spec]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (*name, TensorView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_tensor(name: &'static str, shape: &[usize]) -> Spec {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
    (name, Dtype::F32, shape.to_vec(), f32_bytes(&values))
}

fn loader(tensors: &[Spec]) -> WeightLoader {
    WeightLoader::from_bytes(file(tensors), "test.safetensors").unwrap()
}

/// A file built by hand: 8-byte little-endian header length, the header, the data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn problems(result: Result<(), WeightError>) -> (Vec<WeightProblem>, String) {
    match result {
        Err(e @ WeightError::Problems { .. }) => (e.problems().to_vec(), e.to_string()),
        other => panic!("expected WeightError::Problems, got {other:?}"),
    }
}

/// Asserts `bytes` is rejected with a Format error (and, by getting here, that nothing panicked).
#[track_caller]
fn assert_format_error(bytes: Vec<u8>, reason_contains: &str) {
    match WeightLoader::from_bytes(bytes, "bad.safetensors") {
        Err(WeightError::Format { path, reason }) => {
            assert_eq!(path, Path::new("bad.safetensors"));
            assert!(
                reason.contains(reason_contains),
                "reason {reason:?} does not mention {reason_contains:?}"
            );
        }
        Err(other) => panic!("expected a Format error, got {other:?}"),
        Ok(loader) => panic!("expected a Format error, got a loader with {:?}", loader.names()),
    }
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "transformer-runtime-weights-{tag}-{}-{:?}.safetensors",
        std::process::id(),
        std::thread::current().id()
    ))
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

#[test]
fn f32_round_trip() {
    let values = [
        0.0,
        -0.0,
        1.5,
        -3.25,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-42, // subnormal
        123_456.79,
    ];
    let mut weights = loader(&[("w", Dtype::F32, vec![2, 4], f32_bytes(&values))]);
    let got = weights.take("w", &[2, 4]);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    weights.finish().unwrap();
}

#[test]
fn f16_round_trip() {
    // All exactly representable in f16.
    let values = [0.0, 1.0, -2.5, 0.099_975_586, 65504.0, -0.000_061_035_156, 1000.5, 3.0];
    let mut weights = loader(&[("h", Dtype::F16, vec![8], f16_bytes(&values))]);
    assert_eq!(weights.info("h"), Some(("F16".to_string(), vec![8])));
    assert_eq!(weights.take("h", &[8]), values);
    weights.finish().unwrap();
}

#[test]
fn bf16_round_trip() {
    // All exactly representable in bf16.
    let values = [0.0, 1.0, -2.5, 0.09375, 3.389_531_4e38, -1.175_494_4e-38, 256.0, 7.0];
    let expected: Vec<f32> = values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    assert_eq!(expected, values, "test values must be exact in bf16");
    let mut weights = loader(&[("b", Dtype::BF16, vec![4, 2], bf16_bytes(&values))]);
    assert_eq!(weights.info("b"), Some(("BF16".to_string(), vec![4, 2])));
    assert_eq!(weights.take("b", &[4, 2]), values);
    weights.finish().unwrap();
}

#[test]
fn unaligned_data_is_read_correctly() {
    // Padding the header puts the f32 data at offset 11 of the buffer (and an odd address).
    let header = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#;
    let pad = (3 + 4 - (8 + header.len()) % 4) % 4;
    let header = format!("{header}{}", " ".repeat(pad));
    let bytes = raw(&header, &f32_bytes(&[1.0, -2.0, 3.5]));
    assert_eq!((8 + header.len()) % 4, 3);
    let mut weights = WeightLoader::from_bytes(bytes, "unaligned").unwrap();
    assert_eq!(weights.take("a", &[3]), [1.0, -2.0, 3.5]);
    weights.finish().unwrap();
}

#[test]
fn scalar_and_empty_tensors() {
    let mut weights = loader(&[
        ("scalar", Dtype::F32, vec![], f32_bytes(&[4.0])),
        ("empty", Dtype::F32, vec![0, 3], vec![]),
    ]);
    assert_eq!(weights.take("scalar", &[]), [4.0]);
    assert_eq!(weights.take("empty", &[0, 3]), Vec::<f32>::new());
    weights.finish().unwrap();
}

#[test]
fn open_reads_a_file_from_disk() {
    let path = temp_path("open");
    let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let data = f32_bytes(&values);
    let view = TensorView::new(Dtype::F32, vec![2, 3], &data).unwrap();
    safetensors::serialize_to_file([("m", view)], None, &path).unwrap();

    let result = WeightLoader::open(&path).map(|mut weights| {
        assert_eq!(weights.source(), path.as_path());
        let got = weights.take("m", &[2, 3]);
        (got, weights.finish())
    });
    std::fs::remove_file(&path).unwrap();
    let (got, finished) = result.unwrap();
    assert_eq!(got, values);
    finished.unwrap();
}

#[test]
fn open_missing_file_is_an_io_error_naming_the_path() {
    let path = temp_path("does-not-exist");
    let err = WeightLoader::open(&path).unwrap_err();
    assert!(matches!(err, WeightError::Io { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("cannot read weight file "), "{message}");
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
}

#[test]
fn open_garbage_file_is_a_format_error() {
    let path = temp_path("garbage");
    std::fs::write(&path, b"definitely not safetensors").unwrap();
    let result = WeightLoader::open(&path);
    let empty = temp_path("empty");
    std::fs::write(&empty, b"").unwrap();
    let empty_result = WeightLoader::open(&empty);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&empty).unwrap();
    assert!(matches!(result, Err(WeightError::Format { .. })), "{result:?}");
    assert!(matches!(empty_result, Err(WeightError::Format { .. })), "{empty_result:?}");
}

// ---------------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------------

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let name = "encoder.layer.0.attention.self.query.weight";
    let mut weights = loader(&[f32_tensor(name, &[4, 3])]);
    let got = weights.take(name, &[4, 4]);
    assert_eq!(got, vec![0.0; 16], "a mismatch yields zeros of the expected size");
    let (list, message) = problems(weights.finish());
    assert_eq!(
        list,
        [WeightProblem::ShapeMismatch { name: name.to_string(), expected: vec![4, 4], found: vec![4, 3] }]
    );
    assert_eq!(
        message,
        "1 problem with the weights in test.safetensors:\n  - tensor \
         `encoder.layer.0.attention.self.query.weight`: expected shape [4, 4], found [4, 3]"
    );
}

#[test]
fn no_implicit_squeeze() {
    let mut weights = loader(&[f32_tensor("bias", &[1, 6])]);
    assert_eq!(weights.take("bias", &[6]), vec![0.0; 6]);
    let (list, _) = problems(weights.finish());
    assert_eq!(
        list,
        [WeightProblem::ShapeMismatch { name: "bias".to_string(), expected: vec![6], found: vec![1, 6] }]
    );
}

#[test]
fn missing_unexpected_and_mismatch_reported_together() {
    let mut weights = loader(&[
        f32_tensor("good", &[2, 2]),
        f32_tensor("wrong", &[3]),
        f32_tensor("zzz.extra", &[1]),
        f32_tensor("aaa.extra", &[2]),
    ]);
    assert_eq!(weights.take("good", &[2, 2]), [-1.0, -0.5, 0.0, 0.5]);
    assert_eq!(weights.take("pooler.dense.bias", &[5]), vec![0.0; 5]);
    assert_eq!(weights.take("wrong", &[4]), vec![0.0; 4]);
    assert_eq!(weights.problems().len(), 2);
    let (list, message) = problems(weights.finish());
    assert_eq!(
        list,
        [
            WeightProblem::Missing { name: "pooler.dense.bias".to_string(), expected_shape: vec![5] },
            WeightProblem::ShapeMismatch { name: "wrong".to_string(), expected: vec![4], found: vec![3] },
            WeightProblem::Unexpected { name: "aaa.extra".to_string() },
            WeightProblem::Unexpected { name: "zzz.extra".to_string() },
        ]
    );
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines,
        [
            "4 problems with the weights in test.safetensors:",
            "  - tensor `pooler.dense.bias`: missing (expected shape [5])",
            "  - tensor `wrong`: expected shape [4], found [3]",
            "  - tensor `aaa.extra`: in the file but not used by this model",
            "  - tensor `zzz.extra`: in the file but not used by this model",
        ]
    );
}

#[test]
fn ignore_suppresses_unexpected() {
    let mut weights = loader(&[f32_tensor("used", &[2]), f32_tensor("embeddings.position_ids", &[1, 4])]);
    weights.take("used", &[2]);
    weights.ignore("embeddings.position_ids");
    weights.ignore("not.in.the.file"); // absent is fine
    weights.finish().unwrap();

    // And without the ignore, it is reported.
    let mut weights = loader(&[f32_tensor("used", &[2]), f32_tensor("embeddings.position_ids", &[1, 4])]);
    weights.take("used", &[2]);
    let (list, _) = problems(weights.finish());
    assert_eq!(list, [WeightProblem::Unexpected { name: "embeddings.position_ids".to_string() }]);
}

#[test]
fn take_optional() {
    let mut weights = loader(&[f32_tensor("present", &[3]), f32_tensor("bad", &[2])]);
    assert_eq!(weights.take_optional("absent", &[3]), None);
    assert_eq!(weights.take_optional("present", &[3]), Some(vec![-1.0, -0.5, 0.0]));
    assert_eq!(weights.take_optional("bad", &[3]), Some(vec![0.0; 3]));
    let (list, _) = problems(weights.finish());
    assert_eq!(
        list,
        [WeightProblem::ShapeMismatch { name: "bad".to_string(), expected: vec![3], found: vec![2] }],
        "absent is not a problem, a wrong shape is"
    );

    let mut weights = loader(&[f32_tensor("present", &[3])]);
    assert!(weights.take_optional("present", &[3]).is_some());
    assert!(weights.take_optional("absent", &[3]).is_none());
    weights.finish().unwrap();
}

#[test]
fn unsupported_dtype_is_reported() {
    let ids: Vec<u8> = [0i64, 1, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut weights = loader(&[("ids", Dtype::I64, vec![4], ids)]);
    assert_eq!(weights.info("ids"), Some(("I64".to_string(), vec![4])));
    assert_eq!(weights.take("ids", &[4]), vec![0.0; 4]);
    let (list, message) = problems(weights.finish());
    assert_eq!(list, [WeightProblem::UnsupportedDtype { name: "ids".to_string(), dtype: "I64".to_string() }]);
    assert!(message.contains("tensor `ids`: unsupported dtype I64"), "{message}");
}

#[test]
fn wrong_shape_and_dtype_are_both_reported() {
    let mut weights = loader(&[("x", Dtype::F64, vec![2], vec![0; 16])]);
    weights.take("x", &[3]);
    let (list, _) = problems(weights.finish());
    assert_eq!(
        list,
        [
            WeightProblem::ShapeMismatch { name: "x".to_string(), expected: vec![3], found: vec![2] },
            WeightProblem::UnsupportedDtype { name: "x".to_string(), dtype: "F64".to_string() },
        ]
    );
}

#[test]
fn non_finite_rejected_by_default() {
    let values = [1.0, 2.0, f32::NAN, f32::INFINITY];
    let mut weights = loader(&[
        ("nan", Dtype::F32, vec![4], f32_bytes(&values)),
        ("inf16", Dtype::F16, vec![2], f16_bytes(&[0.0, f32::NEG_INFINITY])),
        ("fine", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
    ]);
    assert_eq!(weights.take("nan", &[4]), vec![0.0; 4]);
    assert_eq!(weights.take("inf16", &[2]), vec![0.0; 2]);
    assert_eq!(weights.take("fine", &[2]), [1.0, 2.0]);
    let (list, message) = problems(weights.finish());
    assert_eq!(
        list,
        [
            WeightProblem::NonFinite { name: "nan".to_string(), index: 2 },
            WeightProblem::NonFinite { name: "inf16".to_string(), index: 1 },
        ]
    );
    assert!(message.contains("tensor `nan`: non-finite value"), "{message}");
}

#[test]
fn non_finite_allowed_when_asked() {
    let values = [1.0, f32::NAN, f32::NEG_INFINITY];
    let mut weights = loader(&[
        ("v", Dtype::F32, vec![3], f32_bytes(&values)),
        ("b", Dtype::BF16, vec![1], bf16_bytes(&[f32::INFINITY])),
    ]);
    weights.allow_non_finite(true);
    let got = weights.take("v", &[3]);
    assert_eq!(got[0], 1.0);
    assert!(got[1].is_nan());
    assert_eq!(got[2], f32::NEG_INFINITY);
    assert_eq!(weights.take("b", &[1]), [f32::INFINITY]);
    weights.finish().unwrap();
}

#[test]
fn same_name_taken_twice_is_fine() {
    let mut weights = loader(&[f32_tensor("tied", &[2, 2]), f32_tensor("bad", &[2])]);
    let a = weights.take("tied", &[2, 2]);
    let b = weights.take("tied", &[2, 2]);
    assert_eq!(a, b);
    assert_eq!(a, [-1.0, -0.5, 0.0, 0.5]);
    weights.take("bad", &[3]);
    weights.take("bad", &[3]);
    let (list, _) = problems(weights.finish());
    assert_eq!(list.len(), 1, "the same problem is listed once: {list:?}");
}

#[test]
fn names_info_source() {
    let weights = loader(&[f32_tensor("b", &[1]), ("a", Dtype::BF16, vec![2, 1], bf16_bytes(&[1.0, 2.0]))]);
    assert_eq!(weights.names(), ["a", "b"]);
    assert_eq!(weights.info("a"), Some(("BF16".to_string(), vec![2, 1])));
    assert_eq!(weights.info("b"), Some(("F32".to_string(), vec![1])));
    assert_eq!(weights.info("c"), None);
    assert_eq!(weights.source(), Path::new("test.safetensors"));
}

#[test]
fn control_characters_in_names_are_escaped_in_messages() {
    let header = r#"{"evil\n  - tensor `x`: forged":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let weights = WeightLoader::from_bytes(raw(header, &[0; 4]), "evil").unwrap();
    let (list, message) = problems(weights.finish());
    assert_eq!(list, [WeightProblem::Unexpected { name: "evil\n  - tensor `x`: forged".to_string() }]);
    assert_eq!(message.lines().count(), 2, "{message}");
    assert!(message.contains(r"evil\n  - tensor"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Malformed files: Format errors, never a panic
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_file() {
    let bytes = file(&[f32_tensor("w", &[4, 4])]);
    for len in [0, 1, 7, 8, 20, bytes.len() - 1] {
        assert_format_error(bytes[..len].to_vec(), "");
    }
    // Cut inside the data: the header promises more bytes than there are.
    assert_format_error(bytes[..bytes.len() - 1].to_vec(), "incomplete metadata");
    // And a byte too many is not a valid file either.
    let mut longer = bytes.clone();
    longer.push(0);
    assert_format_error(longer, "incomplete metadata");
}

#[test]
fn garbage_header() {
    assert_format_error(raw("this is not json", &[]), "invalid JSON");
    assert_format_error(raw("[1, 2, 3]", &[]), "invalid JSON");
    assert_format_error(
        raw(r#"{"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]),
        "invalid JSON",
    );
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, &[0; 4]),
        "invalid JSON",
    );
    // Not UTF-8.
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x7b, 0x7d]);
    assert_format_error(bytes, "UTF-8");
}

#[test]
fn header_length_larger_than_file() {
    let mut bytes = raw(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]);
    let claimed = bytes.len() as u64; // header + data + 8 > what is there
    bytes[..8].copy_from_slice(&claimed.to_le_bytes());
    assert_format_error(bytes.clone(), "invalid header length");
    for huge in [u64::MAX, u64::MAX - 7, 1 << 40, 99_999_999] {
        bytes[..8].copy_from_slice(&huge.to_le_bytes());
        assert_format_error(bytes.clone(), "header");
    }
}

#[test]
fn offsets_past_the_end() {
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]),
        "incomplete metadata",
    );
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 4]),
        "invalid offset for tensor `w`",
    );
    // End before start.
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, &[0; 4]),
        "invalid offset",
    );
    // Offsets close to usize::MAX, tiling [0, 2^64 - 8) with 8 tensors whose sizes are valid
    // for their shapes: safetensors' own final size check would overflow on them.
    let size = (1usize << 61) - 1;
    let mut header = String::from("{");
    for i in 0..8 {
        let (start, end) = (i * size, (i + 1) * size);
        header += &format!(r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{start},{end}]}},"#);
    }
    header.pop();
    header.push('}');
    assert_format_error(raw(&header, &[0; 16]), "too large");
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}"#, &[0; 4]),
        "too large",
    );
}

#[test]
fn overlapping_offsets() {
    let header = r#"{
        "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
        "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}
    }"#;
    assert_format_error(raw(header, &[0; 12]), "invalid offset");
    let same = r#"{
        "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
        "b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}
    }"#;
    assert_format_error(raw(same, &[0; 8]), "invalid offset");
}

#[test]
fn byte_count_disagreeing_with_shape() {
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]),
        "invalid shape, data type, or offset",
    );
    // A shape whose element count overflows.
    assert_format_error(
        raw(r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#, &[]),
        "overflow",
    );
}

#[test]
fn metadata_entry_is_not_a_tensor() {
    let header = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut weights = WeightLoader::from_bytes(raw(header, &f32_bytes(&[2.0])), "meta").unwrap();
    assert_eq!(weights.names(), ["w"]);
    assert_eq!(weights.take("w", &[1]), [2.0]);
    weights.finish().unwrap();
    // Digits inside strings are not mistaken for huge offsets.
    let header = r#"{"__metadata__":{"hash":"99999999999999999999999999"}}"#;
    let weights = WeightLoader::from_bytes(raw(header, &[]), "meta").unwrap();
    assert!(weights.names().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Fuzzing: arbitrary input never panics
// ---------------------------------------------------------------------------------------------

/// Loads `bytes` and, if they parse, takes every tensor with its own shape and with a wrong
/// one, and finishes. Any panic fails the property.
fn exercise(bytes: Vec<u8>) {
    let Ok(mut weights) = WeightLoader::from_bytes(bytes, "fuzz") else {
        return;
    };
    for name in weights.names() {
        let (_, shape) = weights.info(&name).unwrap();
        // Only take with the file's shape when allocating it is reasonable (the caller, not
        // the file, chooses the size of the result).
        if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_some_and(|n| n <= 1 << 20) {
            let values = weights.take(&name, &shape);
            assert_eq!(values.len(), shape.iter().product::<usize>());
            let _ = weights.take_optional(&name, &shape);
        }
        assert_eq!(weights.take(&name, &[3, 1]).len(), 3);
    }
    weights.allow_non_finite(true);
    if let Some(name) = weights.names().first() {
        weights.take(name, &[2]);
    }
    let _ = weights.take_optional("surely.absent", &[2]);
    if let Err(e) = weights.finish() {
        let _ = e.to_string();
    }
}

fn valid_file() -> Vec<u8> {
    file(&[
        f32_tensor("a.weight", &[3, 2]),
        ("b.bias", Dtype::F16, vec![4], f16_bytes(&[1.0, 2.0, 3.0, 4.0])),
        ("c", Dtype::BF16, vec![2, 1, 2], bf16_bytes(&[1.0, -1.0, 0.5, 8.0])),
        ("ids", Dtype::I64, vec![2], vec![0; 16]),
    ])
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match *mutation {
        Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Remove(i) if len > 0 => {
            bytes.remove(i % len);
        }
        Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
        _ => {}
    }
}

/// A hand-built header from random pieces: plausible structure, random numbers.
fn random_header() -> impl Strategy<Value = (String, usize)> {
    let dtype = prop::sample::select(vec!["F32", "F16", "BF16", "I64", "U8", "F4", "BOOL"]);
    let dim = prop_oneof![0usize..6, Just(usize::MAX), Just(1 << 62), any::<usize>()];
    let offset = prop_oneof![0usize..64, Just(usize::MAX), Just((1 << 61) - 1), any::<usize>()];
    let tensor = (dtype, prop::collection::vec(dim, 0..4), offset.clone(), offset);
    (prop::collection::vec(tensor, 0..5), 0usize..80).prop_map(|(tensors, data_len)| {
        let body: Vec<String> = tensors
            .iter()
            .enumerate()
            .map(|(i, (dtype, shape, start, end))| {
                format!(r#""t{i}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{end}]}}"#)
            })
            .collect();
        (format!("{{{}}}", body.join(",")), data_len)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(bytes);
    }

    #[test]
    fn random_prefix_and_header_never_panic(
        len in any::<u64>(),
        header in "[ -~]{0,120}",
        data in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        exercise(bytes.clone());
        exercise(raw(&header, &data));
    }

    #[test]
    fn mutated_valid_file_never_panics(mutations in prop::collection::vec(mutation(), 1..8)) {
        let mut bytes = valid_file();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        exercise(bytes);
    }

    #[test]
    fn random_structured_header_never_panics((header, data_len) in random_header()) {
        exercise(raw(&header, &vec![0x7f; data_len]));
    }
}

#[test]
fn valid_file_used_by_the_fuzzers_loads() {
    // So the mutation fuzzer starts from a file that exercises every conversion path.
    let mut weights = WeightLoader::from_bytes(valid_file(), "valid").unwrap();
    assert_eq!(weights.take("b.bias", &[4]), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(weights.take("c", &[2, 1, 2]), [1.0, -1.0, 0.5, 8.0]);
    assert_eq!(weights.take("a.weight", &[3, 2]).len(), 6);
    weights.ignore("ids");
    weights.finish().unwrap();
}

#[test]
fn a_tensor_named_twice_is_a_format_error_naming_it() {
    // Two entries for `w`, each a valid F32 [1] over its own 4 bytes: a map would keep only the
    // last and silently drop the first.
    let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert_format_error(raw(header, &f32_bytes(&[1.0, 2.0])), "tensor `w` is named twice");
    // Distinct names over the same layout load fine, so the check is about the name.
    let ok = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    assert!(WeightLoader::from_bytes(raw(ok, &f32_bytes(&[1.0, 2.0])), "ok").is_ok());
}
