// A stack has one position-bias table: every biased attention of the layers takes the same one.

transformer::model! {
    /// A small composed encoder with two attentions per layer.
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
            let context = attention(qkv, heads = heads, bias = alibi);
            #[weights = "attn_out"]
            let attention_out = linear(context, d_model);
            #[weights = "attn_norm"]
            x = layer_norm(x + attention_out);
            let qkv2 = linear(x, 3 * d_model);
            let context2 = attention(qkv2, heads = heads, bias = relative(buckets = 8, max_distance = 20, weights = "rel"));
            #[weights = "attn_out2"]
            let attention_out2 = linear(context2, d_model);
            #[weights = "attn_norm2"]
            x = layer_norm(x + attention_out2);
        }
        x
    }
}

fn main() {}
