// T5's encoder alone lowers through the encoder-decoder stack, which attends globally.

transformer::model! {
    /// T5's encoder alone, with a mistake.
    pub struct Model {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        weights: t5,
        layers: 2,
        attention: bidirectional,
        window: 8,
    }
}

fn main() {}
