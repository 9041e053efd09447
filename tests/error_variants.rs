//! One test per public `transformer::Error` variant (and per way of reaching it) that
//! `tests/input_errors.rs` does not already drive: the decoder's context and cache errors
//! (`ContextFull` from `generate`, `step_into` and start positions; `NotRightPadded`;
//! `BatchSizeMismatch` of a step), every `BadGenerateOption`, and `Weights` errors reached through
//! `from_safetensors` (a truncated file, a wrong shape, a non-finite value, an unsupported dtype).
//! Each asserts the variant with its fields AND that its message names the offending value.
//!
//! `PaddedTooLong` (a Reformer batch that HF's chunk padding would carry past the position table)
//! is driven, message included, by `tests/reformer_parity.rs`.
//!
//! Image errors: `ImageRead` (a file that is not an image) and `ProcessorShapeMismatch` are driven
//! here through `transformer::vision`; `PreprocessorConfig`, `UnsupportedResample`,
//! `ImageSizeMismatch` and `EmptyImage` already are, messages included, by
//! `transformer-runtime/tests/vision.rs`. Not driven anywhere: `ThreadPool` (making rayon fail to
//! build a pool means exhausting the OS's threads).

mod common;

use std::path::{Path, PathBuf};

use ndarray::array;
use transformer::{Batch, Error, GenerateOptions, Sampling, WeightError, WeightProblem, Workspace};

transformer::model! {
    /// `tests/fixtures/gpt2/tiny`: 2 layers, 64 wide, 4 heads, tied head, 128 positions.
    pub struct Tiny {
        vocab_size: 512,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tiny/model.safetensors")
}

fn tiny() -> Tiny {
    Tiny::from_safetensors(fixture()).expect("fixture loads")
}

/// Asserts that `err`'s message contains every one of `parts`.
fn names(err: &Error, parts: &[&str]) {
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "message {text:?} does not name {part:?}");
    }
}

/// A file in this test's scratch directory holding `bytes`.
fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("error_variants-{name}.safetensors"));
    std::fs::write(&path, bytes).expect("scratch file written");
    path
}

// ------------------------------------------------------------------------------------------------
// ContextFull
// ------------------------------------------------------------------------------------------------

#[test]
fn context_full_from_generate_names_the_sequence_and_positions() {
    let model = tiny();
    let options = GenerateOptions { max_new_tokens: 100, ..GenerateOptions::default() };
    let err = model.generate(&[&[1, 2, 3], &[1; 29]], &options).unwrap_err();
    assert!(matches!(err, Error::ContextFull { sequence: 1, needed: 129, max: 128 }), "{err:?}");
    names(&err, &["sequence 1", "129", "128"]);
    // A huge `max_new_tokens` saturates instead of overflowing.
    let options = GenerateOptions { max_new_tokens: usize::MAX, ..GenerateOptions::default() };
    let err = model.generate(&[&[1]], &options).unwrap_err();
    assert!(matches!(err, Error::ContextFull { sequence: 0, needed: usize::MAX, max: 128 }), "{err:?}");
    names(&err, &[&usize::MAX.to_string()]);
    // `stream` checks upfront too.
    let err =
        model.stream(&[1; 100], &GenerateOptions { max_new_tokens: 29, ..Default::default() }).unwrap_err();
    assert!(matches!(err, Error::ContextFull { sequence: 0, needed: 129, max: 128 }), "{err:?}");
}

#[test]
fn context_full_from_step_into_names_the_sequence_and_leaves_the_cache() {
    let model = tiny();
    let mut cache = model.new_cache(2);
    let mut ws = Workspace::new();
    let prefill = Batch::from_sequences(&[vec![1u32; 10], vec![2u32; 100]]).unwrap();
    model.step_into(&prefill, &mut cache, &mut ws).unwrap();
    let step = Batch::from_sequences(&[vec![3u32; 5], vec![4u32; 29]]).unwrap();
    let err = model.step_into(&step, &mut cache, &mut ws).unwrap_err();
    assert!(matches!(err, Error::ContextFull { sequence: 1, needed: 129, max: 128 }), "{err:?}");
    names(&err, &["sequence 1", "129", "128"]);
    assert_eq!(cache.lens(), &[10, 100], "a rejected step must not advance the cache");
    // Exactly full is fine.
    let step = Batch::from_sequences(&[vec![3u32; 5], vec![4u32; 28]]).unwrap();
    model.step_into(&step, &mut cache, &mut ws).unwrap();
    assert_eq!(cache.lens(), &[15, 128]);
}

#[test]
fn context_full_from_start_positions_names_the_positions() {
    let model = tiny();
    let batch = Batch::from_sequences(&[vec![1u32; 3]]).unwrap().with_starts(&[126]).unwrap();
    let err = model.logits(&batch).unwrap_err();
    assert!(matches!(err, Error::ContextFull { sequence: 0, needed: 129, max: 128 }), "{err:?}");
    names(&err, &["129", "128"]);
}

/// Start positions are caller input like any other: one near `usize::MAX` must be a `ContextFull`,
/// not an arithmetic overflow (a panic with overflow checks, a wrapped position that indexes past
/// the position table without them).
#[test]
fn a_huge_start_position_is_context_full_not_an_overflow() {
    let model = tiny();
    for start in [usize::MAX, usize::MAX - 1, usize::MAX / 2 + 1] {
        let batch = Batch::from_sequences(&[vec![1u32; 3]]).unwrap().with_starts(&[start]).unwrap();
        let err = model.logits(&batch).unwrap_err();
        assert!(matches!(err, Error::ContextFull { sequence: 0, max: 128, .. }), "{err:?}");
        let mut cache = model.new_cache(1);
        let err = model.step_into(&batch, &mut cache, &mut Workspace::new()).unwrap_err();
        assert!(matches!(err, Error::ContextFull { sequence: 0, max: 128, .. }), "{err:?}");
        assert_eq!(cache.lens(), &[0]);
    }
}

// ------------------------------------------------------------------------------------------------
// NotRightPadded, BatchSizeMismatch of a step
// ------------------------------------------------------------------------------------------------

#[test]
fn a_step_with_a_mask_hole_is_not_right_padded() {
    let model = tiny();
    let mut cache = model.new_cache(2);
    let mut ws = Workspace::new();
    let ids = array![[1u32, 2, 3], [4, 5, 6]];
    let mask = array![[1u32, 1, 0], [1, 0, 1]];
    let batch = Batch::from_padded(ids.view(), mask.view(), None).unwrap();
    let err = model.step_into(&batch, &mut cache, &mut ws).unwrap_err();
    assert!(matches!(err, Error::NotRightPadded { sequence: 1 }), "{err:?}");
    names(&err, &["sequence 1"]);
    assert_eq!(cache.lens(), &[0, 0]);
    // Left padding is a hole too, for a cached step.
    let mask = array![[0u32, 1, 1], [1, 1, 1]];
    let batch = Batch::from_padded(ids.view(), mask.view(), None).unwrap();
    let err = model.step_into(&batch, &mut cache, &mut ws).unwrap_err();
    assert!(matches!(err, Error::NotRightPadded { sequence: 0 }), "{err:?}");
    names(&err, &["sequence 0"]);
}

#[test]
fn a_step_with_the_wrong_batch_size_is_named() {
    let model = tiny();
    let mut cache = model.new_cache(3);
    let batch = Batch::from_sequences(&[vec![1u32, 2], vec![3]]).unwrap();
    let err = model.step_into(&batch, &mut cache, &mut Workspace::new()).unwrap_err();
    assert!(matches!(err, Error::BatchSizeMismatch { expected: 3, found: 2, .. }), "{err:?}");
    names(&err, &["2 sequences", "expected 3"]);
    assert_eq!(cache.lens(), &[0, 0, 0]);
}

#[test]
fn start_positions_and_padded_masks_of_the_wrong_batch_size_are_named() {
    let batch = Batch::from_sequences(&[vec![1u32, 2], vec![3]]).unwrap();
    let err = batch.with_starts(&[0, 0, 0]).unwrap_err();
    assert!(
        matches!(err, Error::BatchSizeMismatch { what: "start positions", expected: 2, found: 3 }),
        "{err:?}"
    );
    names(&err, &["start positions", "3 sequences", "expected 2"]);
    let (ids, mask) = (array![[1u32, 2], [3, 4]], array![[1u32, 1]]);
    let err = Batch::from_padded(ids.view(), mask.view(), None).unwrap_err();
    assert!(
        matches!(err, Error::BatchSizeMismatch { what: "attention mask", expected: 2, found: 1 }),
        "{err:?}"
    );
    names(&err, &["attention mask", "1 sequences", "expected 2"]);
    let types = array![[0u32, 0], [0, 0], [0, 0]];
    let err = Batch::from_padded(ids.view(), ids.view().mapv(|_| 1).view(), Some(types.view())).unwrap_err();
    assert!(
        matches!(err, Error::BatchSizeMismatch { what: "token type ids", expected: 2, found: 3 }),
        "{err:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// BadGenerateOption, and generate's own batch checks
// ------------------------------------------------------------------------------------------------

fn sample(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 4,
        sampling: Sampling::Sample { temperature, top_k, top_p },
        ..GenerateOptions::default()
    }
}

#[test]
fn every_bad_generate_option_is_named_with_its_value() {
    let model = tiny();
    let cases: Vec<(GenerateOptions, &str, &str)> = vec![
        (GenerateOptions { max_new_tokens: 0, ..GenerateOptions::default() }, "max_new_tokens", "0"),
        (sample(0.0, None, None), "temperature", "0"),
        (sample(-0.5, None, None), "temperature", "-0.5"),
        (sample(f32::NAN, None, None), "temperature", "NaN"),
        (sample(f32::INFINITY, None, None), "temperature", "inf"),
        (sample(f32::NEG_INFINITY, None, None), "temperature", "-inf"),
        (sample(1.0, Some(0), None), "top_k", "0"),
        (sample(1.0, None, Some(0.0)), "top_p", "0"),
        (sample(1.0, None, Some(-0.25)), "top_p", "-0.25"),
        (sample(1.0, None, Some(1.5)), "top_p", "1.5"),
        (sample(1.0, None, Some(f32::NAN)), "top_p", "NaN"),
        (sample(1.0, Some(5), Some(f32::INFINITY)), "top_p", "inf"),
    ];
    for (options, option, value) in cases {
        for err in [
            model.generate(&[&[1, 2, 3]], &options).unwrap_err(),
            model.stream(&[1, 2, 3], &options).unwrap_err(),
        ] {
            match &err {
                Error::BadGenerateOption { option: o, value: v, .. } => {
                    assert_eq!((*o, v.as_str()), (option, value), "{err:?}");
                }
                other => panic!("{option} = {value}: expected BadGenerateOption, got {other:?}"),
            }
            names(&err, &[&format!("`{option}` = {value}")]);
        }
    }
    // The edges of the valid ranges are accepted.
    for options in
        [sample(1e-30, Some(1), Some(1.0)), sample(f32::MAX, Some(usize::MAX), Some(f32::MIN_POSITIVE))]
    {
        let out = model.generate(&[&[1, 2, 3]], &options).unwrap();
        assert_eq!(out[0].len(), 4);
        assert!(out[0].iter().all(|&t| (t as usize) < Tiny::VOCAB_SIZE));
    }
}

#[test]
fn generate_without_prompts_or_with_an_empty_one_is_named() {
    let model = tiny();
    let options = GenerateOptions { max_new_tokens: 2, ..GenerateOptions::default() };
    assert!(matches!(model.generate(&[], &options), Err(Error::EmptyBatch)));
    let err = model.generate(&[&[1], &[]], &options).unwrap_err();
    assert!(matches!(err, Error::EmptySequence { sequence: 1 }), "{err:?}");
    names(&err, &["sequence 1"]);
    let err = model.generate(&[&[1], &[600]], &options).unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { sequence: 1, position: 0, token: 600, vocab: 512 }),
        "{err:?}"
    );
    names(&err, &["600", "512"]);
}

// ------------------------------------------------------------------------------------------------
// Weights, through from_safetensors
// ------------------------------------------------------------------------------------------------

#[test]
fn a_truncated_weight_file_is_a_format_error_naming_the_path() {
    let bytes = std::fs::read(fixture()).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for (i, cut) in [0, 5, 8, 8 + header_len / 2, 8 + header_len, 8 + header_len + 7, bytes.len() - 1]
        .into_iter()
        .enumerate()
    {
        let path = scratch_file(&format!("truncated-{i}"), &bytes[..cut]);
        let err = Tiny::from_safetensors(&path).unwrap_err();
        match &err {
            Error::Weights(WeightError::Format { path: p, .. }) => assert_eq!(p, &path),
            other => panic!("cut at {cut}: expected a format error, got {other:?}"),
        }
        names(&err, &[&path.display().to_string(), "not a valid safetensors file"]);
    }
}

/// The fixture's tensors, rebuilt in memory with deterministic values (and `edit` applied).
fn rebuilt(edit: impl Fn(&mut Vec<(String, Vec<usize>)>)) -> Vec<u8> {
    let mut tensors = common::wanted_tensors(|l| {
        Tiny::load(l);
    });
    edit(&mut tensors);
    common::safetensors_bytes(&tensors, common::pseudo_random)
}

#[test]
fn a_wrong_shape_in_the_file_is_named_with_both_shapes() {
    let bytes = rebuilt(|tensors| {
        for (name, shape) in tensors.iter_mut() {
            if name == "h.1.mlp.c_fc.weight" {
                *shape = vec![64, 255];
            }
        }
    });
    let path = scratch_file("wrong-shape", &bytes);
    let err = Tiny::from_safetensors(&path).unwrap_err();
    let Error::Weights(weights) = &err else { panic!("expected a weights error, got {err:?}") };
    assert_eq!(
        weights.problems(),
        &[WeightProblem::ShapeMismatch {
            name: "h.1.mlp.c_fc.weight".into(),
            expected: vec![64, 256],
            found: vec![64, 255],
        }]
    );
    names(&err, &["h.1.mlp.c_fc.weight", "[64, 256]", "[64, 255]", &path.display().to_string()]);
    // The rebuilt file itself is fine.
    let path = scratch_file("rebuilt", &rebuilt(|_| {}));
    Tiny::from_safetensors(&path).unwrap();
}

#[test]
fn a_non_finite_weight_is_named_with_its_index() {
    let mut tensors = common::wanted_tensors(|l| {
        Tiny::load(l);
    });
    tensors.sort();
    let bytes = common::safetensors_bytes(&tensors, |name, i| {
        if name == "ln_f.bias" && i == 17 {
            f32::NAN
        } else {
            common::pseudo_random(name, i)
        }
    });
    let err = Tiny::from_safetensors(scratch_file("nan", &bytes)).unwrap_err();
    let Error::Weights(weights) = &err else { panic!("expected a weights error, got {err:?}") };
    assert_eq!(weights.problems(), &[WeightProblem::NonFinite { name: "ln_f.bias".into(), index: 17 }]);
    names(&err, &["ln_f.bias", "index 17"]);
}

#[test]
fn an_unsupported_dtype_is_named() {
    let bytes = rebuilt(|_| {});
    // Same width, other type: only the header changes, and its length stays the same.
    let needle = b"\"wpe.weight\":{\"dtype\":\"F32\"";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("wpe.weight in the header");
    let mut bytes = bytes;
    bytes[at + needle.len() - 4..at + needle.len() - 1].copy_from_slice(b"I32");
    let err = Tiny::from_safetensors(scratch_file("dtype", &bytes)).unwrap_err();
    let Error::Weights(weights) = &err else { panic!("expected a weights error, got {err:?}") };
    assert_eq!(
        weights.problems(),
        &[WeightProblem::UnsupportedDtype { name: "wpe.weight".into(), dtype: "I32".into() }]
    );
    names(&err, &["wpe.weight", "I32"]);
}

// ------------------------------------------------------------------------------------------------
// Images
// ------------------------------------------------------------------------------------------------

#[test]
fn a_file_that_is_not_an_image_is_an_image_read_error_naming_the_path() {
    use transformer::vision::ImageProcessor;
    for path in [fixture(), Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-image.png")] {
        let err = ImageProcessor::load_image(&path).unwrap_err();
        assert!(matches!(&err, Error::ImageRead { path: p, .. } if p == &path), "{err:?}");
        names(&err, &[&path.display().to_string()]);
    }
}

#[test]
fn a_processor_for_another_input_shape_names_both_shapes() {
    use transformer::vision::ImageProcessor;
    let processor = ImageProcessor::from_json_str(r#"{"size": {"height": 20, "width": 40}}"#).unwrap();
    processor.check_shape::<3, 20, 40>().unwrap();
    let err = processor.check_shape::<1, 20, 40>().unwrap_err();
    assert!(
        matches!(err, Error::ProcessorShapeMismatch { model: [1, 20, 40], processor: [3, 20, 40] }),
        "{err:?}"
    );
    names(&err, &["3×20×40", "1×20×40"]);
    let err = processor.check_shape::<3, 40, 20>().unwrap_err();
    names(&err, &["3×20×40", "3×40×20"]);
}
