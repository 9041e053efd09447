// ViT positions patches with a learned table: a 1-D distance bias over patches in raster order is an error.

transformer::model! {
    /// A small ViT with one mistake.
    pub struct Model {
        image_size: 32,
        patch_size: 8,
        channels: 3,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 128,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: pre,
        positions: alibi,
        attention: bidirectional,
        pooling: cls,
        labels: 10,
        weights: vit,
    }
}

fn main() {}
