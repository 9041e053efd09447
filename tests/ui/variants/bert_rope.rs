// BERT checkpoints' attention does not rotate: `positions: rope` is an error (a table or a score bias fits).

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
        positions: rope,
        rope_theta: 10000.0,
        attention: bidirectional,
        weights: bert,
    }
}

fn main() {}
