// A misspelt objective is named, with the closest one.
transformer::model! {
    pub struct Tiny {
        vocab_size: 512,
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
        weights: gpt2,
        lm_head: tied,
        training: causal_llm,
    }
}

fn main() {}
