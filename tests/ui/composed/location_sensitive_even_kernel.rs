// A location-sensitive cross-attention whose convolution has an even width.

transformer::model! {
    /// A small composed encoder-decoder.
    pub struct Model {
        vocab_size: 100,
        max_positions: 32,
        d_model: 64,
        heads: 4,
        d_ff: 128,
        layers: 2,
        decoder_start: 1,
    }

    fn encode(tokens) -> memory {
        let x = embedding(tokens, vocab_size, d_model) + sinusoidal(positions, 32, d_model);
        for layer in 0..layers {
            let qkv = linear(x, 3 * d_model);
            let context = attention(qkv, heads = heads);
            #[weights("attention_out", "attention_norm")]
            x = layer_norm(x + linear(context, d_model));
            #[weights("fc_in", "fc_out", "ffn_norm")]
            x = layer_norm(x + linear(relu(linear(x, d_ff)), d_model));
        }
        x
    }

    fn decode(tokens, memory) -> logits {
        let x = embedding(tokens, vocab_size, d_model) + sinusoidal(positions, 32, d_model);
        for layer in 0..layers {
            let qkv = linear(x, 3 * d_model);
            let context = attention(qkv, heads = heads, causal);
            #[weights("attention_out", "attention_norm")]
            x = layer_norm(x + linear(context, d_model));
            #[weights = "cross_attn"]
            let context = location_sensitive_attention(x, memory, dim = 16, filters = 4, kernel = 4);
            #[weights("cross_out", "cross_norm")]
            x = layer_norm(x + linear(context, d_model));
            #[weights("fc_in", "fc_out", "ffn_norm")]
            x = layer_norm(x + linear(relu(linear(x, d_ff)), d_model));
        }
        #[weights = "lm_head"]
        linear(x, vocab_size, bias = false)
    }
}

fn main() {}
