//! Reformer parity through `model!`: both fixture models of `scripts/reference/reformer.py`
//! (`tests/fixtures/reformer/{causal,bidirectional}`: Hugging Face `ReformerModelWithLMHead` and
//! `ReformerForMaskedLM`, transformers 4.57.1) declared with `weights: reformer`, loaded with
//! their exported LSH rotations, against HF's logits on every case of `reference.json` (full,
//! padded batch, auto-padded by HF's chunk-length rule, one chunk or less).
//!
//! Tolerance: |logit − HF logit| ≤ 1e-4 on every real row (the project's; the script measures HF's
//! float32 against a float64 numpy forward at ≤ 5e-6). The test can fail: the rotations of the
//! two LSH layers swapped, or one hash round instead of two, move the logits by far more than the
//! tolerance (`wrong_rotations_or_rounds_break_parity`; HF itself moves by 1.1–3.2 under these,
//! `sensitivity` in reference.json).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use transformer::{Batch, Error, GenerateOptions, Threads, WeightLoader};

#[path = "common/checkpoint.rs"]
mod checkpoint;
#[path = "common/mod.rs"]
mod common;

const TOLERANCE: f32 = 1e-4;

transformer::model! {
    /// `tests/fixtures/reformer/causal/config.json` (`ReformerModelWithLMHead`, `is_decoder`).
    struct CausalReformer {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 4,
        d_ff: 128,
        activation: gelu_erf,
        norm_eps: 1e-12,
        attention: causal,
        weights: reformer,
        attn_layers: [lsh, local, lsh, local],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 0, buckets: 4, hashes: 2 },
        local: { chunk: 8, chunks_before: 1, chunks_after: 0 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

transformer::model! {
    /// `tests/fixtures/reformer/bidirectional/config.json` (`ReformerForMaskedLM`).
    struct MaskedReformer {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 3,
        d_ff: 128,
        activation: gelu_erf,
        norm_eps: 1e-12,
        attention: bidirectional,
        weights: reformer,
        attn_layers: [local, lsh, lsh],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 1, buckets: 8, hashes: 3 },
        local: { chunk: 4, chunks_before: 2, chunks_after: 1 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

transformer::model! {
    /// The causal fixture with one hash round instead of two: a wrong convention.
    struct OneRoundReformer {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 4,
        d_ff: 128,
        activation: gelu_erf,
        norm_eps: 1e-12,
        attention: causal,
        weights: reformer,
        attn_layers: [lsh, local, lsh, local],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 0, buckets: 4, hashes: 1 },
        local: { chunk: 8, chunks_before: 1, chunks_after: 0 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

transformer::model! {
    /// The causal fixture written as its forward pass: `CausalReformer` composed (LSH on even
    /// layers, local attention on odd ones).
    struct ComposedCausalReformer {
        vocab_size: 320,
        d_model: 64,
        heads: 2,
        layers: 4,
        d_ff: 2 * d_model,
    }

    fn forward(tokens) -> logits {
        let x = embedding(tokens, vocab_size, d_model) + axial_positions(shape = [8, 8], dims = [16, 48]);
        let (x1, x2) = (x, x);
        for layer in 0..layers {
            let h = layer_norm(x2, eps = 1e-12);
            x1 = x1 + if layer % 2 == 0 {
                lsh_attention(h, heads = heads, chunk = 8, chunks_before = 1, chunks_after = 0, buckets = 4, hashes = 2, causal)
            } else {
                local_attention(h, heads = heads, chunk = 8, chunks_before = 1, chunks_after = 0, causal)
            };
            x2 = x2 + linear(gelu(linear(layer_norm(x1, eps = 1e-12), d_ff)), d_model);
        }
        let x = layer_norm(concat(x1, x2), eps = 1e-12);
        linear(x, vocab_size)
    }
}

transformer::model! {
    /// The bidirectional fixture written as its forward pass: `MaskedReformer` composed (local
    /// attention in layer 0, LSH after).
    struct ComposedMaskedReformer {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 3,
        d_ff: 128,
    }

    fn forward(tokens) -> logits {
        let x = embedding(tokens, vocab_size, d_model) + axial_positions(shape = [8, 8], dims = [16, 48]);
        let (x1, x2) = (x, x);
        for layer in 0..layers {
            let attended = if layer == 0 {
                local_attention(layer_norm(x2, eps = 1e-12), heads = heads, chunk = 4, chunks_before = 2, chunks_after = 1)
            } else {
                lsh_attention(layer_norm(x2, eps = 1e-12), heads = heads, chunk = 8, chunks_before = 1, chunks_after = 1, buckets = 8, hashes = 3)
            };
            x1 = x1 + attended;
            let hidden = gelu(linear(layer_norm(x1, eps = 1e-12), d_ff));
            x2 = x2 + linear(hidden, d_model);
        }
        linear(layer_norm(concat(x1, x2), eps = 1e-12), vocab_size)
    }
}

fn dir(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reformer").join(variant)
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    /// Causal only: HF's greedy continuation of a prompt (full recompute per token).
    greedy: Option<Greedy>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
}

/// One input as HF received it (before its own chunk-length padding) and its logits.
#[derive(Deserialize)]
struct Case {
    name: String,
    input_ids: Vec<Vec<u32>>,
    /// `null`: not passed (every token real).
    attention_mask: Option<Vec<Vec<u32>>>,
    /// Real tokens per sequence.
    lengths: Vec<usize>,
    /// The length HF ran at.
    hf_padded_length: usize,
    /// HF's logits of the real rows, sequence after sequence.
    logits: Vec<Vec<f32>>,
}

impl Case {
    /// The batch: each sequence's real tokens (the fixtures pad on the right, checked here).
    fn batch(&self) -> Batch {
        let sequences: Vec<&[u32]> =
            self.input_ids.iter().zip(&self.lengths).map(|(ids, &n)| &ids[..n]).collect();
        if let Some(mask) = &self.attention_mask {
            for (m, &n) in mask.iter().zip(&self.lengths) {
                assert!(
                    m.iter().enumerate().all(|(t, &v)| v == u32::from(t < n)),
                    "{}: right padding",
                    self.name
                );
            }
        }
        let batch = Batch::from_sequences(&sequences).expect("a valid batch");
        assert_eq!(
            batch.seq_len(),
            self.input_ids[0].len(),
            "{}: the batch is as wide as HF's input",
            self.name
        );
        batch
    }

    /// Largest |ours − HF| over the real rows.
    fn max_diff<const V: usize>(&self, logits: &[[f32; V]]) -> f32 {
        let width = self.input_ids[0].len();
        let ours = self.lengths.iter().enumerate().flat_map(|(b, &n)| &logits[b * width..b * width + n]);
        assert_eq!(self.logits.len(), self.lengths.iter().sum::<usize>(), "{}: HF rows", self.name);
        ours.zip(&self.logits)
            .flat_map(|(a, b)| {
                assert_eq!(b.len(), V, "{}: vocabulary", self.name);
                a.iter().zip(b).map(|(x, y)| (x - y).abs())
            })
            .fold(0.0, f32::max)
    }
}

fn reference(variant: &str) -> Reference {
    let text = std::fs::read_to_string(dir(variant).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("reference.json parses")
}

fn causal() -> CausalReformer {
    let d = dir("causal");
    CausalReformer::from_safetensors(d.join("model.safetensors"), d.join("rotations.safetensors"))
        .expect("the causal fixture loads")
}

#[test]
fn causal_logits_match_hf() {
    let model = causal();
    for case in reference("causal").cases {
        assert_eq!(
            transformer::layers::lsh::padded_length(case.input_ids[0].len(), CausalReformer::CHUNK_LENGTHS),
            case.hf_padded_length,
            "{}: padded as HF pads",
            case.name
        );
        let diff = case.max_diff(&model.logits(&case.batch()).expect("a forward pass"));
        println!("causal/{}: max |logit − HF| = {diff:.3e}", case.name);
        assert!(diff <= TOLERANCE, "causal/{}: {diff} > {TOLERANCE}", case.name);
    }
}

#[test]
fn bidirectional_logits_match_hf() {
    let d = dir("bidirectional");
    let model =
        MaskedReformer::from_safetensors(d.join("model.safetensors"), d.join("rotations.safetensors"))
            .expect("the bidirectional fixture loads");
    for case in reference("bidirectional").cases {
        assert_eq!(
            transformer::layers::lsh::padded_length(case.input_ids[0].len(), MaskedReformer::CHUNK_LENGTHS),
            case.hf_padded_length,
            "{}: padded as HF pads",
            case.name
        );
        let diff = case.max_diff(&model.logits(&case.batch()).expect("a forward pass"));
        println!("bidirectional/{}: max |logit − HF| = {diff:.3e}", case.name);
        assert!(diff <= TOLERANCE, "bidirectional/{}: {diff} > {TOLERANCE}", case.name);
    }
}

/// The bidirectional model as transformers 5.25.0 saves it: its head adds `lm_head.decoder.bias`
/// (and the file keeps an unused `lm_head.bias`); `from_pretrained` reads that bias and matches
/// 5.25.0's logits.
#[test]
fn bidirectional_logits_match_transformers_5() {
    let d = dir("bidirectional_v5");
    let model =
        MaskedReformer::from_pretrained(&d, d.join("rotations.safetensors")).expect("the 5.x fixture loads");
    let cases = reference("bidirectional_v5").cases;
    assert!(!cases.is_empty());
    for case in cases {
        let diff = case.max_diff(&model.logits(&case.batch()).expect("a forward pass"));
        assert!(diff <= TOLERANCE, "bidirectional_v5/{}: {diff} > {TOLERANCE}", case.name);
    }
}

/// Greedy generation (a full recompute per token, no cache) gives HF's 40 tokens after a 6-token
/// prompt, the sequence growing through six padded lengths (8 to 48); in HF every step's top-two
/// logit gap is at least 0.04 and every hashing margin at least 3e-3 (`greedy` in
/// reference.json), far above the logits' 4e-6 differences.
#[test]
fn causal_greedy_generation_matches_hf() {
    let greedy = reference("causal").greedy.expect("the causal fixture has a greedy continuation");
    let options = GenerateOptions { max_new_tokens: greedy.tokens.len(), ..Default::default() };
    let out = causal().generate(&[&greedy.prompt, &greedy.prompt[..3]], &options).expect("generation");
    assert_eq!(out[0], greedy.tokens);
    // Each prompt runs alone: a shorter one beside it changes nothing.
    let alone = causal().generate(&[&greedy.prompt], &options).expect("generation");
    assert_eq!(alone[0], out[0]);
}

/// Two threads split sequences and heads differently; every output is the same arithmetic.
#[test]
fn threads_give_identical_logits() {
    let (one, two) = (causal(), causal().with_threads(Threads::new(2).expect("a pool of two threads")));
    for case in reference("causal").cases {
        let batch = case.batch();
        assert!(
            one.logits(&batch).unwrap() == two.logits(&batch).unwrap(),
            "{}: thread count matters",
            case.name
        );
    }
}

/// Rotations read from the causal fixture, by tensor name.
fn rotations() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut file = WeightLoader::open(dir("causal").join("rotations.safetensors")).expect("rotations open");
    let mut out = Vec::new();
    for name in file.names() {
        let (_, shape) = file.info(&name).expect("a listed tensor");
        let values = file.take(&name, &shape);
        out.push((name, shape, values));
    }
    out
}

/// A rotations file made of `tensors`.
fn rotations_file(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> WeightLoader {
    let index: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    let bytes = common::safetensors_bytes(&index, |name, i| {
        tensors.iter().find(|(n, _, _)| n == name).map_or(0.0, |(_, _, v)| v[i])
    });
    WeightLoader::from_bytes(bytes, "rotations").expect("a valid file")
}

/// The parity test can fail: with the two LSH layers' rotations swapped, or one hash round
/// (round 0's rotations) instead of two, the first case misses HF by far more than 1e-4.
#[test]
fn wrong_rotations_or_rounds_break_parity() {
    let case = &reference("causal").cases[0];
    let batch = case.batch();
    let weights = || WeightLoader::open(dir("causal").join("model.safetensors")).expect("model opens");

    let right = case.max_diff(&causal().logits(&batch).expect("a forward pass"));

    let mut swapped = rotations();
    assert_eq!(swapped.len(), 2, "the causal fixture has two LSH layers");
    let (first, second) = (swapped[0].2.clone(), swapped[1].2.clone());
    swapped[0].2 = second;
    swapped[1].2 = first;
    let mut rot = rotations_file(&swapped);
    let mut w = weights();
    let model = CausalReformer::load(&mut w, &mut rot);
    w.finish().expect("weights fit");
    rot.finish().expect("swapped rotations have the right shapes");
    let swapped_diff = case.max_diff(&model.logits(&batch).expect("a forward pass"));

    // [heads, head_dim, hashes = 2, buckets / 2 = 2] → round 0: [heads, head_dim, 1, 2].
    let one_round: Vec<_> = rotations()
        .into_iter()
        .map(|(name, shape, values)| {
            let round0 =
                values.chunks_exact(shape[2] * shape[3]).flat_map(|hd| hd[..shape[3]].to_vec()).collect();
            (name, vec![shape[0], shape[1], 1, shape[3]], round0)
        })
        .collect();
    let mut rot = rotations_file(&one_round);
    let mut w = weights();
    let model = OneRoundReformer::load(&mut w, &mut rot);
    w.finish().expect("weights fit");
    rot.finish().expect("one round's rotations fit a one-round model");
    let one_round_diff = case.max_diff(&model.logits(&batch).expect("a forward pass"));

    println!("right {right:.3e}; rotations swapped {swapped_diff:.3}; one round {one_round_diff:.3}");
    assert!(right <= TOLERANCE);
    for (what, diff) in [("swapped", swapped_diff), ("one round", one_round_diff)] {
        assert!(diff > 100.0 * TOLERANCE, "{what}: logits moved only {diff}");
    }
}

/// Rotations of the wrong shape (the bidirectional fixture's: 3 rounds of 8 buckets) or none at
/// all are load errors naming the tensor, not panics.
#[test]
fn misshapen_or_missing_rotations_are_named() {
    let model = dir("causal").join("model.safetensors");
    let other = dir("bidirectional").join("rotations.safetensors");
    let err = CausalReformer::from_safetensors(&model, &other).expect_err("the other model's rotations");
    let message = err.to_string();
    assert!(
        message.contains("reformer.encoder.layers.0.attention.self_attention.rotations")
            && message.contains("[2, 32, 2, 2]"),
        "{message}"
    );

    let mut w = WeightLoader::open(&model).expect("model opens");
    let mut empty = rotations_file(&[]);
    let _ = CausalReformer::load(&mut w, &mut empty);
    let message = empty.finish().expect_err("no rotations").to_string();
    for layer in [0, 2] {
        let name = format!("reformer.encoder.layers.{layer}.attention.self_attention.rotations");
        assert!(message.contains(&name), "{message}");
    }
}

/// A batch whose HF padding would run past the position table is a typed error.
#[test]
fn padding_past_the_table_is_an_error() {
    // 65 columns, the last one padding: the sequence fits 64 positions, but the batch's width
    // pads to 72.
    let ids = ndarray::Array2::<u32>::from_elem((1, 65), 5);
    let mask = ndarray::Array2::<u32>::from_shape_fn((1, 65), |(_, t)| u32::from(t < 64));
    let batch = Batch::from_padded(ids.view(), mask.view(), None).expect("a batch");
    match causal().logits(&batch) {
        Err(err @ Error::PaddedTooLong { width: 65, padded: 72, max: 64 }) => {
            let message = err.to_string();
            assert!(message.contains("65") && message.contains("72") && message.contains("64"), "{message}");
        }
        other => panic!("expected PaddedTooLong, got {:?}", other.map(|l| l.len())),
    }
    let fits = Batch::from_padded(ids.slice(ndarray::s![.., ..64]), mask.slice(ndarray::s![.., ..64]), None)
        .expect("a batch");
    assert_eq!(causal().logits(&fits).expect("64 positions fit").len(), 64);
}

/// The composed Reformers are the presets: the same constants, and on every fixture case logits
/// equal bit for bit (hence within 1e-4 of HF); the composed causal model generates HF's greedy
/// tokens.
#[test]
fn composed_reformers_are_the_presets() {
    assert_eq!(ComposedCausalReformer::CHUNK_LENGTHS, CausalReformer::CHUNK_LENGTHS);
    assert_eq!(ComposedCausalReformer::MAX_POSITIONS, 64);
    assert_eq!(ComposedMaskedReformer::CHUNK_LENGTHS, MaskedReformer::CHUNK_LENGTHS);
    let d = dir("causal");
    let composed = ComposedCausalReformer::from_safetensors(
        d.join("model.safetensors"),
        d.join("rotations.safetensors"),
    )
    .expect("the causal fixture loads into the composed model");
    let preset = causal();
    for case in reference("causal").cases {
        let (ours, theirs) = (composed.logits(&case.batch()).unwrap(), preset.logits(&case.batch()).unwrap());
        assert!(ours == theirs, "causal/{}: composed differs from the preset", case.name);
        let diff = case.max_diff(&ours);
        println!("composed causal/{}: max |logit − HF| = {diff:.3e}", case.name);
        assert!(diff <= TOLERANCE, "composed causal/{}: {diff} > {TOLERANCE}", case.name);
    }
    let greedy = reference("causal").greedy.expect("the causal fixture has a greedy continuation");
    let options = GenerateOptions { max_new_tokens: greedy.tokens.len(), ..Default::default() };
    let out = composed.generate(&[&greedy.prompt], &options).expect("generation");
    assert_eq!(out[0], greedy.tokens);

    let d = dir("bidirectional");
    let composed = ComposedMaskedReformer::from_safetensors(
        d.join("model.safetensors"),
        d.join("rotations.safetensors"),
    )
    .expect("the bidirectional fixture loads into the composed model");
    let preset =
        MaskedReformer::from_safetensors(d.join("model.safetensors"), d.join("rotations.safetensors"))
            .expect("the bidirectional fixture loads");
    for case in reference("bidirectional").cases {
        let (ours, theirs) = (composed.logits(&case.batch()).unwrap(), preset.logits(&case.batch()).unwrap());
        assert!(ours == theirs, "bidirectional/{}: composed differs from the preset", case.name);
        let diff = case.max_diff(&ours);
        println!("composed bidirectional/{}: max |logit − HF| = {diff:.3e}", case.name);
        assert!(diff <= TOLERANCE, "composed bidirectional/{}: {diff} > {TOLERANCE}", case.name);
    }
}

/// `from_pretrained` reads the fixture's directory as HF saved it (config.json checked against the
/// declaration, then the weights) and runs exactly as `from_safetensors`; a config.json that
/// disagrees with the declaration — here in the hashing and the epsilon, which change no shape —
/// is refused with every differing key listed.
#[test]
fn from_pretrained_checks_the_config() {
    let d = dir("causal");
    let model = CausalReformer::from_pretrained(&d, d.join("rotations.safetensors"))
        .expect("the fixture's config fits");
    let batch = reference("causal").cases[0].batch();
    assert!(model.logits(&batch).unwrap() == causal().logits(&batch).unwrap());

    let patched = checkpoint::PatchedCheckpoint::new(
        &d,
        "reformer",
        serde_json::json!({ "num_hashes": 1, "layer_norm_eps": 1e-5, "attn_layers": ["lsh", "lsh", "local", "local"] }),
    );
    let err = CausalReformer::from_pretrained(&patched.0, d.join("rotations.safetensors"))
        .expect_err("a different model");
    assert_eq!(
        checkpoint::config_differences(&err),
        [
            "attn_layers [\"lsh\",\"lsh\",\"local\",\"local\"] ≠ attn_layers [\"lsh\", \"local\", \"lsh\", \"local\"]",
            "layer_norm_eps 1e-5 ≠ norm_eps 1e-12",
            "num_hashes 1 ≠ lsh.hashes 2",
        ],
        "{err}"
    );
}
