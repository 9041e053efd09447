// BERT checkpoints have a position table, or (MosaicBERT) ALiBi; T5's buckets are not offered.

transformer::model! {
    /// A small BERT-shaped encoder with one mistake.
    pub struct Model {
        vocab_size: 96,
        max_positions: 64,
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

fn main() {}
