// A GPT-2-shaped decoder declares; its consts, row types and generation API type-check.

use transformer::{Batch, GenerateOptions, KvCache, Workspace};

transformer::model! {
    /// A small GPT-2-shaped decoder.
    pub struct Model {
        vocab_size: 517,
        max_positions: 96,
        d_model: 48,
        heads: 3,
        layers: 3,
        d_ff: 136,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: untied,
    }
}

const _: () = assert!(Model::HEAD_DIM == 16 && Model::VOCAB_SIZE == 517);

#[allow(dead_code)]
fn uses(model: &Model, batch: &Batch, ws: &mut Workspace) -> transformer::Result<Vec<u32>> {
    let _all: &[[f32; 517]] = model.logits_into(batch, ws)?;
    let mut cache: KvCache = model.new_cache(1);
    let _next: &[[f32; 517]] = model.step_into(batch, &mut cache, ws)?;
    let mut out = model.generate(&[&[1, 2, 3]], &GenerateOptions::default())?;
    Ok(out.remove(0))
}

fn main() {}
