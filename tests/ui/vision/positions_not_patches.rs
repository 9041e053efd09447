// An image model's positions are its patches plus the class token: 4×4 patches + 1 = 17, not 16.

transformer::model! {
    /// A small ViT with one mistake.
    pub struct Model {
        image_size: 32,
        patch_size: 8,
        channels: 3,
        max_positions: 16,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 128,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: pre,
        positions: learned,
        attention: bidirectional,
        pooling: cls,
        labels: 10,
        weights: vit,
    }
}

fn main() {}
