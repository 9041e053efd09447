// `positions: rope` needs `rope_theta`.

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
        norm_placement: pre,
        positions: rope,
        attention: causal,
        weights: llama,
        lm_head: untied,
    }
}

fn main() {}
