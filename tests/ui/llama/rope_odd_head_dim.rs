// Rotary positions rotate pairs of dimensions: 60 / 4 = 15 is an odd head width.

transformer::model! {
    /// A small LLaMA-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 128,
        d_model: 60,
        heads: 4,
        layers: 2,
        d_ff: 176,
        activation: swiglu,
        norm: rms_norm,
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
