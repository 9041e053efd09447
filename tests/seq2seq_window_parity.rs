//! Local attention windows in an encoder-decoder: `torch.nn.Transformer` as in the paper (the
//! weights of `tests/fixtures/seq2seq/transformer`) with a centred window of 4 in the encoder and a
//! trailing window of 3 in the first decoder layer (the second global), against torch given the
//! same band masks (`scripts/reference/windowed_seq2seq.py`, which also shows that dropping the
//! windows, widening the encoder's by one key a side, or windowing the other decoder layer moves
//! the logits by ≥ 0.21). Teacher-forced logits within 1e-4 alone and batched, greedy generation
//! identical alone and batched, cached steps equal to a full recompute.

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

#[path = "common/seq2seq_presets.rs"]
mod seq2seq_presets;
use seq2seq_presets::*;

#[derive(Deserialize)]
struct Reference {
    sources: Vec<Vec<u32>>,
    decoder_inputs: Vec<Vec<u32>>,
    decoder_logits: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Vec<u32>>,
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seq2seq")
}

fn model() -> PaperWindowed {
    PaperWindowed::from_safetensors(fixtures().join("transformer/model.safetensors")).expect("fixture loads")
}

fn reference() -> Reference {
    let text =
        std::fs::read_to_string(fixtures().join("transformer_windowed.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn slices(seqs: &[Vec<u32>]) -> Vec<&[u32]> {
    seqs.iter().map(Vec::as_slice).collect()
}

const TOLERANCE: f32 = 1e-4;

#[test]
fn teacher_forced_logits_match_alone_and_batched() {
    let (model, r) = (model(), reference());
    let mut worst = 0.0f32;
    for (b, (source, target)) in r.sources.iter().zip(&r.decoder_inputs).enumerate() {
        let memory = model.encode(&Batch::from_sequences(&[source]).unwrap()).unwrap();
        let logits = model.logits(&memory, &Batch::from_sequences(&[target]).unwrap()).unwrap();
        let expected: Vec<f32> = r.decoder_logits[b].iter().flatten().copied().collect();
        let diff = max_abs_diff(logits.as_flattened(), &expected);
        assert!(diff <= TOLERANCE, "source {b} alone: max |Δ| = {diff}");
        worst = worst.max(diff);
    }
    let memory = model.encode(&Batch::from_sequences(&slices(&r.sources)).unwrap()).unwrap();
    let targets = Batch::from_sequences(&slices(&r.decoder_inputs)).unwrap();
    let logits = model.logits(&memory, &targets).unwrap();
    for (b, target) in r.decoder_inputs.iter().enumerate() {
        let rows = &logits[b * targets.seq_len()..b * targets.seq_len() + target.len()];
        let expected: Vec<f32> = r.decoder_logits[b].iter().flatten().copied().collect();
        let diff = max_abs_diff(rows.as_flattened(), &expected);
        assert!(diff <= TOLERANCE, "source {b} batched: max |Δ| = {diff}");
        worst = worst.max(diff);
    }
    println!("windowed encoder-decoder: max |Δ| = {worst:.2e}");
}

#[test]
fn greedy_matches_alone_and_batched() {
    let (model, r) = (model(), reference());
    let options = GenerateOptions { max_new_tokens: r.greedy[0].len(), ..GenerateOptions::default() };
    for (b, source) in r.sources.iter().enumerate() {
        assert_eq!(model.generate(&[source], &options).unwrap()[0], r.greedy[b], "source {b} alone");
    }
    assert_eq!(model.generate(&slices(&r.sources), &options).unwrap(), r.greedy, "sources batched");
}

#[test]
fn cached_steps_equal_full_recompute() {
    let (model, r) = (model(), reference());
    let memory = model.encode(&Batch::from_sequences(&slices(&r.sources)).unwrap()).unwrap();
    let targets = slices(&r.decoder_inputs);
    let full = model.logits(&memory, &Batch::from_sequences(&targets).unwrap()).unwrap();
    let seq = targets.iter().map(|t| t.len()).max().unwrap();
    let shortest = targets.iter().map(|t| t.len()).min().unwrap();
    let (mut cache, mut ws) = (model.new_cache(targets.len()), Workspace::new());
    // A prefill of 2 tokens, then one per step past the decoder's window of 3.
    let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..2]).collect();
    let first = model.step_into(&memory, &Batch::from_sequences(&prefix).unwrap(), &mut cache, &mut ws);
    for (b, row) in first.unwrap().iter().enumerate() {
        let diff = max_abs_diff(row, &full[b * seq + 1]);
        assert!(diff <= 1e-5, "target {b}, prefill: max |Δ| = {diff}");
    }
    for pos in 2..shortest {
        let step: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
        let logits = model.step_into(&memory, &Batch::from_sequences(&step).unwrap(), &mut cache, &mut ws);
        for (b, row) in logits.unwrap().iter().enumerate() {
            let diff = max_abs_diff(row, &full[b * seq + pos]);
            assert!(diff <= 1e-5, "target {b}, position {pos}: max |Δ| = {diff}");
        }
    }
}
