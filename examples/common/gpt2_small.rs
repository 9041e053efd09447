//! GPT-2 small's shape (124M parameters), for the benchmarks, with random weights: this
//! environment has no GPT-2 checkpoint to load, and speed does not depend on the values.

transformer::model! {
    /// GPT-2 small's shape.
    pub struct Gpt2Small {
        vocab_size: 50257,
        max_positions: 1024,
        d_model: 768,
        heads: 12,
        layers: 12,
        d_ff: 3072,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}
