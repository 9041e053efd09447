//! Every way user input can be wrong gives a typed error naming the value, never a panic.

mod common;

use ndarray::array;
use transformer::{Batch, Error, WeightLoader, WeightProblem};

transformer::model! {
    /// A tiny BERT-shaped encoder with random weights.
    pub struct Tiny {
        vocab_size: 50,
        max_positions: 16,
        type_vocab_size: 2,
        d_model: 8,
        heads: 2,
        layers: 2,
        d_ff: 16,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

transformer::model! {
    /// The same without token types.
    pub struct NoTypes {
        vocab_size: 50,
        max_positions: 16,
        d_model: 8,
        heads: 2,
        layers: 1,
        d_ff: 16,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        attention: bidirectional,
        weights: bert,
    }
}

fn tiny() -> Tiny {
    common::with_random_weights(0.5, Tiny::load)
}

#[test]
fn an_empty_batch_is_rejected() {
    let none: &[Vec<u32>] = &[];
    assert!(matches!(Batch::from_sequences(none), Err(Error::EmptyBatch)));
    let ids = ndarray::Array2::<u32>::zeros((0, 4));
    assert!(matches!(Batch::from_padded(ids.view(), ids.view(), None), Err(Error::EmptyBatch)));
}

#[test]
fn an_empty_sequence_is_named() {
    let err = Batch::from_sequences(&[vec![1, 2], vec![]]).unwrap_err();
    assert!(matches!(err, Error::EmptySequence { sequence: 1 }), "{err:?}");
    let (ids, mask) = (array![[1u32, 2], [3, 4]], array![[1u32, 1], [0, 0]]);
    let err = Batch::from_padded(ids.view(), mask.view(), None).unwrap_err();
    assert!(matches!(err, Error::EmptySequence { sequence: 1 }), "{err:?}");
}

#[test]
fn a_token_beyond_the_vocabulary_is_named() {
    let batch = Batch::from_sequences(&[vec![1, 2, 3], vec![4, 50, 6]]).unwrap();
    let err = tiny().embed(&batch).unwrap_err();
    assert!(
        matches!(err, Error::TokenOutOfRange { sequence: 1, position: 1, token: 50, vocab: 50 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("token id 50"), "{err}");
}

#[test]
fn a_token_type_beyond_the_type_vocabulary_is_named() {
    let batch = Batch::from_sequences(&[vec![1, 2, 3]]).unwrap().with_token_types(&[vec![0, 1, 2]]).unwrap();
    let err = tiny().forward(&batch).unwrap_err();
    assert!(
        matches!(err, Error::TokenTypeOutOfRange { sequence: 0, position: 2, type_id: 2, type_vocab: 2 }),
        "{err:?}"
    );
}

#[test]
fn token_types_for_a_model_without_them_are_rejected() {
    let model = common::with_random_weights(0.5, NoTypes::load);
    let batch = Batch::from_sequences(&[vec![1, 2]]).unwrap().with_token_types(&[vec![0, 0]]).unwrap();
    assert!(matches!(model.embed(&batch), Err(Error::TokenTypesNotSupported)));
    let plain = Batch::from_sequences(&[vec![1, 2]]).unwrap();
    assert!(model.embed(&plain).is_ok());
}

#[test]
fn a_sequence_longer_than_the_positions_is_named() {
    let batch = Batch::from_sequences(&[vec![1; 3], vec![1; 17]]).unwrap();
    let err = tiny().embed(&batch).unwrap_err();
    assert!(matches!(err, Error::SequenceTooLong { sequence: 1, len: 17, max: 16 }), "{err:?}");
}

#[test]
fn padding_beyond_the_positions_is_harmless() {
    // Only real tokens need positions; padding rows repeat the last real position.
    let ids = ndarray::Array2::<u32>::ones((1, 20));
    let mut mask = ndarray::Array2::<u32>::zeros((1, 20));
    mask.slice_mut(ndarray::s![.., ..5]).fill(1);
    let padded = Batch::from_padded(ids.view(), mask.view(), None).unwrap();
    let model = tiny();
    let wide = model.embed(&padded).unwrap();
    let tight = model.embed(&Batch::from_sequences(&[vec![1; 5]]).unwrap()).unwrap();
    for (x, y) in wide[0].iter().zip(&tight[0]) {
        assert!((x - y).abs() < 1e-5, "padding changed the embedding: {x} vs {y}");
    }
}

#[test]
fn mismatched_lengths_and_counts_are_named() {
    let batch = Batch::from_sequences(&[vec![1, 2, 3], vec![4, 5]]).unwrap();
    let err = batch.clone().with_token_types(&[vec![0, 0, 0], vec![0]]).unwrap_err();
    assert!(
        matches!(err, Error::LengthMismatch { what: "token type ids", sequence: 1, expected: 2, found: 1 }),
        "{err:?}"
    );
    let err = batch.with_token_types(&[vec![0, 0, 0]]).unwrap_err();
    assert!(matches!(err, Error::BatchSizeMismatch { expected: 2, found: 1, .. }), "{err:?}");

    let (ids, short_mask) = (array![[1u32, 2, 3]], array![[1u32, 1]]);
    let err = Batch::from_padded(ids.view(), short_mask.view(), None).unwrap_err();
    assert!(
        matches!(err, Error::LengthMismatch { what: "attention mask", expected: 3, found: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn a_mask_value_other_than_0_or_1_is_named() {
    let (ids, mask) = (array![[1u32, 2, 3]], array![[1u32, 2, 0]]);
    let err = Batch::from_padded(ids.view(), mask.view(), None).unwrap_err();
    assert!(matches!(err, Error::BadMaskValue { sequence: 0, position: 1, value: 2 }), "{err:?}");
}

#[test]
fn a_missing_weight_file_is_an_error_naming_the_path() {
    let err = Tiny::from_safetensors("/nonexistent/tiny.safetensors").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tiny.safetensors"), "{err}");
}

#[test]
fn every_weight_problem_is_listed_in_one_error() {
    let mut tensors = common::wanted_tensors(|l| {
        Tiny::load(l);
    });
    tensors.retain(|(n, _)| n != "encoder.layer.1.output.dense.bias");
    for (name, shape) in &mut tensors {
        if name == "encoder.layer.0.attention.self.key.weight" {
            *shape = vec![8, 7];
        }
    }
    tensors.push(("encoder.layer.7.extra".into(), vec![2]));
    let bytes = common::safetensors_bytes(&tensors, common::pseudo_random);
    let mut loader = WeightLoader::from_bytes(bytes, "broken").unwrap();
    Tiny::load(&mut loader);
    let problems = loader.finish().unwrap_err().problems().to_vec();
    assert_eq!(
        problems,
        vec![
            WeightProblem::ShapeMismatch {
                name: "encoder.layer.0.attention.self.key.weight".into(),
                expected: vec![8, 8],
                found: vec![8, 7],
            },
            WeightProblem::Missing {
                name: "encoder.layer.1.output.dense.bias".into(),
                expected_shape: vec![8]
            },
            WeightProblem::Unexpected { name: "encoder.layer.7.extra".into() },
        ]
    );
}

#[test]
fn hidden_states_have_the_static_width_and_one_row_per_token() {
    let model = tiny();
    let batch = Batch::from_sequences(&[vec![1, 2, 3], vec![4, 5]]).unwrap();
    let hidden: Vec<[f32; 8]> = model.forward(&batch).unwrap();
    assert_eq!(hidden.len(), 2 * 3);
    let array = model.forward_array(&batch).unwrap();
    assert_eq!(array.dim(), (2, 3, 8));
    assert!(hidden.iter().flatten().all(|v| v.is_finite()));
    // Padding must not leak into real tokens: sequence 1 alone equals sequence 1 in the batch.
    let alone = model.forward(&Batch::from_sequences(&[vec![4, 5]]).unwrap()).unwrap();
    for (a, b) in alone.iter().zip(&hidden[3..5]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "padded batch changed a real token: {x} vs {y}");
        }
    }
}
