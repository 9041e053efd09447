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
//! - `weights: gpt2` and `weights: neox` with `positions: alibi` and `positions: relative` (tables
//!   at `transformer.h.0.attn.relative_attention_bias.weight` and
//!   `gpt_neox.layers.0.attention.relative_attention_bias.weight`), and `weights: bert` with
//!   `positions: relative` (bidirectional buckets, table at `embeddings.relative_attention_bias.weight`),
//!   from `scripts/reference/position_bias_more.py`: `GPT2LMHeadModel` with `wpe` zeroed,
//!   `GPTNeoXForCausalLM` with rotary frequencies zeroed (both checked: shifted positions give
//!   bit-identical logits), `BertModel` with its position table zeroed, each given the bias as a
//!   4-D additive mask; the decoders' greedy continuations (by full recompute in Hugging Face) too.
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
    /// `BertAlibi` as composed blocks: the attention takes `bias = alibi`; named outputs (the
    /// states and the sentence embedding) run the same biased stack.
    pub struct ComposedBertAlibi {
        vocab_size: 96,
        max_positions: 64,
        type_vocab_size: 2,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        layers: 2,
    }

    fn forward(tokens, token_types) -> (states, embedding) {
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
        let states = x;
        let embedding = normalize(mean_pool(states));
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

macro_rules! gpt2 {
    ($name:ident, $($positions:tt)*) => {
        transformer::model! {
            /// A GPT-2 decoder whose positions are a score bias instead of `wpe`.
            pub struct $name {
                vocab_size: 96,
                max_positions: 64,
                d_model: 32,
                heads: 4,
                layers: 2,
                d_ff: 64,
                activation: gelu_tanh,
                norm: layer_norm,
                norm_eps: 1e-5,
                norm_placement: pre,
                $($positions)*
                attention: causal,
                weights: gpt2,
                lm_head: tied,
            }
        }
    };
}

gpt2!(Gpt2Alibi, positions: alibi,);
gpt2!(Gpt2Relative, positions: relative, relative_buckets: 8, relative_max_distance: 20,);

macro_rules! neox {
    ($name:ident, $($positions:tt)*) => {
        transformer::model! {
            /// A GPT-NeoX decoder (parallel residual) whose positions are a score bias instead of
            /// rotations.
            pub struct $name {
                vocab_size: 96,
                max_positions: 64,
                d_model: 64,
                heads: 4,
                layers: 2,
                d_ff: 128,
                activation: gelu_erf,
                norm: layer_norm,
                norm_eps: 1e-5,
                norm_placement: pre,
                $($positions)*
                residual: parallel,
                attention: causal,
                weights: neox,
                lm_head: untied,
            }
        }
    };
}

neox!(NeoXAlibi, positions: alibi,);
neox!(NeoXRelative, positions: relative, relative_buckets: 8, relative_max_distance: 20,);

transformer::model! {
    /// A BERT encoder with T5's bidirectional relative buckets instead of a position table.
    pub struct BertRelative {
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
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        attention: bidirectional,
        weights: bert,
    }
}

#[derive(Deserialize)]
struct Reference {
    sequences: Vec<Sequence>,
    /// Decoders from `position_bias_more.py`: Hugging Face's greedy continuation of a prompt.
    greedy: Option<Greedy>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
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

#[test]
fn gpt2_with_alibi_matches_gpt2_given_the_bias() {
    let model = Gpt2Alibi::from_safetensors(fixture("gpt2_alibi").0).expect("weights load");
    check("gpt2_alibi", |batch| model.logits(batch).unwrap());
}

#[test]
fn gpt2_with_relative_buckets_matches_gpt2_given_the_bias() {
    let model = Gpt2Relative::from_safetensors(fixture("gpt2_relative").0).expect("weights load");
    check("gpt2_relative", |batch| model.logits(batch).unwrap());
}

#[test]
fn neox_with_alibi_matches_neox_given_the_bias() {
    let model = NeoXAlibi::from_safetensors(fixture("neox_alibi").0).expect("weights load");
    check("neox_alibi", |batch| model.logits(batch).unwrap());
}

#[test]
fn neox_with_relative_buckets_matches_neox_given_the_bias() {
    let model = NeoXRelative::from_safetensors(fixture("neox_relative").0).expect("weights load");
    check("neox_relative", |batch| model.logits(batch).unwrap());
}

#[test]
fn bert_with_relative_buckets_matches_bert_model_given_the_bias() {
    let model = BertRelative::from_safetensors(fixture("bert_relative").0).expect("weights load");
    check("bert_relative", |batch| model.forward(batch).unwrap());
}

/// Greedy generation (prefill, then cached steps) gives Hugging Face's greedy tokens, each of
/// which it chose by recomputing the whole prefix.
macro_rules! greedy_matches {
    ($test:ident, $model:ty, $fixture:literal) => {
        #[test]
        fn $test() {
            let (path, reference) = fixture($fixture);
            let model = <$model>::from_safetensors(path).unwrap();
            let greedy = reference.greedy.expect("decoder fixtures record a greedy continuation");
            let options =
                transformer::GenerateOptions { max_new_tokens: greedy.tokens.len(), ..Default::default() };
            let ours = model.generate(&[greedy.prompt.as_slice()], &options).unwrap();
            assert_eq!(ours[0], greedy.tokens);
        }
    };
}

greedy_matches!(gpt2_alibi_greedy_matches_hugging_face, Gpt2Alibi, "gpt2_alibi");
greedy_matches!(gpt2_relative_greedy_matches_hugging_face, Gpt2Relative, "gpt2_relative");
greedy_matches!(neox_alibi_greedy_matches_hugging_face, NeoXAlibi, "neox_alibi");
greedy_matches!(neox_relative_greedy_matches_hugging_face, NeoXRelative, "neox_relative");

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
    assert_eq!(bits(&composed.states(&batch).unwrap()), bits(&preset.forward(&batch).unwrap()));
    assert_eq!(bits(&composed.embedding(&batch).unwrap()), bits(&preset.embed(&batch).unwrap()));
    check("bert_alibi", |batch| composed.states(batch).unwrap());
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
cached_steps_match!(gpt2_alibi_cached_steps_match_hugging_face, Gpt2Alibi, "gpt2_alibi");
cached_steps_match!(gpt2_relative_cached_steps_match_hugging_face, Gpt2Relative, "gpt2_relative");
cached_steps_match!(neox_alibi_cached_steps_match_hugging_face, NeoXAlibi, "neox_alibi");
cached_steps_match!(neox_relative_cached_steps_match_hugging_face, NeoXRelative, "neox_relative");
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

/// Encoder-decoders (`weights: bart`, `weights: torch`, and `t5` with ALiBi) with a score bias per
/// stack in place of their own positions: encoder bidirectional, decoder causal, cross-attention
/// unbiased (`scripts/reference/position_bias_seq2seq.py`: `BartForConditionalGeneration`,
/// `torch.nn.Transformer` and `T5ForConditionalGeneration` with positions zeroed and the bias in
/// each self-attention's mask).
mod seq2seq {
    use super::*;
    use transformer::{EncoderMemory, GenerateOptions, Workspace};

    macro_rules! bart {
        ($name:ident, $($positions:tt)*) => {
            transformer::model! {
                /// `tests/fixtures/seq2seq/bart`'s shape, biased instead of positioned.
                pub struct $name {
                    vocab_size: 120,
                    max_positions: 64,
                    d_model: 32,
                    heads: 4,
                    d_ff: 48,
                    activation: gelu_erf,
                    norm: layer_norm,
                    norm_eps: 1e-5,
                    norm_placement: post,
                    $($positions)*
                    embedding_scale: sqrt_d_model,
                    weights: bart,
                    lm_head: tied,
                    decoder_start: 2,
                    encoder: { layers: 2, attention: bidirectional },
                    decoder: { layers: 2, attention: causal, cross_attention: encoder },
                }
            }
        };
    }

    bart!(BartAlibi, positions: alibi,);
    bart!(BartRelative, positions: relative, relative_buckets: 8, relative_max_distance: 20,);

    macro_rules! paper {
        ($name:ident, $($positions:tt)*) => {
            transformer::model! {
                /// `tests/fixtures/seq2seq/transformer`'s shape, biased instead of positioned.
                pub struct $name {
                    vocab_size: 100,
                    max_positions: 64,
                    d_model: 32,
                    heads: 4,
                    d_ff: 48,
                    activation: relu,
                    norm: layer_norm,
                    norm_eps: 1e-5,
                    norm_placement: post,
                    $($positions)*
                    embedding_scale: sqrt_d_model,
                    weights: torch,
                    lm_head: untied,
                    decoder_start: 1,
                    encoder: { layers: 2, attention: bidirectional },
                    decoder: { layers: 2, attention: causal, cross_attention: encoder },
                }
            }
        };
    }

    paper!(TorchAlibi, positions: alibi,);
    paper!(TorchRelative, positions: relative, relative_buckets: 8, relative_max_distance: 20,);

    transformer::model! {
        /// `tests/fixtures/seq2seq/t5` (v1.1, 2 + 3 layers) with ALiBi instead of its buckets.
        pub struct T5Alibi {
            vocab_size: 96,
            max_positions: 64,
            d_model: 32,
            heads: 4,
            head_dim: 12,
            d_ff: 40,
            activation: geglu_tanh,
            norm: rms_norm,
            norm_eps: 1e-6,
            norm_placement: pre,
            positions: alibi,
            weights: t5,
            lm_head: untied,
            decoder_start: 0,
            encoder: { layers: 2, attention: bidirectional },
            decoder: { layers: 3, attention: causal, cross_attention: encoder },
        }
    }

    #[derive(Deserialize)]
    struct Reference {
        sources: Vec<Vec<u32>>,
        encoder_hidden: Vec<Vec<Vec<f32>>>,
        decoder_inputs: Vec<Vec<u32>>,
        decoder_logits: Vec<Vec<Vec<f32>>>,
        greedy: Vec<Vec<u32>>,
    }

    fn reference(name: &str) -> (std::path::PathBuf, Reference) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bias").join(name);
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("fixture present");
        (dir.join("model.safetensors"), serde_json::from_str(&text).expect("fixture parses"))
    }

    fn assert_rows(label: &str, ours: &[f32], theirs: &[Vec<f32>]) -> f32 {
        let theirs: Vec<f32> = theirs.iter().flatten().copied().collect();
        let diff = max_abs_diff(ours, &theirs);
        assert!(diff <= 1e-4, "{label}: max |diff| {diff:e}");
        diff
    }

    /// Encoder rows and teacher-forced logits, each source alone and both as one right-padded
    /// batch, within 1e-4; cached decoding (3-token prefill, then one token per step) equal to
    /// the full recompute within 1e-5; 12 greedy tokens per source as Hugging Face / PyTorch
    /// chose them by full recompute.
    macro_rules! seq2seq_matches {
        ($test:ident, $model:ident, $fixture:literal) => {
            #[test]
            fn $test() {
                let (path, r) = reference($fixture);
                let model = $model::from_safetensors(path).expect("weights load");
                let sources: Vec<&[u32]> = r.sources.iter().map(Vec::as_slice).collect();
                let targets: Vec<&[u32]> = r.decoder_inputs.iter().map(Vec::as_slice).collect();
                let memory = model.encode(&Batch::from_sequences(&sources).unwrap()).unwrap();
                let target_batch = Batch::from_sequences(&targets).unwrap();
                let full = model.logits(&memory, &target_batch).unwrap();
                let (width, seq) = (memory.sources().seq_len(), target_batch.seq_len());
                let mut worst = 0.0f32;
                for b in 0..sources.len() {
                    let (n, t) = (sources[b].len(), targets[b].len());
                    let alone: EncoderMemory =
                        model.encode(&Batch::from_sequences(&[sources[b]]).unwrap()).unwrap();
                    let hidden = model.encoder_hidden(&alone).as_flattened();
                    worst =
                        worst.max(assert_rows(&format!("source {b} alone"), hidden, &r.encoder_hidden[b]));
                    let rows = &model.encoder_hidden(&memory)[b * width..b * width + n];
                    let label = format!("source {b} batched");
                    worst = worst.max(assert_rows(&label, rows.as_flattened(), &r.encoder_hidden[b]));
                    let logits =
                        model.logits(&alone, &Batch::from_sequences(&[targets[b]]).unwrap()).unwrap();
                    let label = format!("target {b} alone");
                    worst = worst.max(assert_rows(&label, logits.as_flattened(), &r.decoder_logits[b]));
                    let rows = &full[b * seq..b * seq + t];
                    let label = format!("target {b} batched");
                    worst = worst.max(assert_rows(&label, rows.as_flattened(), &r.decoder_logits[b]));
                    let options = GenerateOptions { max_new_tokens: r.greedy[b].len(), ..Default::default() };
                    assert_eq!(
                        model.generate(&[sources[b]], &options).unwrap()[0],
                        r.greedy[b],
                        "greedy {b}"
                    );
                }
                println!("{}: max |diff| {worst:e}", $fixture);
                let mut cache = model.new_cache(targets.len());
                let mut ws = Workspace::new();
                let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..3]).collect();
                let first =
                    model.step_into(&memory, &Batch::from_sequences(&prefix).unwrap(), &mut cache, &mut ws);
                for (b, row) in first.unwrap().iter().enumerate() {
                    let diff = max_abs_diff(row, &full[b * seq + 2]);
                    assert!(diff <= 1e-5, "target {b} prefill: max |diff| {diff:e}");
                }
                let shortest = targets.iter().map(|t| t.len()).min().unwrap();
                for pos in 3..shortest {
                    let step: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
                    let logits =
                        model.step_into(&memory, &Batch::from_sequences(&step).unwrap(), &mut cache, &mut ws);
                    for (b, row) in logits.unwrap().iter().enumerate() {
                        let diff = max_abs_diff(row, &full[b * seq + pos]);
                        assert!(diff <= 1e-5, "target {b} step at {pos}: max |diff| {diff:e}");
                    }
                }
            }
        };
    }

    seq2seq_matches!(bart_with_alibi_matches_bart_given_the_bias, BartAlibi, "bart_alibi");
    seq2seq_matches!(bart_with_relative_buckets_matches_bart_given_the_bias, BartRelative, "bart_relative");
    seq2seq_matches!(torch_with_alibi_matches_nn_transformer_given_the_bias, TorchAlibi, "torch_alibi");
    seq2seq_matches!(t5_with_alibi_matches_t5_given_the_bias, T5Alibi, "t5_alibi");
    seq2seq_matches!(
        torch_with_relative_buckets_matches_nn_transformer_given_the_bias,
        TorchRelative,
        "torch_relative"
    );
}
