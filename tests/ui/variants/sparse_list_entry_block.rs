// The per-entry rules hold inside a per-layer `sparse` list.

transformer::model! {
    /// A small BERT-shaped encoder with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 176,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-6,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        sparse: [dense, { pattern: strided, block: 48, stride: 2 }],
        weights: bert,
    }
}

fn main() {}
