// Patches of 7 do not tile a 32 × 32 image.

transformer::model! {
    /// A small composed image classifier.
    pub struct Model {
        image_size: 32,
        patch_size: 7,
        channels: 3,
        d_model: 64,
        heads: 4,
        d_ff: 128,
        layers: 2,
        labels: 10,
    }

    fn forward(image) -> logits {
        #[weights("patches", "cls_token", "positions")]
        let x = patch_embedding(image, d_model, size = image_size, patch = patch_size, channels = channels, class_token = true);
        for layer in 0..layers {
            #[weights = "norm_before"]
            let h = layer_norm(x);
            let qkv = linear(h, 3 * d_model);
            #[weights = "attention_out"]
            x = x + linear(attention(qkv, heads = heads), d_model);
            #[weights = "norm_after"]
            let h = layer_norm(x);
            #[weights("fc_in", "fc_out")]
            x = x + linear(gelu(linear(h, d_ff)), d_model);
        }
        #[weights = "final_norm"]
        let x = layer_norm(x);
        #[weights = "classifier"]
        linear(cls(x), labels)
    }
}

fn main() {}
