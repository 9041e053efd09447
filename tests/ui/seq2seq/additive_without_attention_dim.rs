// Additive cross-attention without the width of its scoring MLP.

transformer::model! {
    /// A small encoder-decoder with a mistake.
    pub struct Model {
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
        decoder: { layers: 2, attention: causal, cross_attention: encoder, cross_attention_kind: additive },
    }
}

fn main() {}
