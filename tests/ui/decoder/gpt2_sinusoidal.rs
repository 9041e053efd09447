// GPT-2 checkpoints learn their positions: `positions: sinusoidal` with `weights: gpt2` is an error.

transformer::model! {
    /// A small GPT-2-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 512,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: sinusoidal,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}

fn main() {}
