// BART's attention does not rotate: `positions: rope` is an error (learned or a score bias fits).

transformer::model! {
    /// A small encoder-decoder with a mistake.
    pub struct Model {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: rope,
        rope_theta: 10000.0,
        embedding_scale: sqrt_d_model,
        weights: bart,
        lm_head: tied,
        decoder_start: 2,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

fn main() {}
