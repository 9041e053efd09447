// An `lsh` section on a BERT encoder: LSH attention belongs to the Reformer preset.

transformer::model! {
    /// A MiniLM-sized encoder with one mistake.
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
        lsh: { chunk: 64, chunks_before: 1, chunks_after: 0, buckets: 8, hashes: 2 },
    }
}

fn main() {}
