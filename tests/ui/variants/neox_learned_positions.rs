// GPT-NeoX checkpoints have no position table: `positions: learned` is an error (rope or a score bias fits).

transformer::model! {
    /// A small GPT-NeoX-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        residual: parallel,
        attention: causal,
        weights: neox,
        lm_head: untied,
    }
}

fn main() {}
