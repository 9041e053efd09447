//! Encoder-decoder models against references nobody here wrote (random weights from a fixed seed,
//! written by `scripts/reference/seq2seq.py`): Hugging Face `T5ForConditionalGeneration` (v1.1's
//! gated GELU with a head width apart from `d_model`, and the original's ReLU with a tied,
//! rescaled head), `BartForConditionalGeneration` (learned positions offset by 2, embedding norm,
//! scaled embeddings, `final_logits_bias`) and `torch.nn.Transformer` as in the paper (sinusoidal
//! positions, post-norm, ReLU, packed `in_proj` projections). For each: encoder output and
//! teacher-forced logits within 1e-4, 20 greedy tokens identical to the reference alone and with
//! the sources batched, and cached decoding equal to a full recompute (1e-5).

use serde::Deserialize;
use transformer::{Batch, EncoderMemory, GenerateOptions, Workspace};

#[path = "common/seq2seq_presets.rs"]
mod seq2seq_presets;
use seq2seq_presets::*;

#[derive(Deserialize)]
struct Reference {
    sources: Vec<Vec<u32>>,
    encoder_hidden: Vec<Vec<Vec<f32>>>,
    decoder_inputs: Vec<Vec<u32>>,
    decoder_logits: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Vec<u32>>,
    batched_greedy: BatchedGreedy,
    special_tokens: SpecialTokens,
    relative_buckets: Option<Buckets>,
}

#[derive(Deserialize)]
struct BatchedGreedy {
    tokens: Vec<Vec<u32>>,
}

#[derive(Deserialize)]
struct SpecialTokens {
    decoder_start: u32,
}

#[derive(Deserialize)]
struct Buckets {
    relative_positions: Vec<i64>,
    num_buckets: usize,
    max_distance: usize,
    bidirectional: Vec<usize>,
    unidirectional: Vec<usize>,
}

fn dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seq2seq").join(name)
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(dir(name).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TOLERANCE: f32 = 1e-4;

fn greedy(tokens: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens: tokens, ..GenerateOptions::default() }
}

macro_rules! parity_tests {
    ($module:ident, $model:ident, $name:literal) => {
        mod $module {
            use super::*;

            fn model() -> $model {
                $model::from_safetensors(dir($name).join("model.safetensors")).expect("fixture loads")
            }

            fn encode_alone(model: &$model, source: &[u32]) -> EncoderMemory {
                model.encode(&Batch::from_sequences(&[source]).unwrap()).unwrap()
            }

            /// `from_pretrained` reads the fixture's directory (config.json checked against the
            /// declaration, then the weights) and runs as `from_safetensors` does.
            #[test]
            fn from_pretrained_reads_the_directory() {
                let pretrained = $model::from_pretrained(dir($name)).expect("the fixture's config fits");
                let r = reference($name);
                let sources = Batch::from_sequences(&r.sources[..1]).unwrap();
                let targets = Batch::from_sequences(&r.decoder_inputs[..1]).unwrap();
                let (ours, theirs) =
                    (pretrained.encode(&sources).unwrap(), model().encode(&sources).unwrap());
                assert!(
                    pretrained.logits(&ours, &targets).unwrap() == model().logits(&theirs, &targets).unwrap()
                );
            }

            #[test]
            fn decoder_start_matches_the_reference() {
                assert_eq!($model::DECODER_START, reference($name).special_tokens.decoder_start);
            }

            #[test]
            fn encoder_output_matches_alone_and_batched() {
                let (model, r) = (model(), reference($name));
                let batched = model.encode(&Batch::from_sequences(&r.sources).unwrap()).unwrap();
                let width = batched.sources().seq_len();
                for (b, (source, expected)) in r.sources.iter().zip(&r.encoder_hidden).enumerate() {
                    let expected: Vec<f32> = expected.iter().flatten().copied().collect();
                    let memory = encode_alone(&model, source);
                    let alone = model.encoder_hidden(&memory).as_flattened();
                    let diff = max_abs_diff(alone, &expected);
                    assert!(diff <= TOLERANCE, "source {b} alone: max |Δ| = {diff}");
                    let rows = &model.encoder_hidden(&batched)[b * width..b * width + source.len()];
                    let diff = max_abs_diff(rows.as_flattened(), &expected);
                    assert!(diff <= TOLERANCE, "source {b} batched: max |Δ| = {diff}");
                }
            }

            #[test]
            fn teacher_forced_logits_match() {
                let (model, r) = (model(), reference($name));
                for (b, source) in r.sources.iter().enumerate() {
                    let memory = encode_alone(&model, source);
                    let targets = Batch::from_sequences(&[&r.decoder_inputs[b]]).unwrap();
                    let logits = model.logits(&memory, &targets).unwrap();
                    let expected: Vec<f32> = r.decoder_logits[b].iter().flatten().copied().collect();
                    let diff = max_abs_diff(logits.as_flattened(), &expected);
                    assert!(diff <= TOLERANCE, "source {b}: max |Δ| = {diff}");
                }
            }

            #[test]
            fn greedy_matches_alone_and_batched() {
                let (model, r) = (model(), reference($name));
                let options = greedy(r.greedy[0].len());
                for (b, source) in r.sources.iter().enumerate() {
                    let out = model.generate(&[source], &options).unwrap();
                    assert_eq!(out[0], r.greedy[b], "source {b} alone");
                }
                let sources: Vec<&[u32]> = r.sources.iter().map(Vec::as_slice).collect();
                let out = model.generate(&sources, &options).unwrap();
                assert_eq!(out, r.batched_greedy.tokens, "sources batched");
            }

            #[test]
            fn cached_steps_equal_full_recompute() {
                let (model, r) = (model(), reference($name));
                let sources: Vec<&[u32]> = r.sources.iter().map(Vec::as_slice).collect();
                let memory = model.encode(&Batch::from_sequences(&sources).unwrap()).unwrap();
                let targets: Vec<&[u32]> = r.decoder_inputs.iter().map(Vec::as_slice).collect();
                let full = model.logits(&memory, &Batch::from_sequences(&targets).unwrap()).unwrap();
                let seq = targets.iter().map(|t| t.len()).max().unwrap();
                let mut cache = model.new_cache(targets.len());
                let mut ws = Workspace::new();
                // Prefill the first 3 tokens of each target, then one token per step.
                let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..3]).collect();
                let first =
                    model.step_into(&memory, &Batch::from_sequences(&prefix).unwrap(), &mut cache, &mut ws);
                let first = first.unwrap().to_vec();
                for (b, t) in targets.iter().enumerate() {
                    let diff = max_abs_diff(&first[b], &full[b * seq + 2]);
                    assert!(diff <= 1e-5, "target {b}, prefill: max |Δ| = {diff}");
                    let _ = t;
                }
                for pos in 3..seq {
                    let live: Vec<usize> = (0..targets.len()).filter(|&b| pos < targets[b].len()).collect();
                    if live.len() < targets.len() {
                        break;
                    }
                    let step: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
                    let logits =
                        model.step_into(&memory, &Batch::from_sequences(&step).unwrap(), &mut cache, &mut ws);
                    for (b, row) in logits.unwrap().iter().enumerate() {
                        let diff = max_abs_diff(row, &full[b * seq + pos]);
                        assert!(diff <= 1e-5, "target {b}, position {pos}: max |Δ| = {diff}");
                    }
                }
            }

            #[test]
            fn a_decoder_batch_must_pair_with_the_sources() {
                let (model, r) = (model(), reference($name));
                let memory = encode_alone(&model, &r.sources[0]);
                let targets: Vec<&[u32]> = r.decoder_inputs.iter().map(Vec::as_slice).collect();
                let err = model.logits(&memory, &Batch::from_sequences(&targets).unwrap()).unwrap_err();
                assert!(
                    matches!(err, transformer::Error::MemoryMismatch { sources: 1, targets: 2 }),
                    "{err}"
                );
            }
        }
    };
}

parity_tests!(t5, T5Gated, "t5");
parity_tests!(t5_tied, T5Tied, "t5_tied");
parity_tests!(bart, Bart, "bart");
// The same models as transformers 5.25.0 saves them (`scale_decoder_outputs`, the head tied by the
// file's lack of `lm_head.weight`): the same declarations run them.
parity_tests!(t5_v5, T5Gated, "t5_v5");
parity_tests!(t5_tied_v5, T5Tied, "t5_tied_v5");
parity_tests!(paper, Paper, "transformer");

/// A T5 made by transformers 5 from a `tie_word_embeddings=false` config has a head tied to the
/// embeddings *without* the rescale — a kind transformers 4 never wrote and no preset declares.
/// Read as T5 v1.1 (an untied head) it is refused: its file has no `lm_head.weight`. (Declared
/// `lm_head: tied`, its config is refused: `scale_decoder_outputs` is false.)
#[test]
fn a_tied_unscaled_t5_is_refused_not_misread() {
    let message = match T5Gated::from_pretrained(dir("t5_tied_unscaled_v5")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a tied, unscaled T5 loaded as v1.1"),
    };
    assert!(message.contains("lm_head.weight") && message.contains("missing"), "{message}");
}

#[test]
fn t5_buckets_match_transformers() {
    use transformer::layers::position_bias::t5_bucket;
    let buckets = reference("t5").relative_buckets.expect("T5 fixtures carry the bucket table");
    for (i, &rel) in buckets.relative_positions.iter().enumerate() {
        let (n, max) = (buckets.num_buckets, buckets.max_distance);
        assert_eq!(t5_bucket(rel, true, n, max), buckets.bidirectional[i], "bidirectional, offset {rel}");
        assert_eq!(t5_bucket(rel, false, n, max), buckets.unidirectional[i], "causal, offset {rel}");
    }
}
