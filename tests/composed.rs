//! Composed models (a forward pass written as blocks, shapes inferred by the macro):
//!
//! - MiniLM (all-MiniLM-L6-v2, real weights) and GPT-2 (`tests/fixtures/gpt2/tiny`) re-expressed
//!   as composed blocks give outputs bit-identical to their presets: both lower to the same op
//!   graph, so the same kernels run in the same order;
//! - `Alternating`, an architecture no preset covers (layers alternating an 8-token sliding window
//!   and global causal attention, each a parallel attention + feed-forward block over one shared
//!   norm, grouped-query attention with rotary positions), against a PyTorch module written in
//!   `scripts/reference/alternating.py`: logits within 1e-4, greedy generation identical for 32
//!   tokens (alone and batched), cached steps equal to a full recompute (1e-5) (`tests/common/decoder_parity.rs`).

use transformer::{Batch, GenerateOptions, Workspace};

#[path = "common/decoder_parity.rs"]
#[macro_use]
mod decoder_parity;

use decoder_parity::dir as fixture;

#[path = "../examples/common/minilm.rs"]
mod minilm;

transformer::model! {
    /// all-MiniLM-L6-v2 as composed blocks: BERT's post-norm encoder layer written out.
    pub struct ComposedMiniLm {
        vocab_size: 30522,
        max_positions: 512,
        type_vocab_size: 2,
        d_model: 384,
        heads: 12,
        head_dim: d_model / heads,
        d_ff: 4 * d_model,
        layers: 6,
    }

    #[weights(ignore = ["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"])]
    fn forward(tokens, token_types) -> hidden {
        #[weights = "embeddings.word_embeddings"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "embeddings.position_embeddings"]
        let x = x + embedding(positions, max_positions, d_model);
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
            let context = attention(q, k, v, heads = heads);
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
    /// `tests/fixtures/gpt2/tiny` as composed blocks: GPT-2's pre-norm layer, Conv1D weights.
    pub struct ComposedGpt2 {
        vocab_size: 512,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        d_ff: 256,
        layers: 2,
    }

    #[weights(ignore = ["transformer.h.{layer}.attn.bias", "transformer.h.{layer}.attn.masked_bias"])]
    fn forward(tokens) -> logits {
        #[weights = "transformer.wte"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "transformer.wpe"]
        let x = x + embedding(positions, max_positions, d_model);
        #[weights = "transformer.h.{layer}"]
        for layer in 0..layers {
            #[weights = "ln_1"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights = "attn.c_attn"]
            let qkv = linear(h, 3 * d_model, layout = conv1d);
            let context = attention(qkv, heads = heads, causal);
            #[weights = "attn.c_proj"]
            x = x + linear(context, d_model, layout = conv1d);
            #[weights = "ln_2"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights("mlp.c_fc", "mlp.c_proj")]
            x = x + linear(gelu_tanh(linear(h, d_ff, layout = conv1d)), d_model, layout = conv1d);
        }
        #[weights = "transformer.ln_f"]
        let x = layer_norm(x, eps = 1e-5);
        // Tied: the head reads the token-embedding matrix.
        #[weights = "transformer.wte"]
        linear(x, vocab_size, bias = false)
    }
}

transformer::model! {
    /// GPT-2 `tiny` again, with its fused projection split into queries and keys/values and
    /// concatenated back (copies only: the logits must stay bit-identical).
    pub struct SplitGpt2 {
        vocab_size: 512,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        d_ff: 256,
        layers: 2,
    }

    #[weights(ignore = ["transformer.h.{layer}.attn.bias", "transformer.h.{layer}.attn.masked_bias"])]
    fn forward(tokens) -> logits {
        #[weights = "transformer.wte"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "transformer.wpe"]
        let x = x + embedding(positions, max_positions, d_model);
        #[weights = "transformer.h.{layer}"]
        for layer in 0..layers {
            #[weights = "ln_1"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights = "attn.c_attn"]
            let qkv = linear(h, 3 * d_model, layout = conv1d);
            let (q, k, v) = split(qkv, [d_model, d_model, d_model]);
            let context = attention(concat(q, slice(concat(k, v), 0, 2 * d_model)), heads = heads, causal);
            #[weights = "attn.c_proj"]
            x = x + linear(context, d_model, layout = conv1d);
            #[weights = "ln_2"]
            let h = layer_norm(x, eps = 1e-5);
            #[weights("mlp.c_fc", "mlp.c_proj")]
            x = x + linear(gelu_tanh(linear(h, d_ff, layout = conv1d)), d_model, layout = conv1d);
        }
        #[weights = "transformer.ln_f"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "transformer.wte"]
        linear(x, vocab_size, bias = false)
    }
}

transformer::model! {
    /// GPT-2 `tiny` as the preset declares it.
    pub struct PresetGpt2 {
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
    /// A decoder no preset covers: layers alternate an 8-token sliding window (even layers) and
    /// global causal attention (odd layers); each layer is a parallel attention + feed-forward
    /// block over one shared LayerNorm; grouped-query attention (4 query, 2 key/value heads) with
    /// rotary positions; untied head without bias.
    pub struct Alternating {
        vocab_size: 256,
        max_positions: 64,
        d_model: 64,
        heads: 4,
        kv_heads: 2,
        head_dim: d_model / heads,
        d_ff: 4 * d_model,
        layers: 4,
        window: 8,
    }

    fn forward(tokens) -> logits {
        #[weights = "embed_tokens"]
        let x = embedding(tokens, vocab_size, d_model);
        #[weights = "layers.{layer}"]
        for layer in 0..layers {
            let norm = layer_norm(x, eps = 1e-5);
            #[weights = "attn.q_proj"]
            let q = linear(norm, heads * head_dim);
            #[weights = "attn.k_proj"]
            let k = linear(norm, kv_heads * head_dim);
            #[weights = "attn.v_proj"]
            let v = linear(norm, kv_heads * head_dim);
            let context = attention(
                q, k, v,
                heads = heads,
                kv_heads = kv_heads,
                causal,
                rope = 10000.0,
                window = if layer % 2 == 0 { Some(window) } else { None },
            );
            #[weights = "attn.o_proj"]
            let attention_out = linear(context, d_model);
            #[weights("mlp.fc_in", "mlp.fc_out")]
            let ffn_out = linear(gelu(linear(norm, d_ff)), d_model);
            x = x + attention_out + ffn_out;
        }
        let norm = layer_norm(x, eps = 1e-5);
        let lm_head = linear(norm, vocab_size, bias = false);
        lm_head
    }
}

// Declared dims are consts of the generated type, next to the standard ones.
const _: () = assert!(Alternating::KV_HEADS == 2 && Alternating::WINDOW == 8 && Alternating::HEAD_DIM == 16);
const _: () = assert!(ComposedMiniLm::D_FF == 1536 && ComposedMiniLm::LAYERS == 6);

fn bits(rows: &[impl AsRef<[f32]>]) -> Vec<u32> {
    rows.iter().flat_map(|r| r.as_ref().iter().map(|v| v.to_bits())).collect()
}

#[test]
fn composed_minilm_is_bit_identical_to_the_preset() {
    let preset = minilm::load();
    let path = minilm::model_dir().join("model.safetensors");
    let composed =
        ComposedMiniLm::from_safetensors(&path).expect("the composed MiniLM loads the real checkpoint");
    let tokenizer = minilm::tokenizer().unwrap();
    let texts = ["A cat sits on the mat.", "Stock markets fell sharply today, analysts said.", "Hi"];
    let batch = minilm::encode(&tokenizer, &texts).unwrap();
    let (ours, theirs) = (composed.forward(&batch).unwrap(), preset.forward(&batch).unwrap());
    assert_eq!(bits(&ours), bits(&theirs), "hidden states differ");
    let (ours, theirs) = (composed.embed(&batch).unwrap(), preset.embed(&batch).unwrap());
    assert_eq!(bits(&ours), bits(&theirs), "sentence embeddings differ");
}

#[test]
fn composed_gpt2_is_bit_identical_to_the_preset() {
    let path = fixture("gpt2/tiny/model.safetensors");
    let (composed, preset) =
        (ComposedGpt2::from_safetensors(&path).unwrap(), PresetGpt2::from_safetensors(&path).unwrap());
    let prompts: [&[u32]; 3] = [&[5, 17, 300, 2, 9], &[1, 2, 3], &[400, 401, 402, 403, 404, 405, 406]];
    let batch = Batch::from_sequences(&prompts).unwrap();
    let (ours, theirs) = (composed.logits(&batch).unwrap(), preset.logits(&batch).unwrap());
    assert_eq!(bits(&ours), bits(&theirs), "logits differ");
    let options = GenerateOptions { max_new_tokens: 24, ..GenerateOptions::default() };
    assert_eq!(composed.generate(&prompts, &options).unwrap(), preset.generate(&prompts, &options).unwrap());
    // Cached steps too.
    let (mut c1, mut c2) = (composed.new_cache(3), preset.new_cache(3));
    let (mut w1, mut w2) = (Workspace::new(), Workspace::new());
    let a = bits(composed.step_into(&batch, &mut c1, &mut w1).unwrap());
    let b = bits(preset.step_into(&batch, &mut c2, &mut w2).unwrap());
    assert_eq!(a, b, "cached steps differ");
}

#[test]
fn split_and_concat_copy_exactly() {
    let path = fixture("gpt2/tiny/model.safetensors");
    let (split, preset) =
        (SplitGpt2::from_safetensors(&path).unwrap(), PresetGpt2::from_safetensors(&path).unwrap());
    let prompts: [&[u32]; 2] = [&[5, 17, 300, 2, 9, 11], &[1, 2, 3]];
    let batch = Batch::from_sequences(&prompts).unwrap();
    assert_eq!(bits(&split.logits(&batch).unwrap()), bits(&preset.logits(&batch).unwrap()));
}

decoder_parity_tests!(alternating, Alternating, "alternating");
