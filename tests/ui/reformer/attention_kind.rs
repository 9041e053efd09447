// A layer kind written as the model's attention direction.

transformer::model! {
    /// A small causal Reformer with one mistake.
    pub struct Model {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 4,
        d_ff: 128,
        activation: gelu_erf,
        norm_eps: 1e-12,
        attention: lsh,
        weights: reformer,
        attn_layers: [lsh, local, lsh, local],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 0, buckets: 4, hashes: 2 },
        local: { chunk: 8, chunks_before: 1, chunks_after: 0 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

fn main() {}
