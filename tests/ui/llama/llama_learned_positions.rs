// LLaMA checkpoints have no position table: rotary positions, or a score bias (ALiBi, buckets).

transformer::model! {
    /// A small LLaMA-shaped decoder with one mistake.
    pub struct Model {
        vocab_size: 96,
        max_positions: 64,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 128,
        activation: swiglu,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: llama,
        lm_head: untied,
    }
}

fn main() {}
