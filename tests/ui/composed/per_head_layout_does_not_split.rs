// A per-head fused QKV splits into 3 × heads equal parts: 192 outputs do not split into 3 × 5.

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
        let x = embedding(tokens, vocab_size, d_model);
        for layer in 0..layers {
            let h = layer_norm(x);
            let qkv = linear(h, 3 * d_model, layout = per_head(5));
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

fn main() {}
