//! LLaMA and Mistral against Hugging Face transformers (`LlamaForCausalLM`, `MistralForCausalLM`,
//! random weights from a fixed seed, written by `scripts/reference/llama.py`): logits within 1e-4,
//! greedy generation identical to `generate(do_sample=False)` for 32 tokens (alone and with the
//! prompts batched), and cached steps equal to a full recompute (1e-5). Configs: `llama`
//! (grouped-query 4/2, untied), `llama_partial` (multi-query 3/1, θ = 500000, tied; full rotary,
//! since transformers' Llama cannot run partial rotary) and `mistral` (sliding window 8, shorter
//! than every prompt).

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

macro_rules! llama {
    ($name:ident, d_model: $d:literal, heads: $h:literal, kv_heads: $kv:literal, d_ff: $f:literal,
     theta: $theta:literal, head: $head:ident $(, window: $w:literal)?) => {
        transformer::model! {
            pub struct $name {
                vocab_size: 320,
                max_positions: 128,
                d_model: $d,
                heads: $h,
                kv_heads: $kv,
                layers: 2,
                d_ff: $f,
                activation: swiglu,
                norm: rms_norm,
                norm_eps: 1e-6,
                norm_placement: pre,
                positions: rope,
                rope_theta: $theta,
                attention: causal,
                $(window: $w,)?
                weights: llama,
                lm_head: $head,
            }
        }
    };
}

llama!(Llama, d_model: 64, heads: 4, kv_heads: 2, d_ff: 176, theta: 10000.0, head: untied);
llama!(LlamaMqa, d_model: 48, heads: 3, kv_heads: 1, d_ff: 136, theta: 500000.0, head: tied);
llama!(Mistral, d_model: 64, heads: 4, kv_heads: 2, d_ff: 176, theta: 10000.0, head: untied, window: 8);

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

fn dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama").join(name)
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(dir(name).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

macro_rules! parity_tests {
    ($module:ident, $model:ident, $name:literal) => {
        mod $module {
            use super::*;

            fn model() -> $model {
                $model::from_safetensors(dir($name).join("model.safetensors")).expect("fixture loads")
            }

            #[test]
            fn logits_match_transformers() {
                let (model, r) = (model(), reference($name));
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
                let (model, r) = (model(), reference($name));
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
                let (model, r) = (model(), reference($name));
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

parity_tests!(llama, Llama, "llama");
parity_tests!(llama_mqa, LlamaMqa, "llama_partial");
parity_tests!(mistral, Mistral, "mistral");
