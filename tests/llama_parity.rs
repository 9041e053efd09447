//! LLaMA, Mistral and Ministral against Hugging Face transformers (`LlamaForCausalLM`,
//! `MistralForCausalLM`, `MinistralForCausalLM`, random weights from a fixed seed, written by
//! `scripts/reference/llama.py`): logits within 1e-4,
//! greedy generation identical to `generate(do_sample=False)` for 32 tokens (alone and with the
//! prompts batched), and cached steps equal to a full recompute (1e-5). Configs: `llama`
//! (grouped-query 4/2, untied), `llama_partial` (multi-query 3/1, θ = 500000, tied; full rotary,
//! since transformers' Llama cannot run partial rotary) and `mistral` (sliding window 8, shorter
//! than every prompt) and `ministral` (layers typed sliding / full / sliding, window 8: a per-layer
//! mix of local and global attention).

#[path = "common/decoder_parity.rs"]
#[macro_use]
mod decoder_parity;

macro_rules! llama {
    ($name:ident, d_model: $d:literal, heads: $h:literal, kv_heads: $kv:literal, d_ff: $f:literal,
     layers: $layers:literal, theta: $theta:literal, head: $head:ident $(, window: $w:tt)?) => {
        transformer::model! {
            pub struct $name {
                vocab_size: 320,
                max_positions: 128,
                d_model: $d,
                heads: $h,
                kv_heads: $kv,
                layers: $layers,
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

llama!(Llama, d_model: 64, heads: 4, kv_heads: 2, d_ff: 176, layers: 2, theta: 10000.0, head: untied);
llama!(LlamaMqa, d_model: 48, heads: 3, kv_heads: 1, d_ff: 136, layers: 2, theta: 500000.0, head: tied);
llama!(Mistral, d_model: 64, heads: 4, kv_heads: 2, d_ff: 176, layers: 2, theta: 10000.0, head: untied, window: 8);
llama!(Ministral, d_model: 64, heads: 4, kv_heads: 2, d_ff: 128, layers: 3, theta: 10000.0, head: untied,
       window: [8, global, 8]);

decoder_parity_tests!(llama, Llama, "llama/llama");
decoder_parity_tests!(llama_mqa, LlamaMqa, "llama/llama_partial");
// As transformers 5.25.0 saves it (theta 500000 under `rope_parameters`).
decoder_parity_tests!(llama_mqa_v5, LlamaMqa, "llama/llama_partial_v5");
decoder_parity_tests!(mistral, Mistral, "llama/mistral");
decoder_parity_tests!(ministral, Ministral, "llama/ministral");
