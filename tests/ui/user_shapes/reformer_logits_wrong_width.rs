// User code expecting logits rows of the wrong width from a Reformer: a type error in the user's
// code, since a row is `[f32; VOCAB_SIZE]`.

transformer::model! {
    pub struct Model {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 2,
        d_ff: 128,
        activation: gelu_erf,
        norm_eps: 1e-12,
        attention: bidirectional,
        weights: reformer,
        attn_layers: [lsh, lsh],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 1, buckets: 8, hashes: 3 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

fn logits(model: &Model, batch: &transformer::Batch) -> Vec<[f32; 64]> {
    model.logits(batch).unwrap()
}

fn main() {
    let _ = logits;
}
