// `weights: vit` reads images: a text model with ViT naming is an error.

transformer::model! {
    /// A text encoder that names the wrong checkpoint layout.
    pub struct Model {
        vocab_size: 30522,
        max_positions: 512,
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
        weights: vit,
    }
}

fn main() {}
