// Additive cross-attention from a checkpoint format without it.

transformer::model! {
    /// A small encoder-decoder with a mistake.
    pub struct Model {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: learned,
        embedding_scale: sqrt_d_model,
        weights: bart,
        lm_head: tied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder, cross_attention_kind: location },
    }
}

fn main() {}
