// T5 checkpoints are pre-norm RMS: two mistakes, each reported at the value and at the format.

transformer::model! {
    /// A small encoder-decoder with a mistake.
    pub struct Model {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-6,
        norm_placement: post,
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        weights: t5,
        lm_head: tied,
        decoder_start: 0,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

fn main() {}
