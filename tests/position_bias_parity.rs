//! Position biases outside the presets that introduced them, against Hugging Face
//! (`scripts/reference/position_bias_families.py`, fixtures in `tests/fixtures/bias/`):
//!
//! - `weights: t5` without sections: T5's encoder alone (`T5EncoderModel`, its own relative bias);
//! - `weights: bert, positions: alibi`: MosaicBERT's bidirectional ALiBi (`−slope·|j − p|`), the
//!   reference being `BertModel` with that bias as each layer's additive mask, no position table in
//!   the checkpoint;
//! - `weights: llama, positions: alibi` (MPT-like) and `positions: relative` (T5's unidirectional
//!   buckets, table at `model.layers.0.self_attn.relative_attention_bias.weight`): the reference is
//!   `LlamaForCausalLM` with rotary frequencies zeroed and the bias in a 4-D additive mask.
//!
//! Every row of every sequence, alone and in one right-padded batch, within 1e-4 (hidden states
//! for encoders, logits for decoders); the decoders' cached steps (a 5-token prompt, then one token
//! at a time) too. Composed versions (`attention(…, bias = …)`) are bit-identical to the presets. The script records that leaving the bias out, one-sided
//! ALiBi on the encoder, and buckets of the other direction each move the outputs by 0.5 or more.

use serde::Deserialize;
use transformer::Batch;

transformer::model! {
    /// T5 v1.1's encoder (gated GELU), 4 heads of 12 in a 32-wide model.
    pub struct T5Encoder {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        head_dim: 12,
        layers: 2,
        d_ff: 40,
        activation: geglu_tanh,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        attention: bidirectional,
        weights: t5,
    }
}

transformer::model! {
    /// A BERT encoder with ALiBi instead of a position table (MosaicBERT).
    pub struct BertAlibi {
        vocab_size: 96,
        max_positions: 64,
        type_vocab_size: 2,
        d_model: 32,
        heads: 4,
        layers: 2,
        d_ff: 48,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: alibi,
        attention: bidirectional,
        weights: bert,
    }
}

macro_rules! llama {
    ($name:ident, $($positions:tt)*) => {
        transformer::model! {
            /// A LLaMA decoder whose positions are a score bias instead of rotations.
            pub struct $name {
                vocab_size: 96,
                max_positions: 64,
                d_model: 64,
                heads: 4,
                kv_heads: 2,
                layers: 2,
                d_ff: 128,
                activation: swiglu,
                norm: rms_norm,
                norm_eps: 1e-6,
                norm_placement: pre,
                $($positions)*
                attention: causal,
                weights: llama,
                lm_head: untied,
            }
        }
    };
}

llama!(LlamaAlibi, positions: alibi,);
llama!(LlamaRelative, positions: relative, relative_buckets: 8, relative_max_distance: 20,);

transformer::model! {
    /// `BertAlibi` as composed blocks: the attention takes `bias = alibi`.
    pub struct ComposedBertAlibi {
        vocab_size: 96,
        max_positions: 64,
        type_vocab_size: 2,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        layers: 2,
    }

    fn forward(tokens, token_types) -> hidden {
        #[weights = "embeddings.word_embeddings"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "embeddings.token_type_embeddings"]
        let x = x + embedding(token_types, type_vocab_size, d_model);
        #[weights = "embeddings.LayerNorm"]
        let x = layer_norm(x, eps = 1e-12);
        #[weights = "encoder.layer.{layer}"]
        for layer in 0..layers {
            #[weights = "attention.self.query"]
            let q = linear(x, d_model);
            #[weights = "attention.self.key"]
            let k = linear(x, d_model);
            #[weights = "attention.self.value"]
            let v = linear(x, d_model);
            let context = attention(q, k, v, heads = heads, bias = alibi);
            #[weights = "attention.output.dense"]
            let attention_out = linear(context, d_model);
            #[weights = "attention.output.LayerNorm"]
            x = layer_norm(x + attention_out, eps = 1e-12);
            #[weights("intermediate.dense", "output.dense")]
            let ffn_out = linear(gelu(linear(x, d_ff)), d_model);
            #[weights = "output.LayerNorm"]
            x = layer_norm(x + ffn_out, eps = 1e-12);
        }
        x
    }
}

transformer::model! {
    /// `T5Encoder` as composed blocks: unscaled scores and T5's relative buckets as arguments.
    pub struct ComposedT5Encoder {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        head_dim: 12,
        d_ff: 40,
        layers: 2,
    }

    fn forward(tokens) -> hidden {
        #[weights = "shared"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "encoder.block.{layer}"]
        for layer in 0..layers {
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
        let x = rms_norm(x, eps = 1e-6);
        x
    }
}

macro_rules! composed_llama {
    ($name:ident, $($bias:tt)*) => {
        transformer::model! {
            /// A LLaMA decoder as composed blocks, its attention biased instead of rotated.
            pub struct $name {
                vocab_size: 96,
                max_positions: 64,
                d_model: 64,
                heads: 4,
                kv_heads: 2,
                head_dim: d_model / heads,
                d_ff: 128,
                layers: 2,
            }

            fn forward(tokens) -> logits {
                #[weights = "model.embed_tokens"]
                let x = embedding(tokens, vocab_size, d_model);
                #[weights = "model.layers.{layer}"]
                for layer in 0..layers {
                    #[weights = "input_layernorm"]
                    let h = rms_norm(x, eps = 1e-6);
                    #[weights = "self_attn.q_proj"]
                    let q = linear(h, heads * head_dim, bias = false);
                    #[weights = "self_attn.k_proj"]
                    let k = linear(h, kv_heads * head_dim, bias = false);
                    #[weights = "self_attn.v_proj"]
                    let v = linear(h, kv_heads * head_dim, bias = false);
                    let context = attention(q, k, v, heads = heads, kv_heads = kv_heads, causal, bias = $($bias)*);
                    #[weights = "self_attn.o_proj"]
                    x = x + linear(context, d_model, bias = false);
                    #[weights = "post_attention_layernorm"]
                    let h = rms_norm(x, eps = 1e-6);
                    #[weights = "mlp.gate_proj"]
                    let gate = linear(h, d_ff, bias = false);
                    #[weights = "mlp.up_proj"]
                    let up = linear(h, d_ff, bias = false);
                    #[weights = "mlp.down_proj"]
                    x = x + linear(swiglu(concat(gate, up)), d_model, bias = false);
                }
                #[weights = "model.norm"]
                let x = rms_norm(x, eps = 1e-6);
                #[weights = "lm_head"]
                linear(x, vocab_size, bias = false)
            }
        }
    };
}

composed_llama!(ComposedLlamaAlibi, alibi);
composed_llama!(
    ComposedLlamaRelative,
    relative(buckets = 8, max_distance = 20, weights = "model.layers.0.self_attn.relative_attention_bias")
);

transformer::model! {
    /// `tests/fixtures/bloom/bloom` as the preset declares it (`tests/decoder_variants_parity.rs`).
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
    /// BLOOM as composed blocks: ALiBi as an attention argument, the per-head fused QKV as a layout.
    pub struct ComposedBloom {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        d_ff: 256,
        layers: 2,
    }

    fn forward(tokens) -> logits {
        #[weights = "transformer.word_embeddings"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "transformer.word_embeddings_layernorm"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "transformer.h.{layer}"]
        for layer in 0..layers {
            #[weights = "input_layernorm"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights = "self_attention.query_key_value"]
            let qkv = linear(h, 3 * d_model, layout = per_head(heads));
            let context = attention(qkv, heads = heads, causal, bias = alibi);
            #[weights = "self_attention.dense"]
            x = x + linear(context, d_model);
            #[weights = "post_attention_layernorm"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights("mlp.dense_h_to_4h", "mlp.dense_4h_to_h")]
            x = x + linear(gelu_tanh(linear(h, d_ff)), d_model);
        }
        #[weights = "transformer.ln_f"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "transformer.word_embeddings"]
        linear(x, vocab_size, bias = false)
    }
}

#[derive(Deserialize)]
struct Reference {
    sequences: Vec<Sequence>,
}

#[derive(Deserialize)]
struct Sequence {
    input_ids: Vec<u32>,
    #[serde(alias = "logits")]
    hidden: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> (std::path::PathBuf, Reference) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bias").join(name);
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("fixture present");
    (dir.join("model.safetensors"), serde_json::from_str(&text).expect("fixture parses"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Runs `rows_of` on each sequence alone and on all of them as one right-padded batch, and
/// compares every real row with the reference.
fn check<const W: usize>(name: &str, rows_of: impl Fn(&Batch) -> Vec<[f32; W]>) {
    let (_, reference) = fixture(name);
    let ids: Vec<&[u32]> = reference.sequences.iter().map(|s| s.input_ids.as_slice()).collect();
    let batch = Batch::from_sequences(&ids).unwrap();
    let batched = rows_of(&batch);
    let mut worst = 0.0f32;
    for (b, s) in reference.sequences.iter().enumerate() {
        let alone = rows_of(&Batch::from_sequences(&[&s.input_ids]).unwrap());
        for (p, theirs) in s.hidden.iter().enumerate() {
            for (label, ours) in [("alone", &alone[p]), ("batched", &batched[b * batch.seq_len() + p])] {
                let diff = max_abs_diff(ours, theirs);
                assert!(diff <= 1e-4, "{name}: sequence {b} position {p} {label}: max |diff| {diff:e}");
                worst = worst.max(diff);
            }
        }
    }
    println!("{name}: max |diff| {worst:e}");
}

#[test]
fn t5_encoder_alone_matches_t5_encoder_model() {
    let model = T5Encoder::from_safetensors(fixture("t5_encoder").0).expect("weights load");
    check("t5_encoder", |batch| model.forward(batch).unwrap());
}

#[test]
fn bert_with_alibi_matches_bert_model_given_the_bias() {
    let model = BertAlibi::from_safetensors(fixture("bert_alibi").0).expect("weights load");
    check("bert_alibi", |batch| model.forward(batch).unwrap());
}

#[test]
fn llama_with_alibi_matches_llama_given_the_bias() {
    let model = LlamaAlibi::from_safetensors(fixture("llama_alibi").0).expect("weights load");
    check("llama_alibi", |batch| model.logits(batch).unwrap());
}

#[test]
fn llama_with_relative_buckets_matches_llama_given_the_bias() {
    let model = LlamaRelative::from_safetensors(fixture("llama_relative").0).expect("weights load");
    check("llama_relative", |batch| model.logits(batch).unwrap());
}

fn bits<const W: usize>(rows: &[[f32; W]]) -> Vec<u32> {
    rows.iter().flatten().map(|v| v.to_bits()).collect()
}

/// The fixture's sequences as one right-padded batch.
fn fixture_batch(name: &str) -> Batch {
    let (_, reference) = fixture(name);
    let ids: Vec<&[u32]> = reference.sequences.iter().map(|s| s.input_ids.as_slice()).collect();
    Batch::from_sequences(&ids).unwrap()
}

#[test]
fn composed_bert_with_alibi_is_bit_identical_to_the_preset() {
    let path = fixture("bert_alibi").0;
    let (composed, preset) =
        (ComposedBertAlibi::from_safetensors(&path).unwrap(), BertAlibi::from_safetensors(&path).unwrap());
    let batch = fixture_batch("bert_alibi");
    assert_eq!(bits(&composed.forward(&batch).unwrap()), bits(&preset.forward(&batch).unwrap()));
    check("bert_alibi", |batch| composed.forward(batch).unwrap());
}

#[test]
fn composed_llama_with_alibi_matches_the_preset_and_hugging_face() {
    let path = fixture("llama_alibi").0;
    let (composed, preset) =
        (ComposedLlamaAlibi::from_safetensors(&path).unwrap(), LlamaAlibi::from_safetensors(&path).unwrap());
    let batch = fixture_batch("llama_alibi");
    assert_eq!(bits(&composed.logits(&batch).unwrap()), bits(&preset.logits(&batch).unwrap()));
    check("llama_alibi", |batch| composed.logits(batch).unwrap());
}

#[test]
fn composed_llama_with_relative_buckets_matches_the_preset_and_hugging_face() {
    let path = fixture("llama_relative").0;
    let composed = ComposedLlamaRelative::from_safetensors(&path).unwrap();
    let preset = LlamaRelative::from_safetensors(&path).unwrap();
    let batch = fixture_batch("llama_relative");
    assert_eq!(bits(&composed.logits(&batch).unwrap()), bits(&preset.logits(&batch).unwrap()));
    check("llama_relative", |batch| composed.logits(batch).unwrap());
}

#[test]
fn composed_t5_encoder_is_bit_identical_to_the_preset() {
    let path = fixture("t5_encoder").0;
    let (composed, preset) =
        (ComposedT5Encoder::from_safetensors(&path).unwrap(), T5Encoder::from_safetensors(&path).unwrap());
    let batch = fixture_batch("t5_encoder");
    assert_eq!(bits(&composed.forward(&batch).unwrap()), bits(&preset.forward(&batch).unwrap()));
    check("t5_encoder", |batch| composed.forward(batch).unwrap());
}

/// Cached decoding reads the same bias table by offset: a 5-token prompt, then every later token
/// of each fixture sequence fed one step at a time (teacher-forced), each step's logits against
/// Hugging Face's row for that position, within 1e-4.
macro_rules! cached_steps_match {
    ($test:ident, $model:ty, $fixture:literal) => {
        #[test]
        fn $test() {
            let (path, reference) = fixture($fixture);
            let model = <$model>::from_safetensors(path).unwrap();
            let mut ws = transformer::Workspace::new();
            for (b, s) in reference.sequences.iter().enumerate() {
                let mut cache = model.new_cache(1);
                let prompt = Batch::from_sequences(&[&s.input_ids[..5]]).unwrap();
                let mut last = model.step_into(&prompt, &mut cache, &mut ws).unwrap()[0];
                let diff = max_abs_diff(&last, &s.hidden[4]);
                assert!(diff <= 1e-4, "sequence {b} prompt: max |diff| {diff:e}");
                for p in 5..s.input_ids.len() {
                    let step = Batch::from_sequences(&[[s.input_ids[p]]]).unwrap();
                    last = model.step_into(&step, &mut cache, &mut ws).unwrap()[0];
                    let diff = max_abs_diff(&last, &s.hidden[p]);
                    assert!(diff <= 1e-4, "sequence {b} step at position {p}: max |diff| {diff:e}");
                }
            }
        }
    };
}

cached_steps_match!(llama_alibi_cached_steps_match_hugging_face, LlamaAlibi, "llama_alibi");
cached_steps_match!(llama_relative_cached_steps_match_hugging_face, LlamaRelative, "llama_relative");
cached_steps_match!(
    composed_llama_relative_cached_steps_match_hugging_face,
    ComposedLlamaRelative,
    "llama_relative"
);

#[test]
fn composed_bloom_is_bit_identical_to_the_preset() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bloom/bloom/model.safetensors");
    let (composed, preset) =
        (ComposedBloom::from_safetensors(&path).unwrap(), Bloom::from_safetensors(&path).unwrap());
    let prompts: [&[u32]; 3] =
        [&[5, 17, 300, 2, 9], &[1, 2, 3], &[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]];
    let batch = Batch::from_sequences(&prompts).unwrap();
    assert_eq!(
        bits(&composed.logits(&batch).unwrap()),
        bits(&preset.logits(&batch).unwrap()),
        "logits differ"
    );
    let options = transformer::GenerateOptions { max_new_tokens: 24, ..Default::default() };
    assert_eq!(composed.generate(&prompts, &options).unwrap(), preset.generate(&prompts, &options).unwrap());
    let (mut c1, mut c2) = (composed.new_cache(3), preset.new_cache(3));
    let (mut w1, mut w2) = (transformer::Workspace::new(), transformer::Workspace::new());
    let a = bits(composed.step_into(&batch, &mut c1, &mut w1).unwrap());
    let b = bits(preset.step_into(&batch, &mut c2, &mut w2).unwrap());
    assert_eq!(a, b, "cached steps differ");
}
