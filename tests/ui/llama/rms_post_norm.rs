// RMS norm is implemented pre-norm only (and LLaMA checkpoints are pre-norm): one mistake, two messages.

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
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: post,
        positions: rope,
        rope_theta: 10000.0,
        attention: causal,
        weights: llama,
        lm_head: untied,
    }
}

fn main() {}
