#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

/// Declares a transformer model; see the crate documentation for examples and [`guide::keys`] for the keys.
pub use transformer_macros::model;

pub use transformer_runtime::{
    generate, kernels, layers, memory, parallel, stream, vision, weights, Activation, Batch, CausalLm,
    EncoderMemory, Error, GenerateOptions, KvCache, Result, Sampling, Threads, TokenStream, WeightError,
    WeightLoader, WeightProblem, Workspace,
};

/// What generated code refers to. Not a public API: paths here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use ndarray;
    pub use transformer_runtime::*;
}

/// The guide: the reference pages under `docs/`, one per topic. Every example in them is compiled
/// as a doctest.
pub mod guide {
    #[doc = include_str!("../docs/keys.md")]
    pub mod keys {}
    #[doc = include_str!("../docs/encoders.md")]
    pub mod encoders {}
    #[doc = include_str!("../docs/decoders.md")]
    pub mod decoders {}
    #[doc = include_str!("../docs/encoder-decoders.md")]
    pub mod encoder_decoders {}
    #[doc = include_str!("../docs/vision.md")]
    pub mod vision {}
    #[doc = include_str!("../docs/reformer.md")]
    pub mod reformer {}
    #[doc = include_str!("../docs/composed.md")]
    pub mod composed {}
    #[doc = include_str!("../docs/weights.md")]
    pub mod weights {}
    #[doc = include_str!("../docs/correctness.md")]
    pub mod correctness {}
}
