// A Reformer with one mistake: user code calling its API reports only that mistake.

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
        attention: causal,
        weights: reformer,
        attn_layers: [lsh, local, lsh, local],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 0, buckets: 3, hashes: 2 },
        local: { chunk: 8, chunks_before: 1, chunks_after: 0 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

fn main() -> Result<(), transformer::Error> {
    let model = Model::from_safetensors("model.safetensors", "rotations.safetensors")?;
    let logits: Vec<[f32; 320]> = model.logits(&transformer::Batch::from_sequences(&[[5u32, 6, 7]])?)?;
    let _ = logits;
    Ok(())
}
