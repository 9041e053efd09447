//! Vision Transformer input: image preprocessing as Hugging Face's `ViTImageProcessor` does it
//! ([`ImageProcessor`], with Pillow's bilinear resize reproduced bit for bit in
//! [`resize_bilinear`]) and the patch unfolding that turns the patch-embedding convolution into a
//! [`Linear`](crate::layers::Linear) ([`unfold_patches`]).

pub mod patches;
pub mod preprocess;
pub mod resample;

pub use patches::unfold_patches;
pub use preprocess::{ImageProcessor, Resample};
pub use resample::resize_bilinear;
