// A ViT declares; its consts, image type and classification API type-check.

transformer::model! {
    /// A small ViT with a 12-head width that is not a power of two.
    pub struct Model {
        image_size: 30,
        patch_size: 6,
        channels: 3,
        max_positions: 26,
        d_model: 48,
        heads: 12,
        layers: 3,
        d_ff: 136,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: pre,
        positions: learned,
        attention: bidirectional,
        pooling: cls,
        labels: 7,
        weights: vit,
    }
}

const _: () = assert!(Model::PATCHES == 25 && Model::MAX_POSITIONS == 26 && Model::HEAD_DIM == 4);

#[allow(dead_code)]
fn uses(model: &Model, image: &ModelImage) -> transformer::Result<[f32; 7]> {
    let image: &[[[f32; 30]; 30]; 3] = image;
    Ok(model.classify(&[image])?[0])
}

fn main() {}
