// BLOOM checkpoints have no position table: their scores carry ALiBi's distance bias.

transformer::model! {
    /// A small BLOOM-shaped decoder with one mistake.
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
        positions: learned,
        attention: causal,
        weights: bloom,
        lm_head: tied,
    }
}

fn main() {}
