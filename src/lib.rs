#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

/// Declares a transformer model; see the crate documentation for the keys.
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
