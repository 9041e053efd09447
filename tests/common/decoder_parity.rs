//! The parity tests every decoder fixture gets (`reference.json` written by a
//! `scripts/reference/*.py`): logits within 1e-4, greedy generation identical for 32 tokens (alone
//! and with the prompts batched), cached steps equal to a full recompute (1e-5). Included with
//! `#[path = "common/decoder_parity.rs"] #[macro_use] mod decoder_parity;` at the test's root.
#![allow(dead_code)]

use serde::Deserialize;

#[derive(Deserialize)]
pub struct Reference {
    pub prompts: Vec<Prompt>,
    /// Indices of the prompts whose full logits are in `logits`.
    pub logits_prompts: Vec<usize>,
    /// `[prompt][position][vocab]` for the prompts `logits_prompts` names.
    pub logits: Vec<Vec<Vec<f32>>>,
    pub last_logits: Vec<Vec<f32>>,
    pub greedy: Vec<Vec<u32>>,
    pub batched_greedy: BatchedGreedy,
}

#[derive(Deserialize)]
pub struct Prompt {
    pub ids: Vec<u32>,
}

#[derive(Deserialize)]
pub struct BatchedGreedy {
    pub tokens: Vec<Vec<u32>>,
}

/// `tests/fixtures/<fixture>`.
pub fn dir(fixture: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture)
}

pub fn reference(fixture: &str) -> Reference {
    let text = std::fs::read_to_string(dir(fixture).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `decoder_parity_tests!(module, Model, "fixture/dir")`: the three tests for one fixture.
macro_rules! decoder_parity_tests {
    ($module:ident, $model:ident, $fixture:literal) => {
        mod $module {
            use super::$model;
            use crate::decoder_parity::{dir, max_abs_diff, reference};
            use transformer::{Batch, GenerateOptions, Workspace};

            fn model() -> $model {
                $model::from_safetensors(dir($fixture).join("model.safetensors")).expect("fixture loads")
            }

            /// `from_pretrained` reads the fixture's directory — its config.json checked against
            /// the declaration, then the weights — and runs as `from_safetensors` does.
            #[test]
            fn from_pretrained_reads_the_directory() {
                let pretrained = $model::from_pretrained(dir($fixture))
                    .expect("the fixture's config fits the declaration");
                let batch = Batch::from_sequences(&[&reference($fixture).prompts[0].ids]).unwrap();
                assert!(pretrained.logits(&batch).unwrap() == model().logits(&batch).unwrap());
            }

            #[test]
            fn logits_match_the_reference() {
                let (model, r) = (model(), reference($fixture));
                let mut ws = Workspace::new();
                for (&i, expected) in r.logits_prompts.iter().zip(&r.logits) {
                    let ids = &r.prompts[i].ids;
                    let logits = model.logits_into(&Batch::from_sequences(&[ids]).unwrap(), &mut ws).unwrap();
                    for (pos, (ours, theirs)) in logits.iter().zip(expected).enumerate() {
                        let diff = max_abs_diff(ours, theirs);
                        assert!(diff <= 1e-4, "prompt {i} position {pos}: max |diff| {diff:e}");
                    }
                }
                for (i, (p, theirs)) in r.prompts.iter().zip(&r.last_logits).enumerate() {
                    let logits =
                        model.logits_into(&Batch::from_sequences(&[&p.ids]).unwrap(), &mut ws).unwrap();
                    let diff = max_abs_diff(&logits[p.ids.len() - 1], theirs);
                    assert!(diff <= 1e-4, "last logits of prompt {i}: max |diff| {diff:e}");
                }
            }

            #[test]
            fn greedy_generation_matches_the_reference() {
                let (model, r) = (model(), reference($fixture));
                let options = GenerateOptions { max_new_tokens: 32, ..GenerateOptions::default() };
                for (i, (p, expected)) in r.prompts.iter().zip(&r.greedy).enumerate() {
                    let ours = model.generate(&[&p.ids], &options).unwrap().remove(0);
                    assert_eq!(&ours, expected, "greedy continuation of prompt {i}");
                }
                let prompts: Vec<&[u32]> = r.prompts.iter().map(|p| p.ids.as_slice()).collect();
                let together = model.generate(&prompts, &options).unwrap();
                assert_eq!(together, r.batched_greedy.tokens, "prompts generated together");
            }

            #[test]
            fn kv_cache_steps_equal_a_full_recompute() {
                let (model, r) = (model(), reference($fixture));
                let mut tokens = r.prompts[2].ids.clone();
                let mut cache = model.new_cache(1);
                let (mut ws, mut full_ws) = (Workspace::new(), Workspace::new());
                let mut step = Batch::from_sequences(&[&tokens]).unwrap();
                for (i, &next) in r.greedy[2].iter().enumerate() {
                    let cached = model.step_into(&step, &mut cache, &mut ws).unwrap()[0];
                    let full =
                        model.logits_into(&Batch::from_sequences(&[&tokens]).unwrap(), &mut full_ws).unwrap();
                    let diff = max_abs_diff(&cached, &full[tokens.len() - 1]);
                    assert!(diff <= 1e-5, "step {i}: cached vs full max |diff| {diff:e}");
                    tokens.push(next);
                    step = Batch::from_sequences(&[[next]]).unwrap();
                }
            }
        }
    };
}
