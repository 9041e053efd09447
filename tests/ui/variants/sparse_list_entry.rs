// Each entry of a per-layer `sparse` list is a layout or `dense`.

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
        sparse: [{ pattern: strided, block: 64, stride: 2 }, global],
        weights: bert,
    }
}

fn main() {}
