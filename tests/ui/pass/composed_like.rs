// A small composed decoder declares; its consts, row types and generation API type-check.

transformer::model! {
    /// A small composed decoder.
    pub struct Model {
        vocab_size: 100,
        max_positions: 32,
        d_model: 64,
        heads: 4,
        d_ff: 4 * d_model,
        layers: 2,
    }

    fn forward(tokens) -> logits {
        let embed = embedding(tokens, vocab_size, d_model);
        let x = embed + embedding(positions, max_positions, d_model);
        for layer in 0..layers {
            let h = layer_norm(x);
            let qkv = linear(h, 3 * d_model);
            let context = attention(qkv, heads = heads, causal);
            #[weights = "attn_out"]
            x = x + linear(context, d_model);
            let h = layer_norm(x);
            #[weights("fc_in", "fc_out")]
            x = x + linear(gelu(linear(h, d_ff)), d_model);
        }
        let x = layer_norm(x);
        #[weights = "lm_head"]
        linear(x, vocab_size, bias = false)
    }
}

const _: () = assert!(Model::D_FF == 256 && Model::VOCAB_SIZE == 100 && Model::HEAD_DIM == 16);

#[allow(dead_code)]
fn uses(model: &Model, batch: &transformer::Batch, ws: &mut transformer::Workspace) -> transformer::Result<Vec<u32>> {
    let _all: &[[f32; 100]] = model.logits_into(batch, ws)?;
    let mut cache = model.new_cache(1);
    let _next: &[[f32; 100]] = model.step_into(batch, &mut cache, ws)?;
    let mut out = model.generate(&[&[1, 2, 3]], &transformer::GenerateOptions::default())?;
    Ok(out.remove(0))
}

fn main() {}
