// An image is typed by its resolution and channels: a 224×224 image does not go into a 32×32 model.

transformer::model! {
    /// A small ViT.
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
        positions: learned,
        attention: bidirectional,
        pooling: cls,
        labels: 10,
        weights: vit,
    }
}

fn classify(model: &Model, image: &[[[f32; 224]; 224]; 3]) -> Vec<[f32; 10]> {
    model.classify(&[image]).unwrap()
}

fn main() {
    let _ = classify;
}
