// LSH with zero rounds of hashing: the error sits under the `0`.

transformer::model! {
    /// A small composed Reformer.
    pub struct Model {
        vocab_size: 100,
        d_model: 64,
        heads: 2,
        d_ff: 128,
        layers: 2,
    }

    fn forward(tokens) -> logits {
        let x = embedding(tokens, vocab_size, d_model) + axial_positions(shape = [8, 8], dims = [16, 48]);
        let (x1, x2) = (x, x);
        for layer in 0..layers {
            x1 = x1 + lsh_attention(layer_norm(x2, eps = 1e-12), heads = heads, chunk = 8, chunks_before = 1, chunks_after = 0, buckets = 4, hashes = 0, causal);
            x2 = x2 + linear(gelu(linear(layer_norm(x1, eps = 1e-12), d_ff)), d_model);
        }
        linear(layer_norm(concat(x1, x2), eps = 1e-12), vocab_size)
    }
}

fn main() {}
