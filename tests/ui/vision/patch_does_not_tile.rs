// Patches must tile the image: 32 is not a multiple of 7 (the nearest patch sizes that divide it are named).

transformer::model! {
    /// A small ViT with one mistake.
    pub struct Model {
        image_size: 32,
        patch_size: 7,
        channels: 3,
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
