//! Encoder-decoders whose cross-attention is additive (Bahdanau), Luong's "location" or
//! location-sensitive (Tacotron 2), declared with `cross_attention_kind`, against PyTorch
//! references nobody here wrote (random weights from a fixed seed, written by
//! `scripts/reference/additive_seq2seq.py`: `torch.nn.Transformer` whose decoder layers hold the
//! attention modules of `scripts/reference/additive.py` in place of `multihead_attn`). For each:
//! teacher-forced logits of every real target row within 1e-4 (one source, and two padded
//! sources with padded targets), greedy generation identical to the reference alone and batched,
//! and cached decoding (a prefill, then one token per step) equal to a full recompute.

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

#[path = "common/additive_presets.rs"]
mod additive_presets;
use additive_presets::*;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    generation: Generation,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    sources: Vec<Vec<u32>>,
    targets: Vec<Vec<u32>>,
    /// The real target rows, sequence after sequence.
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Generation {
    sources: Vec<Vec<u32>>,
    max_new_tokens: usize,
    alone: Vec<Vec<u32>>,
    batched: Vec<Vec<u32>>,
}

fn dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/additive_seq2seq").join(name)
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(dir(name).join("reference.json")).expect("fixture present");
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

macro_rules! parity_tests {
    ($module:ident, $model:ident, $name:literal) => {
        mod $module {
            use super::*;

            fn model() -> $model {
                $model::from_safetensors(dir($name).join("model.safetensors")).expect("fixture loads")
            }

            #[test]
            fn teacher_forced_logits_match() {
                let (model, r) = (model(), reference($name));
                let mut worst = 0.0f32;
                for case in &r.cases {
                    let memory =
                        model.encode(&Batch::from_sequences(&slices(&case.sources)).unwrap()).unwrap();
                    let targets = Batch::from_sequences(&slices(&case.targets)).unwrap();
                    let logits = model.logits(&memory, &targets).unwrap();
                    let mut expected = case.logits.iter();
                    for (b, target) in case.targets.iter().enumerate() {
                        for t in 0..target.len() {
                            let row = &logits[b * targets.seq_len() + t];
                            let diff =
                                max_abs_diff(row, expected.next().expect("a reference row per real row"));
                            assert!(
                                diff <= TOLERANCE,
                                "{}: sequence {b}, row {t}: max |Δ| = {diff}",
                                case.name
                            );
                            worst = worst.max(diff);
                        }
                    }
                    assert!(
                        expected.next().is_none(),
                        "{}: more reference rows than real target rows",
                        case.name
                    );
                }
                println!("{}: teacher-forced logits, max |Δ| = {worst:.2e}", $name);
            }

            #[test]
            fn greedy_matches_alone_and_batched() {
                let (model, r) = (model(), reference($name));
                let g = &r.generation;
                let options =
                    GenerateOptions { max_new_tokens: g.max_new_tokens, ..GenerateOptions::default() };
                for (b, source) in g.sources.iter().enumerate() {
                    let out = model.generate(&[source], &options).unwrap();
                    assert_eq!(out[0], g.alone[b], "source {b} alone");
                }
                let out = model.generate(&slices(&g.sources), &options).unwrap();
                assert_eq!(out, g.batched, "sources batched");
            }

            #[test]
            fn cached_steps_equal_full_recompute() {
                let (model, r) = (model(), reference($name));
                let case = r.cases.iter().find(|c| c.sources.len() > 1).expect("a batched case");
                let memory = model.encode(&Batch::from_sequences(&slices(&case.sources)).unwrap()).unwrap();
                let targets = slices(&case.targets);
                let full = model.logits(&memory, &Batch::from_sequences(&targets).unwrap()).unwrap();
                let seq = targets.iter().map(|t| t.len()).max().unwrap();
                let shortest = targets.iter().map(|t| t.len()).min().unwrap();
                let mut cache = model.new_cache(targets.len());
                let mut ws = Workspace::new();
                // Prefill 3 tokens of each target, then one token per step, then (after a
                // reset) the whole prefix again as one step: each must equal the full pass.
                let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..3]).collect();
                let first =
                    model.step_into(&memory, &Batch::from_sequences(&prefix).unwrap(), &mut cache, &mut ws);
                for (b, row) in first.unwrap().iter().enumerate() {
                    let diff = max_abs_diff(row, &full[b * seq + 2]);
                    assert!(diff <= 1e-5, "target {b}, prefill: max |Δ| = {diff}");
                }
                let mut checked = 0;
                for pos in 3..shortest {
                    let step: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
                    let logits =
                        model.step_into(&memory, &Batch::from_sequences(&step).unwrap(), &mut cache, &mut ws);
                    for (b, row) in logits.unwrap().iter().enumerate() {
                        let diff = max_abs_diff(row, &full[b * seq + pos]);
                        assert!(diff <= 1e-5, "target {b}, position {pos}: max |Δ| = {diff}");
                    }
                    checked += 1;
                }
                assert!(checked >= 3, "the case must leave steps after the prefill");
                cache.reset();
                let whole: Vec<&[u32]> = targets.iter().map(|t| &t[..shortest]).collect();
                let again =
                    model.step_into(&memory, &Batch::from_sequences(&whole).unwrap(), &mut cache, &mut ws);
                for (b, row) in again.unwrap().iter().enumerate() {
                    let diff = max_abs_diff(row, &full[b * seq + shortest - 1]);
                    assert!(diff <= 1e-5, "target {b}, after a reset: max |Δ| = {diff}");
                }
            }
        }
    };
}

parity_tests!(bahdanau, PaperBahdanau, "bahdanau");
parity_tests!(location, PaperLocation, "location");
parity_tests!(location_sensitive, PaperLocationSensitive, "location_sensitive");

/// A cache that decoded against one memory cannot continue against sources padded differently:
/// its location-sensitive alignments cover the first sources' positions.
#[test]
fn a_cache_keeps_its_sources() {
    let model = PaperLocationSensitive::from_safetensors(dir("location_sensitive").join("model.safetensors"))
        .expect("fixture loads");
    let long = model.encode(&Batch::from_sequences(&[&[5, 6, 7, 8, 9][..]]).unwrap()).unwrap();
    let short = model.encode(&Batch::from_sequences(&[&[5, 6][..]]).unwrap()).unwrap();
    let (mut cache, mut ws) = (model.new_cache(1), Workspace::new());
    let start = Batch::from_sequences(&[&[PaperLocationSensitive::DECODER_START][..]]).unwrap();
    model.step_into(&long, &start, &mut cache, &mut ws).unwrap();
    let err = model.step_into(&short, &start, &mut cache, &mut ws).unwrap_err();
    assert!(matches!(err, transformer::Error::CacheSourcesMismatch { cached: 5, sources: 2 }), "{err}");
    cache.reset();
    model.step_into(&short, &start, &mut cache, &mut ws).expect("a reset cache takes new sources");
}
