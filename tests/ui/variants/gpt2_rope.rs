// GPT-2 checkpoints' attention does not rotate: `positions: rope` is an error (a table or a score bias fits).

transformer::model! {
    /// A small GPT-2-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: rope,
        rope_theta: 10000.0,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}

fn main() {}
