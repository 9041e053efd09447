//! Composed encoder-decoders with what the encoder-decoder preset has beyond BART, each
//! bit-identical to the preset declaring the same model (encoder states, teacher-forced logits,
//! a prefill and cached steps, greedy generation alone and batched: both lower to the same
//! two-stack graph) and within 1e-4 of the preset's reference (PyTorch / transformers 4.57.1):
//! - additive, location and location-sensitive cross-attention (`additive_attention`,
//!   `location_attention`, `location_sensitive_attention` in `fn decode`) over the
//!   `torch.nn.Transformer` checkpoints of `tests/fixtures/additive_seq2seq` (packed `in_proj`
//!   self-attention), against `cross_attention_kind` presets and
//!   `scripts/reference/additive_seq2seq.py`'s logits;
//! - windows in both stacks (a centred window of 4 in `fn encode`, a trailing window of 3 in the
//!   first decoder layer only) on `tests/fixtures/seq2seq/transformer`, cross-attention from
//!   `in_proj` rows, against `transformer_windowed.json` (`scripts/reference/windowed_seq2seq.py`);
//! - T5 v1.1 and the tied T5 (`tests/fixtures/seq2seq/t5*`): unscaled self- and cross-attention,
//!   relative buckets per stack, the tied head's 1/sqrt(d_model) rescale, against
//!   `scripts/reference/seq2seq.py`'s logits and greedy tokens.
//!
//! Mutations seen to fail these tests: the Bahdanau model's `norm2` eps 1e-5 → 1e-6, the decoder
//! window 3 → 4, T5's cross-attention without `scaled = false`, the tied head's rescale by
//! 1/sqrt(2·d_model).

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

#[path = "common/seq2seq_presets.rs"]
mod seq2seq_presets;
use seq2seq_presets::*;

#[path = "common/additive_presets.rs"]
mod additive_presets;
use additive_presets::*;

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

/// Bit-for-bit equality, reported by the first differing element rather than a dump.
fn same(ours: Vec<u32>, theirs: Vec<u32>, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        let (a, b) = (f32::from_bits(ours[i]), f32::from_bits(theirs[i]));
        panic!("{what} differ from the preset's: element {i} of {} is {a} (composed) vs {b}", ours.len());
    }
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
                    let (ours, theirs) =
                        (composed.encode(&sources).unwrap(), preset.encode(&sources).unwrap());
                    same(
                        bits(composed.encoder_hidden(&ours)),
                        bits(preset.encoder_hidden(&theirs)),
                        "encoder states",
                    );
                    let targets = Batch::from_sequences(&slices(&case.targets)).unwrap();
                    let a = composed.logits(&ours, &targets).unwrap();
                    same(bits(&a), bits(&preset.logits(&theirs, &targets).unwrap()), "teacher-forced logits");
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
                same(a, b, "prefill logits");
                let shortest = targets.iter().map(|t| t.len()).min().unwrap();
                assert!(shortest > 4, "the case leaves steps after the prefill");
                for pos in 3..shortest {
                    let next: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
                    let step = Batch::from_sequences(&next).unwrap();
                    let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
                    let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
                    same(a, b, &format!("cached step logits at position {pos}"));
                }
                let g = &r.generation;
                let options =
                    GenerateOptions { max_new_tokens: g.max_new_tokens, ..GenerateOptions::default() };
                for source in &g.sources {
                    assert_eq!(
                        composed.generate(&[source], &options).unwrap(),
                        preset.generate(&[source], &options).unwrap()
                    );
                }
                let batched = slices(&g.sources);
                assert_eq!(
                    composed.generate(&batched, &options).unwrap(),
                    preset.generate(&batched, &options).unwrap()
                );
            }
        }
    };
}

bit_identical!(bahdanau, ComposedBahdanau, PaperBahdanau, "bahdanau");
bit_identical!(location, ComposedLocation, PaperLocation, "location");
bit_identical!(location_sensitive, ComposedLocationSensitive, PaperLocationSensitive, "location_sensitive");

transformer::model! {
    /// `torch.nn.Transformer` (`tests/fixtures/seq2seq/transformer`) with a centred window of 4 in
    /// the encoder and a trailing window of 3 in the first decoder layer, as composed passes
    /// (multi-head cross-attention reads rows of the packed `in_proj` too).
    pub struct ComposedWindowed {
        vocab_size: 100,
        max_positions: 64,
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
            #[weights = "self_attn.in_proj"]
            let qkv = linear(x, 3 * d_model, layout = in_proj);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(attention(qkv, heads = heads, window = 4), d_model);
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
            let window = if layer == 0 { Some(3) } else { None };
            let context = attention(qkv, heads = heads, causal, window = window);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(context, d_model);
            #[weights = "norm1"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            // Rows 0..32 of the packed weight project the queries, 32..64 the keys, 64..96 the values.
            #[weights = "multihead_attn.in_proj"]
            let cross_q = linear(x, d_model, layout = in_proj(0, 3 * d_model));
            #[weights = "multihead_attn.in_proj"]
            let cross_k = linear(memory, d_model, layout = in_proj(d_model, 3 * d_model));
            #[weights = "multihead_attn.in_proj"]
            let cross_v = linear(memory, d_model, layout = in_proj(2 * d_model, 3 * d_model));
            let cross_context = attention(cross_q, cross_k, cross_v, heads = heads);
            #[weights = "multihead_attn.out_proj"]
            let cross_out = linear(cross_context, d_model);
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
    /// T5 v1.1 (`tests/fixtures/seq2seq/t5`) as composed passes: pre-norm RMSNorm, unscaled
    /// scores in self- and cross-attention, relative buckets shared per stack (bidirectional in
    /// the encoder, causal in the decoder), gated GELU, an untied head.
    pub struct ComposedT5 {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        head_dim: 12,
        d_ff: 40,
        encoder_layers: 2,
        decoder_layers: 3,
        decoder_start: 0,
    }

    fn encode(tokens) -> memory {
        #[weights = "shared"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "encoder.block.{layer}"]
        for layer in 0..encoder_layers {
            #[weights = "layer.0.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.0.SelfAttention.q"]
            let q = linear(h, heads * head_dim, bias = false);
            #[weights = "layer.0.SelfAttention.k"]
            let k = linear(h, heads * head_dim, bias = false);
            #[weights = "layer.0.SelfAttention.v"]
            let v = linear(h, heads * head_dim, bias = false);
            let context = attention(
                q, k, v,
                heads = heads,
                scaled = false,
                bias = relative(
                    buckets = 8,
                    max_distance = 20,
                    weights = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
                ),
            );
            #[weights = "layer.0.SelfAttention.o"]
            x = x + linear(context, d_model, bias = false);
            #[weights = "layer.1.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.1.DenseReluDense.wi_0"]
            let gate = linear(h, d_ff, bias = false);
            #[weights = "layer.1.DenseReluDense.wi_1"]
            let up = linear(h, d_ff, bias = false);
            #[weights = "layer.1.DenseReluDense.wo"]
            x = x + linear(geglu_tanh(concat(gate, up)), d_model, bias = false);
        }
        #[weights = "encoder.final_layer_norm"]
        rms_norm(x, eps = 1e-6)
    }

    fn decode(tokens, memory) -> logits {
        #[weights = "shared"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "decoder.block.{layer}"]
        for layer in 0..decoder_layers {
            #[weights = "layer.0.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.0.SelfAttention.q"]
            let q = linear(h, heads * head_dim, bias = false);
            #[weights = "layer.0.SelfAttention.k"]
            let k = linear(h, heads * head_dim, bias = false);
            #[weights = "layer.0.SelfAttention.v"]
            let v = linear(h, heads * head_dim, bias = false);
            let context = attention(
                q, k, v,
                heads = heads,
                causal,
                scaled = false,
                bias = relative(
                    buckets = 8,
                    max_distance = 20,
                    weights = "decoder.block.0.layer.0.SelfAttention.relative_attention_bias",
                ),
            );
            #[weights = "layer.0.SelfAttention.o"]
            x = x + linear(context, d_model, bias = false);
            #[weights = "layer.1.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.1.EncDecAttention.q"]
            let cross_q = linear(h, heads * head_dim, bias = false);
            #[weights = "layer.1.EncDecAttention.k"]
            let cross_k = linear(memory, heads * head_dim, bias = false);
            #[weights = "layer.1.EncDecAttention.v"]
            let cross_v = linear(memory, heads * head_dim, bias = false);
            let cross_context = attention(cross_q, cross_k, cross_v, heads = heads, scaled = false);
            #[weights = "layer.1.EncDecAttention.o"]
            x = x + linear(cross_context, d_model, bias = false);
            #[weights = "layer.2.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.2.DenseReluDense.wi_0"]
            let gate = linear(h, d_ff, bias = false);
            #[weights = "layer.2.DenseReluDense.wi_1"]
            let up = linear(h, d_ff, bias = false);
            #[weights = "layer.2.DenseReluDense.wo"]
            x = x + linear(geglu_tanh(concat(gate, up)), d_model, bias = false);
        }
        #[weights = "decoder.final_layer_norm"]
        let x = rms_norm(x, eps = 1e-6);
        #[weights = "lm_head"]
        linear(x, vocab_size, bias = false)
    }
}

transformer::model! {
    /// The original T5 (`tests/fixtures/seq2seq/t5_tied`) as composed passes: as `ComposedT5`,
    /// with a ReLU feed-forward and the tied head reading the decoder's states rescaled by
    /// 1/sqrt(d_model).
    pub struct ComposedT5Tied {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        encoder_layers: 2,
        decoder_layers: 2,
        decoder_start: 0,
    }

    fn encode(tokens) -> memory {
        #[weights = "shared"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "encoder.block.{layer}"]
        for layer in 0..encoder_layers {
            #[weights = "layer.0.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.0.SelfAttention.q"]
            let q = linear(h, d_model, bias = false);
            #[weights = "layer.0.SelfAttention.k"]
            let k = linear(h, d_model, bias = false);
            #[weights = "layer.0.SelfAttention.v"]
            let v = linear(h, d_model, bias = false);
            let context = attention(
                q, k, v,
                heads = heads,
                scaled = false,
                bias = relative(
                    buckets = 8,
                    max_distance = 20,
                    weights = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
                ),
            );
            #[weights = "layer.0.SelfAttention.o"]
            x = x + linear(context, d_model, bias = false);
            #[weights = "layer.1.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights("layer.1.DenseReluDense.wi", "layer.1.DenseReluDense.wo")]
            x = x + linear(relu(linear(h, d_ff, bias = false)), d_model, bias = false);
        }
        #[weights = "encoder.final_layer_norm"]
        rms_norm(x, eps = 1e-6)
    }

    fn decode(tokens, memory) -> logits {
        #[weights = "shared"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "decoder.block.{layer}"]
        for layer in 0..decoder_layers {
            #[weights = "layer.0.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.0.SelfAttention.q"]
            let q = linear(h, d_model, bias = false);
            #[weights = "layer.0.SelfAttention.k"]
            let k = linear(h, d_model, bias = false);
            #[weights = "layer.0.SelfAttention.v"]
            let v = linear(h, d_model, bias = false);
            let context = attention(
                q, k, v,
                heads = heads,
                causal,
                scaled = false,
                bias = relative(
                    buckets = 8,
                    max_distance = 20,
                    weights = "decoder.block.0.layer.0.SelfAttention.relative_attention_bias",
                ),
            );
            #[weights = "layer.0.SelfAttention.o"]
            x = x + linear(context, d_model, bias = false);
            #[weights = "layer.1.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights = "layer.1.EncDecAttention.q"]
            let cross_q = linear(h, d_model, bias = false);
            #[weights = "layer.1.EncDecAttention.k"]
            let cross_k = linear(memory, d_model, bias = false);
            #[weights = "layer.1.EncDecAttention.v"]
            let cross_v = linear(memory, d_model, bias = false);
            let cross_context = attention(cross_q, cross_k, cross_v, heads = heads, scaled = false);
            #[weights = "layer.1.EncDecAttention.o"]
            x = x + linear(cross_context, d_model, bias = false);
            #[weights = "layer.2.layer_norm"]
            let h = rms_norm(x, eps = 1e-6);
            #[weights("layer.2.DenseReluDense.wi", "layer.2.DenseReluDense.wo")]
            x = x + linear(relu(linear(h, d_ff, bias = false)), d_model, bias = false);
        }
        #[weights = "decoder.final_layer_norm"]
        let x = rms_norm(x, eps = 1e-6);
        // Tied: the shared embeddings project the states, rescaled first (as T5 does).
        #[weights = "shared"]
        linear(x * (1.0 / sqrt(d_model)), vocab_size, bias = false)
    }
}

/// `tests/fixtures/seq2seq`'s references (`scripts/reference/seq2seq.py`,
/// `scripts/reference/windowed_seq2seq.py`).
#[derive(Deserialize)]
struct Seq2SeqReference {
    sources: Vec<Vec<u32>>,
    decoder_inputs: Vec<Vec<u32>>,
    decoder_logits: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Vec<u32>>,
}

fn seq2seq_fixture(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seq2seq").join(file)
}

macro_rules! bit_identical_seq2seq {
    ($module:ident, $composed:ident, $preset:ident, $weights:literal, $reference:literal) => {
        mod $module {
            use super::*;

            fn setup() -> ($composed, $preset, Seq2SeqReference) {
                let weights = seq2seq_fixture($weights);
                let text = std::fs::read_to_string(seq2seq_fixture($reference)).expect("fixture present");
                (
                    $composed::from_safetensors(&weights).unwrap(),
                    $preset::from_safetensors(&weights).unwrap(),
                    serde_json::from_str(&text).expect("fixture parses"),
                )
            }

            #[test]
            fn states_and_logits_are_bit_identical_to_the_preset_and_match_the_reference() {
                let (composed, preset, r) = setup();
                let sources = Batch::from_sequences(&slices(&r.sources)).unwrap();
                let (ours, theirs) = (composed.encode(&sources).unwrap(), preset.encode(&sources).unwrap());
                same(
                    bits(composed.encoder_hidden(&ours)),
                    bits(preset.encoder_hidden(&theirs)),
                    "encoder states",
                );
                let targets = Batch::from_sequences(&slices(&r.decoder_inputs)).unwrap();
                let a = composed.logits(&ours, &targets).unwrap();
                same(bits(&a), bits(&preset.logits(&theirs, &targets).unwrap()), "teacher-forced logits");
                for (b, (source, target)) in r.sources.iter().zip(&r.decoder_inputs).enumerate() {
                    let memory = composed.encode(&Batch::from_sequences(&[source]).unwrap()).unwrap();
                    let logits =
                        composed.logits(&memory, &Batch::from_sequences(&[target]).unwrap()).unwrap();
                    let expected: Vec<f32> = r.decoder_logits[b].iter().flatten().copied().collect();
                    let diff = max_abs_diff(logits.as_flattened(), &expected);
                    assert!(diff <= TOLERANCE, "source {b}: max |Δ| = {diff}");
                    let options =
                        GenerateOptions { max_new_tokens: r.greedy[b].len(), ..GenerateOptions::default() };
                    assert_eq!(
                        composed.generate(&[source], &options).unwrap()[0],
                        r.greedy[b],
                        "source {b}: greedy"
                    );
                }
            }

            #[test]
            fn cached_steps_and_generation_are_bit_identical_to_the_preset() {
                let (composed, preset, r) = setup();
                let sources = Batch::from_sequences(&slices(&r.sources)).unwrap();
                let (ours, theirs) = (composed.encode(&sources).unwrap(), preset.encode(&sources).unwrap());
                let targets = slices(&r.decoder_inputs);
                let (mut c1, mut c2) = (composed.new_cache(targets.len()), preset.new_cache(targets.len()));
                let (mut w1, mut w2) = (Workspace::new(), Workspace::new());
                let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..2]).collect();
                let step = Batch::from_sequences(&prefix).unwrap();
                let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
                let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
                same(a, b, "prefill logits");
                let shortest = targets.iter().map(|t| t.len()).min().unwrap();
                assert!(shortest > 3, "the case leaves steps after the prefill");
                for pos in 2..shortest {
                    let next: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
                    let step = Batch::from_sequences(&next).unwrap();
                    let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
                    let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
                    same(a, b, &format!("cached step logits at position {pos}"));
                }
                let options = GenerateOptions { max_new_tokens: 20, ..GenerateOptions::default() };
                let batched = slices(&r.sources);
                assert_eq!(
                    composed.generate(&batched, &options).unwrap(),
                    preset.generate(&batched, &options).unwrap()
                );
            }
        }
    };
}

bit_identical_seq2seq!(
    windowed,
    ComposedWindowed,
    PaperWindowed,
    "transformer/model.safetensors",
    "transformer_windowed.json"
);
bit_identical_seq2seq!(t5, ComposedT5, T5Gated, "t5/model.safetensors", "t5/reference.json");
bit_identical_seq2seq!(
    t5_tied,
    ComposedT5Tied,
    T5Tied,
    "t5_tied/model.safetensors",
    "t5_tied/reference.json"
);
