// One mistake in the spec (a misspelt activation) and user code that loads the model and calls
// its methods: only the spec error is reported, not a cascade of "cannot find type `Model`" or
// "no method named `embed`" errors.

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
        activation: gelu_er,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

fn first_embedding(model: &Model, batch: &transformer::Batch) -> [f32; 384] {
    model.embed(batch).unwrap()[0]
}

fn main() -> transformer::Result<()> {
    let model =
        Model::from_safetensors("model.safetensors")?.with_threads(transformer::Threads::sequential());
    let batch = transformer::Batch::from_sequences(&[[101u32, 7592, 102]])?;
    let embedding: [f32; 384] = first_embedding(&model, &batch);
    let mut workspace = transformer::Workspace::new();
    let hidden: &[[f32; 384]] = model.forward_into(&batch, &mut workspace)?;
    let rows: Vec<[f32; 384]> = model.forward(&batch)?;
    println!("{} {} {}", embedding[0], hidden.len(), rows.len());
    Ok(())
}

const _: () = assert!(Model::D_MODEL == 384);
fn arr(m: &Model, b: &transformer::Batch) {
    let _ = m.embed_array(b);
    let _ = m.threads();
    let _: Option<&ModelLayer> = None;
}
