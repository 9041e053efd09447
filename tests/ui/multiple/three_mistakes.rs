// Three unrelated mistakes in one declaration (heads that do not divide d_model, a misspelt
// activation, a zero epsilon): all three are reported in one build.

transformer::model! {
    /// A MiniLM-sized encoder with three mistakes.
    pub struct Model {
        vocab_size: 30522,
        max_positions: 512,
        type_vocab_size: 2,
        d_model: 384,
        heads: 10,
        layers: 6,
        d_ff: 1536,
        activation: gelu_er,
        norm: layer_norm,
        norm_eps: 0.0,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

fn main() {}
