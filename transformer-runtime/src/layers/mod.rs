//! Building blocks with static widths, made from the [`kernels`](crate::kernels): what generated model
//! code holds as fields and calls in its forward pass. Each block loads itself from a
//! [`WeightLoader`](crate::WeightLoader) under the checkpoint's own tensor names.

pub mod additive;
pub mod attention;
pub mod embedding;
pub mod linear;
pub mod lsh;
pub mod norm;
pub mod pooling;
pub mod position_bias;
pub mod rope;

pub use crate::kernels::attention::PositionBias;
pub use additive::{AlignmentChannels, AlignmentState, Bahdanau, LocationSensitive, LuongLocation, Memory};
pub use attention::{
    cached_causal_attention, cached_causal_attention_with, causal_self_attention, causal_self_attention_with,
    cross_attention, self_attention, self_attention_with, AttentionShape,
};
pub use attention::{
    cached_causal_attention_sparse, causal_self_attention_sparse, self_attention_sparse, BlockSize,
    BlockSparse, SparsePattern,
};
pub use embedding::{Embedding, SinusoidalPositions};
pub use linear::Linear;
pub use norm::{LayerNorm, RmsNorm};
pub use pooling::mean_pool_normalize;
pub use position_bias::{t5_bucket, Alibi, RelativeBias};
pub use rope::Rope;

/// `stream[i] += sublayer[i]`: the pre-norm residual.
pub fn residual_add<const D: usize>(stream: &mut [[f32; D]], sublayer: &[[f32; D]]) {
    assert_eq!(stream.len(), sublayer.len(), "residual add of different row counts");
    for (x, y) in stream.as_flattened_mut().iter_mut().zip(sublayer.as_flattened()) {
        *x += y;
    }
}

/// Turns a loaded `Vec` of exactly `N` floats into a fixed-size array. The loader always returns the
/// length it was asked for (zeros after a recorded problem), so a mismatch is a bug in this crate.
pub(crate) fn into_array<const N: usize>(v: Vec<f32>) -> Box<[f32; N]> {
    let len = v.len();
    v.into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("weight loader returned {len} floats where {N} were asked for"))
}
