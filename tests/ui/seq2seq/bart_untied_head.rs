// BART heads are tied to the shared embeddings.

transformer::model! {
    /// A small encoder-decoder with a mistake.
    pub struct Model {
        vocab_size: 120,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: learned,
        weights: bart,
        lm_head: untied,
        decoder_start: 2,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

fn main() {}
