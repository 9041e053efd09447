// A block-sparse layout chosen by layer with `if` needs an `else`.

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

    fn forward(tokens) -> (states, pooled) {
        let embed = embedding(tokens, vocab_size, d_model);
        let x = embed + embedding(positions, max_positions, d_model);
        for layer in 0..layers {
            let qkv = linear(x, 3 * d_model);
            let context = attention(qkv, heads = heads, sparse = if layer == 0 { strided(block = 64, stride = 2) });
            #[weights("attn_out", "attn_norm")]
            x = layer_norm(x + linear(context, d_model));
            #[weights("fc_in", "fc_out", "ffn_norm")]
            x = layer_norm(x + linear(gelu(linear(x, d_ff)), d_model));
        }
        let states = x;
        let pooled = mean_pool(states);
    }
}

fn main() {}
