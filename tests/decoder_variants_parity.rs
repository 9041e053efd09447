//! Decoder-only variants against Hugging Face transformers (random weights from a fixed seed):
//!
//! - BLOOM (`BloomForCausalLM`, `scripts/reference/bloom.py`): ALiBi position biases, per-head
//!   interleaved fused `query_key_value`, embedding LayerNorm, tanh GELU, tied head;
//! - GPT-NeoX (`GPTNeoXForCausalLM`, `scripts/reference/neox.py`): the parallel residual (attention
//!   and feed-forward of the same input added together), partial rotary positions (8 of 16 head
//!   dims), per-head interleaved fused `query_key_value`, untied `embed_out`.
//!
//! Each: logits within 1e-4, greedy generation identical to `generate(do_sample=False)` for 32
//! tokens (alone and with the prompts batched, left-padded on the reference side), and cached steps
//! equal to a full recompute (1e-5).

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

transformer::model! {
    /// The `bloom` fixture: 64 wide, 4 heads, 2 layers, tied embeddings.
    pub struct Bloom {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: alibi,
        attention: causal,
        weights: bloom,
        lm_head: tied,
    }
}

transformer::model! {
    /// The `neox` fixture: 64 wide, 4 heads of 16 with 8 rotary dims, 2 parallel layers.
    pub struct NeoX {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: rope,
        rope_theta: 10000.0,
        rotary_dims: 8,
        residual: parallel,
        attention: causal,
        weights: neox,
        lm_head: untied,
    }
}

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Prompt>,
    logits_prompts: Vec<usize>,
    logits: Vec<Vec<Vec<f32>>>,
    last_logits: Vec<Vec<f32>>,
    greedy: Vec<Vec<u32>>,
    batched_greedy: BatchedGreedy,
}

#[derive(Deserialize)]
struct Prompt {
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct BatchedGreedy {
    tokens: Vec<Vec<u32>>,
}

fn dir(fixture: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture)
}

fn reference(fixture: &str) -> Reference {
    let text = std::fs::read_to_string(dir(fixture).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

macro_rules! parity_tests {
    ($module:ident, $model:ident, $fixture:literal) => {
        mod $module {
            use super::*;

            fn model() -> $model {
                $model::from_safetensors(dir($fixture).join("model.safetensors")).expect("fixture loads")
            }

            #[test]
            fn logits_match_transformers() {
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
            fn greedy_generation_matches_transformers_generate() {
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

parity_tests!(bloom, Bloom, "bloom/bloom");
parity_tests!(neox, NeoX, "neox/neox");
