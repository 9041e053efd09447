// A valid 384-wide model whose caller expects 768-wide embeddings: the width is in the types, so
// this is a type mismatch naming `[f32; 384]` and `[f32; 768]`.

transformer::model! {
    /// A MiniLM-sized encoder, 384 wide.
    pub struct Model {
        vocab_size: 30522,
        max_positions: 512,
        type_vocab_size: 2,
        d_model: 384,
        heads: 12,
        layers: 6,
        d_ff: 1536,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

fn embed(model: &Model, batch: &transformer::Batch) -> Vec<[f32; 768]> {
    model.embed(batch).unwrap()
}

fn main() {
    let _ = embed;
}
