// In a bidirectional attention T5's relative buckets are split in half by direction: their number is even.

transformer::model! {
    /// A small composed encoder.
    pub struct Model {
        vocab_size: 100,
        max_positions: 32,
        d_model: 64,
        heads: 4,
        d_ff: 4 * d_model,
        layers: 2,
    }

    fn forward(tokens) -> hidden {
        let x = embedding(tokens, vocab_size, d_model);
        for layer in 0..layers {
            let qkv = linear(x, 3 * d_model);
            let context = attention(qkv, heads = heads, bias = relative(buckets = 7, max_distance = 20, weights = "rel"));
            #[weights = "attn_out"]
            let attention_out = linear(context, d_model);
            #[weights = "attn_norm"]
            x = layer_norm(x + attention_out);
            #[weights("fc_in", "fc_out")]
            let ffn_out = linear(gelu(linear(x, d_ff)), d_model);
            #[weights = "ffn_norm"]
            x = layer_norm(x + ffn_out);
        }
        x
    }
}

fn main() {}
