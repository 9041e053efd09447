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

#[path = "common/decoder_parity.rs"]
#[macro_use]
mod decoder_parity;

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

decoder_parity_tests!(bloom, Bloom, "bloom/bloom");
decoder_parity_tests!(neox, NeoX, "neox/neox");
// As transformers 5.25.0 saves it: `lm_head.weight` for `embed_out.weight`, rotary settings under
// `rope_parameters`.
decoder_parity_tests!(neox_v5, NeoX, "neox/neox_v5");
