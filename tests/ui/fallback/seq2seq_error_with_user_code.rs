// An encoder-decoder declaration with one mistake: user code calling its API reports only that
// mistake, not a cascade of missing methods.

transformer::model! {
    pub struct Model {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        weights: t5,
        lm_head: tied,
        decoder_start: 0,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encodr },
    }
}

fn main() -> Result<(), transformer::Error> {
    let model = Model::from_safetensors("model.safetensors")?;
    let memory = model.encode(&transformer::Batch::from_sequences(&[[5u32, 6, 7]])?)?;
    let hidden: &[[f32; 32]] = model.encoder_hidden(&memory);
    let logits: Vec<[f32; 96]> = model.logits(&memory, &transformer::Batch::from_sequences(&[[0u32]])?)?;
    let out = model.generate(&[&[5, 6, 7]], &transformer::GenerateOptions::default())?;
    let _ = (hidden, logits, out);
    Ok(())
}
