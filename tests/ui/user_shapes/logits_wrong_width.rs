// Logits rows carry the vocabulary in their type: a 512-token model's logits are `[f32; 512]`,
// and treating them as `[f32; 50257]` does not compile.

transformer::model! {
    /// A small GPT-2-shaped decoder.
    pub struct Model {
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
    }
}

fn logits(model: &Model, batch: &transformer::Batch) -> Vec<[f32; 50257]> {
    model.logits(batch).unwrap()
}

fn main() {
    let _ = logits;
}
