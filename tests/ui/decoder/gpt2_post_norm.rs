// GPT-2 checkpoints are pre-norm: `norm_placement: post` with `weights: gpt2` is an error at both.

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
        norm_placement: post,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}

fn main() {}
