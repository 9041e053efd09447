// `rope_theta` only goes with `positions: rope` (a GPT-2 layout with a stray theta).

transformer::model! {
    /// A small LLaMA-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 176,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: learned,
        rope_theta: 10000.0,
        attention: causal,
        weights: gpt2,
        lm_head: untied,
    }
}

fn main() {}
