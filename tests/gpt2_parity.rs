//! GPT-2 family against Hugging Face transformers (`GPT2LMHeadModel`, random weights from a fixed
//! seed, written by `scripts/reference/gpt2.py`): logits within 1e-4, greedy generation identical
//! to `generate(do_sample=False)` for 40 tokens, and the KV-cache path equal to a full recompute
//! (1e-5) at every step. Two configs: `tiny` (tied head, powers of two) and `odd` (untied head,
//! 48 wide with 3 heads, d_ff 136, 517-token vocabulary).

use serde::Deserialize;
use tokenizers::Tokenizer;
use transformer::{Batch, GenerateOptions, Workspace};

transformer::model! {
    /// `tests/fixtures/gpt2/tiny`: 2 layers, 64 wide, 4 heads, tied head.
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

transformer::model! {
    /// `tests/fixtures/gpt2/odd`: 3 layers, 48 wide, 3 heads, d_ff 136, untied head.
    pub struct Odd {
        vocab_size: 517,
        max_positions: 96,
        d_model: 48,
        heads: 3,
        layers: 3,
        d_ff: 136,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: untied,
    }
}

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Prompt>,
    /// Indices of the prompts whose full logits are in `logits`.
    logits_prompts: Vec<usize>,
    /// `[prompt][position][vocab]` for the prompts `logits_prompts` names.
    logits: Vec<Vec<Vec<f32>>>,
    last_logits: Vec<Vec<f32>>,
    greedy: Vec<Vec<u32>>,
    /// `tok.decode(greedy)`: special tokens kept.
    greedy_text: Vec<String>,
    batched_greedy: BatchedGreedy,
}

#[derive(Deserialize)]
struct Prompt {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct BatchedGreedy {
    padding_side: String,
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    tokens: Vec<Vec<u32>>,
}

fn dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2").join(name)
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(dir(name).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The checks every config gets, over any decoder the macro generated.
macro_rules! parity_tests {
    ($module:ident, $model:ident, $name:literal) => {
        mod $module {
            use super::*;

            fn model() -> $model {
                $model::from_safetensors(dir($name).join("model.safetensors")).expect("fixture loads")
            }

            #[test]
            fn tokenizer_matches_the_reference() {
                let tokenizer = Tokenizer::from_file(dir($name).join("tokenizer.json")).unwrap();
                for p in reference($name).prompts {
                    let enc = tokenizer.encode(p.text.as_str(), false).unwrap();
                    assert_eq!(enc.get_ids(), &p.ids[..], "ids of {:?}", p.text);
                }
            }

            #[test]
            fn logits_match_transformers() {
                let (model, r) = (model(), reference($name));
                let mut ws = Workspace::new();
                for (&i, expected) in r.logits_prompts.iter().zip(&r.logits) {
                    let p = &r.prompts[i];
                    let logits =
                        model.logits_into(&Batch::from_sequences(&[&p.ids]).unwrap(), &mut ws).unwrap();
                    assert_eq!(logits.len(), expected.len());
                    for (pos, (ours, theirs)) in logits.iter().zip(expected).enumerate() {
                        let diff = max_abs_diff(ours, theirs);
                        assert!(diff <= 1e-4, "{:?} position {pos}: max |diff| {diff:e}", p.text);
                    }
                }
                for (p, theirs) in r.prompts.iter().zip(&r.last_logits) {
                    let logits =
                        model.logits_into(&Batch::from_sequences(&[&p.ids]).unwrap(), &mut ws).unwrap();
                    let diff = max_abs_diff(&logits[p.ids.len() - 1], theirs);
                    assert!(diff <= 1e-4, "last logits of {:?}: max |diff| {diff:e}", p.text);
                }
            }

            #[test]
            fn padded_batch_logits_match_each_prompt_alone() {
                let (model, r) = (model(), reference($name));
                let prompts: Vec<&[u32]> = r.prompts.iter().map(|p| p.ids.as_slice()).collect();
                let batch = Batch::from_sequences(&prompts).unwrap();
                let logits = model.logits(&batch).unwrap();
                for (b, (p, theirs)) in r.prompts.iter().zip(&r.last_logits).enumerate() {
                    let ours = &logits[b * batch.seq_len() + p.ids.len() - 1];
                    let diff = max_abs_diff(ours, theirs);
                    assert!(diff <= 1e-4, "batched last logits of {:?}: max |diff| {diff:e}", p.text);
                }
            }

            #[test]
            fn greedy_generation_matches_transformers_generate() {
                let (model, r) = (model(), reference($name));
                let options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
                for (p, expected) in r.prompts.iter().zip(&r.greedy) {
                    assert!(expected.len() >= 32);
                    let ours = model.generate(&[&p.ids], &options).unwrap().remove(0);
                    assert_eq!(&ours, expected, "greedy continuation of {:?}", p.text);
                }
            }

            /// Text in, text out: `generate_text` tokenises the prompt text, generates greedily and
            /// decodes what it generated as transformers' tokenizer does (with special tokens
            /// skipped, so an `<|endoftext|>` HF's `decode` keeps is not in ours).
            #[test]
            fn text_generation_decodes_as_transformers() {
                let (model, r) = (model(), reference($name));
                let tokenizer =
                    transformer::text::Tokenizer::from_file(dir($name).join("tokenizer.json")).unwrap();
                let options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
                for (p, expected) in r.prompts.iter().zip(&r.greedy_text) {
                    let ours = model.generate_text(&tokenizer, &p.text, &options).unwrap();
                    assert_eq!(ours, expected.replace("<|endoftext|>", ""), "continuation of {:?}", p.text);
                }
            }

            #[test]
            fn batched_generation_matches_transformers_left_padded_batch() {
                let (model, r) = (model(), reference($name));
                let options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
                let prompts: Vec<&[u32]> = r.prompts.iter().map(|p| p.ids.as_slice()).collect();
                let ours = model.generate(&prompts, &options).unwrap();
                assert_eq!(ours, r.batched_greedy.tokens, "prompts generated together");
                assert_eq!(ours, r.greedy, "together equals alone");
            }

            /// The left-padded batch HF's `generate` got, with its attention mask, generates HF's
            /// tokens; the ids under mask 0 are never read (padding with a token the prompts use
            /// changes nothing), and a mask with a hole is refused.
            #[test]
            fn generate_padded_matches_transformers_given_the_mask() {
                let (model, r) = (model(), reference($name));
                let b = &r.batched_greedy;
                assert_eq!(b.padding_side, "left");
                let array = |rows: &Vec<Vec<u32>>| {
                    ndarray::Array2::from_shape_vec((rows.len(), rows[0].len()), rows.concat()).unwrap()
                };
                let (mut ids, mask) = (array(&b.input_ids), array(&b.attention_mask));
                assert!(mask.iter().any(|&m| m == 0), "the fixture batch is padded");
                let options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
                let ours = model.generate_padded(ids.view(), mask.view(), &options).unwrap();
                assert_eq!(ours, b.tokens, "HF's left-padded batch");

                let used = r.prompts[0].ids[0];
                ids.zip_mut_with(&mask, |id, &m| {
                    if m == 0 {
                        *id = used
                    }
                });
                assert_eq!(model.generate_padded(ids.view(), mask.view(), &options).unwrap(), b.tokens);

                let mut holed = mask.clone();
                let (row, col) = (0..holed.nrows())
                    .find_map(|r| {
                        let first = holed.row(r).iter().position(|&m| m == 1)?;
                        (first + 2 < holed.ncols()).then_some((r, first + 1))
                    })
                    .expect("a prompt of three tokens or more");
                holed[[row, col]] = 0;
                match model.generate_padded(ids.view(), holed.view(), &options) {
                    Err(transformer::Error::MaskNotContiguous { sequence, position }) => {
                        assert_eq!((sequence, position), (row, col))
                    }
                    other => panic!("expected MaskNotContiguous, got {other:?}"),
                }
            }

            #[test]
            fn streaming_yields_the_generated_tokens() {
                let (model, r) = (model(), reference($name));
                let options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
                let streamed: Vec<u32> =
                    model.stream(&r.prompts[1].ids, &options).unwrap().collect::<Result<_, _>>().unwrap();
                assert_eq!(streamed, r.greedy[1]);
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
                    assert_eq!(cache.lens(), &[tokens.len()]);
                    tokens.push(next);
                    step = Batch::from_sequences(&[[next]]).unwrap();
                }
            }
        }
    };
}

parity_tests!(tiny, Tiny, "tiny");
parity_tests!(odd, Odd, "odd");

#[test]
fn running_past_the_context_is_an_error() {
    let model = Tiny::from_safetensors(dir("tiny").join("model.safetensors")).unwrap();
    let options = GenerateOptions { max_new_tokens: 120, ..GenerateOptions::default() };
    let err = model.generate(&[&[1, 2, 3, 4, 5, 6, 7, 8, 9]], &options).unwrap_err();
    assert!(matches!(err, transformer::Error::ContextFull { sequence: 0, needed: 129, max: 128 }), "{err:?}");
    let mut cache = model.new_cache(1);
    let mut ws = Workspace::new();
    let long = Batch::from_sequences(&[vec![1u32; 128]]).unwrap();
    model.step_into(&long, &mut cache, &mut ws).unwrap();
    let one_more = Batch::from_sequences(&[[1u32]]).unwrap();
    let err = model.step_into(&one_more, &mut cache, &mut ws).unwrap_err();
    assert!(matches!(err, transformer::Error::ContextFull { needed: 129, max: 128, .. }), "{err:?}");
}
