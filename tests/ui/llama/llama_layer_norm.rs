// LLaMA checkpoints use RMS norms: `norm: layer_norm` with `weights: llama` is an error at both.

transformer::model! {
    /// A small LLaMA-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 176,
        activation: swiglu,
        norm: layer_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: rope,
        rope_theta: 10000.0,
        attention: causal,
        weights: llama,
        lm_head: untied,
    }
}

fn main() {}
