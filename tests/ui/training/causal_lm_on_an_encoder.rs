// Next-token training needs a decoder with an LM head; an encoder says which objective fits it.
transformer::model! {
    pub struct Encoder {
        vocab_size: 317,
        max_positions: 64,
        type_vocab_size: 2,
        d_model: 48,
        heads: 3,
        layers: 2,
        d_ff: 112,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
        training: causal_lm,
    }
}

fn main() {}
