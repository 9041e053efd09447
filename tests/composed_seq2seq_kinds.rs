//! Composed encoder-decoders with what the encoder-decoder preset has beyond BART: additive,
//! location and location-sensitive cross-attention (`additive_attention`, `location_attention`,
//! `location_sensitive_attention` in `fn decode`), written over the `torch.nn.Transformer`
//! checkpoints of `tests/fixtures/additive_seq2seq` (packed `in_proj` projections). Each is
//! bit-identical to the preset declared with `cross_attention_kind` (teacher-forced logits of
//! padded batches, a prefill and cached steps, greedy generation alone and batched): both lower to
//! the same two-stack graph. The preset is within 1e-4 of PyTorch on these fixtures
//! (`tests/additive_seq2seq_parity.rs`); the composed models are checked against the same
//! reference here too.

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

transformer::model! {
    /// `bahdanau` as composed passes: Bahdanau: a scoring MLP of width 16 over the memory rows.
    pub struct ComposedBahdanau {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        encoder_layers: 2,
        decoder_layers: 2,
        decoder_start: 1,
    }

    fn encode(tokens) -> memory {
        #[weights = "embedding"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        let x = x + sinusoidal(positions, max_positions, d_model);
        #[weights = "transformer.encoder.layers.{layer}"]
        for layer in 0..encoder_layers {
            // `nn.MultiheadAttention` packs Q, K and V into one `in_proj_weight`.
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads), d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            #[weights("linear1", "linear2")]
            let ffn_out = linear(relu(linear(x, d_ff)), d_model);
            #[weights = "norm2"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        #[weights = "transformer.encoder.norm"]
        layer_norm(x, eps = 1e-5)
    }

    fn decode(tokens, memory) -> logits {
        #[weights = "embedding"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        let x = x + sinusoidal(positions, max_positions, d_model);
        #[weights = "transformer.decoder.layers.{layer}"]
        for layer in 0..decoder_layers {
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads, causal), d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            // Bahdanau: a scoring MLP of width 16 over the memory rows.
            #[weights = "cross_attn"]
            let context = additive_attention(x, memory, dim = 16);
            #[weights = "cross_out"]
            let cross_out = linear(context, d_model);
            #[weights = "norm2"]
            x = layer_norm(x + cross_out, eps = 1e-5);
            #[weights("linear1", "linear2")]
            let ffn_out = linear(relu(linear(x, d_ff)), d_model);
            #[weights = "norm3"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        #[weights = "transformer.decoder.norm"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "generator"]
        linear(x, vocab_size)
    }
}

transformer::model! {
    /// `bahdanau` as the preset declares it (`tests/additive_seq2seq_parity.rs`).
    pub struct PresetBahdanau {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        embedding_scale: sqrt_d_model,
        weights: torch,
        lm_head: untied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder, cross_attention_kind: additive, attention_dim: 16 },
    }
}

transformer::model! {
    /// `location` as composed passes: Luong's location: one logit per source position up to `max_positions`.
    pub struct ComposedLocation {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        encoder_layers: 2,
        decoder_layers: 2,
        decoder_start: 1,
    }

    fn encode(tokens) -> memory {
        #[weights = "embedding"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        let x = x + sinusoidal(positions, max_positions, d_model);
        #[weights = "transformer.encoder.layers.{layer}"]
        for layer in 0..encoder_layers {
            // `nn.MultiheadAttention` packs Q, K and V into one `in_proj_weight`.
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads), d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            #[weights("linear1", "linear2")]
            let ffn_out = linear(relu(linear(x, d_ff)), d_model);
            #[weights = "norm2"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        #[weights = "transformer.encoder.norm"]
        layer_norm(x, eps = 1e-5)
    }

    fn decode(tokens, memory) -> logits {
        #[weights = "embedding"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        let x = x + sinusoidal(positions, max_positions, d_model);
        #[weights = "transformer.decoder.layers.{layer}"]
        for layer in 0..decoder_layers {
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads, causal), d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            // Luong's location: one logit per source position up to `max_positions`.
            #[weights = "cross_attn"]
            let context = location_attention(x, memory);
            #[weights = "cross_out"]
            let cross_out = linear(context, d_model);
            #[weights = "norm2"]
            x = layer_norm(x + cross_out, eps = 1e-5);
            #[weights("linear1", "linear2")]
            let ffn_out = linear(relu(linear(x, d_ff)), d_model);
            #[weights = "norm3"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        #[weights = "transformer.decoder.norm"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "generator"]
        linear(x, vocab_size)
    }
}

transformer::model! {
    /// `location` as the preset declares it (`tests/additive_seq2seq_parity.rs`).
    pub struct PresetLocation {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        embedding_scale: sqrt_d_model,
        weights: torch,
        lm_head: untied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder, cross_attention_kind: location },
    }
}

transformer::model! {
    /// `location_sensitive` as composed passes: Tacotron 2: Bahdanau plus 4 filters of width 5 over the previous and cumulative alignments.
    pub struct ComposedLocationSensitive {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        encoder_layers: 2,
        decoder_layers: 2,
        decoder_start: 1,
    }

    fn encode(tokens) -> memory {
        #[weights = "embedding"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        let x = x + sinusoidal(positions, max_positions, d_model);
        #[weights = "transformer.encoder.layers.{layer}"]
        for layer in 0..encoder_layers {
            // `nn.MultiheadAttention` packs Q, K and V into one `in_proj_weight`.
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads), d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            #[weights("linear1", "linear2")]
            let ffn_out = linear(relu(linear(x, d_ff)), d_model);
            #[weights = "norm2"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        #[weights = "transformer.encoder.norm"]
        layer_norm(x, eps = 1e-5)
    }

    fn decode(tokens, memory) -> logits {
        #[weights = "embedding"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        let x = x + sinusoidal(positions, max_positions, d_model);
        #[weights = "transformer.decoder.layers.{layer}"]
        for layer in 0..decoder_layers {
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads, causal), d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            // Tacotron 2: Bahdanau plus 4 filters of width 5 over the previous and cumulative alignments.
            #[weights = "cross_attn"]
            let context = location_sensitive_attention(x, memory, dim = 16, filters = 4, kernel = 5);
            #[weights = "cross_out"]
            let cross_out = linear(context, d_model);
            #[weights = "norm2"]
            x = layer_norm(x + cross_out, eps = 1e-5);
            #[weights("linear1", "linear2")]
            let ffn_out = linear(relu(linear(x, d_ff)), d_model);
            #[weights = "norm3"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        #[weights = "transformer.decoder.norm"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "generator"]
        linear(x, vocab_size)
    }
}

transformer::model! {
    /// `location_sensitive` as the preset declares it (`tests/additive_seq2seq_parity.rs`).
    pub struct PresetLocationSensitive {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        embedding_scale: sqrt_d_model,
        weights: torch,
        lm_head: untied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: {
            layers: 2,
            attention: causal,
            cross_attention: encoder,
            cross_attention_kind: location_sensitive,
            attention_dim: 16,
            location_filters: 4,
            location_kernel: 5,
        },
    }
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    generation: Generation,
}

#[derive(Deserialize)]
struct Case {
    sources: Vec<Vec<u32>>,
    targets: Vec<Vec<u32>>,
    /// The real target rows, sequence after sequence.
    logits: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Generation {
    sources: Vec<Vec<u32>>,
    max_new_tokens: usize,
}

fn dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/additive_seq2seq").join(name)
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(dir(name).join("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn slices(seqs: &[Vec<u32>]) -> Vec<&[u32]> {
    seqs.iter().map(Vec::as_slice).collect()
}

fn bits(rows: &[impl AsRef<[f32]>]) -> Vec<u32> {
    rows.iter().flat_map(|r| r.as_ref().iter().map(|v| v.to_bits())).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TOLERANCE: f32 = 1e-4;

macro_rules! bit_identical {
    ($module:ident, $composed:ident, $preset:ident, $name:literal) => {
        mod $module {
            use super::*;

            fn models() -> ($composed, $preset) {
                let weights = dir($name).join("model.safetensors");
                ($composed::from_safetensors(&weights).unwrap(), $preset::from_safetensors(&weights).unwrap())
            }

            #[test]
            fn logits_are_bit_identical_to_the_preset_and_match_torch() {
                let ((composed, preset), r) = (models(), reference($name));
                for case in &r.cases {
                    let sources = Batch::from_sequences(&slices(&case.sources)).unwrap();
                    let (ours, theirs) = (composed.encode(&sources).unwrap(), preset.encode(&sources).unwrap());
                    assert_eq!(bits(composed.encoder_hidden(&ours)), bits(preset.encoder_hidden(&theirs)));
                    let targets = Batch::from_sequences(&slices(&case.targets)).unwrap();
                    let a = composed.logits(&ours, &targets).unwrap();
                    assert_eq!(bits(&a), bits(&preset.logits(&theirs, &targets).unwrap()), "logits differ");
                    let mut expected = case.logits.iter();
                    for (b, target) in case.targets.iter().enumerate() {
                        for t in 0..target.len() {
                            let row = &a[b * targets.seq_len() + t];
                            let diff = max_abs_diff(row, expected.next().expect("a reference row"));
                            assert!(diff <= TOLERANCE, "sequence {b}, row {t}: max |Δ| = {diff}");
                        }
                    }
                }
            }

            #[test]
            fn cached_steps_and_generation_are_bit_identical_to_the_preset() {
                let ((composed, preset), r) = (models(), reference($name));
                let case = r.cases.iter().find(|c| c.sources.len() > 1).expect("a batched case");
                let sources = Batch::from_sequences(&slices(&case.sources)).unwrap();
                let (ours, theirs) = (composed.encode(&sources).unwrap(), preset.encode(&sources).unwrap());
                let targets = slices(&case.targets);
                let (mut c1, mut c2) = (composed.new_cache(targets.len()), preset.new_cache(targets.len()));
                let (mut w1, mut w2) = (Workspace::new(), Workspace::new());
                let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..3]).collect();
                let step = Batch::from_sequences(&prefix).unwrap();
                let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
                let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
                assert_eq!(a, b, "prefill differs");
                let shortest = targets.iter().map(|t| t.len()).min().unwrap();
                assert!(shortest > 4, "the case leaves steps after the prefill");
                for pos in 3..shortest {
                    let next: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
                    let step = Batch::from_sequences(&next).unwrap();
                    let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
                    let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
                    assert_eq!(a, b, "cached step at position {pos} differs");
                }
                let g = &r.generation;
                let options = GenerateOptions { max_new_tokens: g.max_new_tokens, ..GenerateOptions::default() };
                for source in &g.sources {
                    assert_eq!(composed.generate(&[source], &options).unwrap(), preset.generate(&[source], &options).unwrap());
                }
                let batched = slices(&g.sources);
                assert_eq!(composed.generate(&batched, &options).unwrap(), preset.generate(&batched, &options).unwrap());
            }
        }
    };
}

bit_identical!(bahdanau, ComposedBahdanau, PresetBahdanau, "bahdanau");
bit_identical!(location, ComposedLocation, PresetLocation, "location");
bit_identical!(location_sensitive, ComposedLocationSensitive, PresetLocationSensitive, "location_sensitive");
