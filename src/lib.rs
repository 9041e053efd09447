// The README and the `docs/` pages link each other by relative paths (right on GitHub); the link
// definitions below come first, so for rustdoc (where the first definition of a label wins) the
// same links point at the crate root and the `guide` modules instead.
#![doc = "[docs/checkpoints.md]: crate::guide::checkpoints"]
#![doc = "[docs/composed.md]: crate::guide::composed"]
#![doc = "[docs/correctness.md]: crate::guide::correctness"]
#![doc = "[docs/decoders.md]: crate::guide::decoders"]
#![doc = "[docs/encoder-decoders.md]: crate::guide::encoder_decoders"]
#![doc = "[docs/encoders.md]: crate::guide::encoders"]
#![doc = "[docs/keys.md]: crate::guide::keys"]
#![doc = "[docs/keys.md#mistakes]: crate::guide::keys#mistakes"]
#![doc = "[docs/reformer.md]: crate::guide::reformer"]
#![doc = "[docs/training.md]: crate::guide::training"]
#![doc = "[docs/vision.md]: crate::guide::vision"]
#![doc = "[docs/weights.md]: crate::guide::weights"]
#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

/// Declares a transformer model; see the crate documentation for examples and [`guide::keys`] for the keys.
pub use transformer_macros::model;

pub use transformer_runtime::{
    audio, config, generate, generate_padded, kernels, layers, memory, parallel, recurrent, stream, text,
    train, vision, weights, Activation, Batch, CausalLm, EncoderMemory, Error, GenerateOptions, KvCache,
    Result, Sampling, Threads, TokenStream, WeightError, WeightLoader, WeightProblem, Workspace,
};

/// What generated code refers to. Not a public API: paths here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use ndarray;
    pub use transformer_runtime::*;
}

/// Link definitions for the `docs/` pages; see the top of this file.
macro_rules! guide_links {
    () => {
        concat!(
            "[../README.md]: crate\n",
            "[../README.md#correctness]: crate#correctness\n",
            "[checkpoints.md]: crate::guide::checkpoints\n",
            "[composed.md]: crate::guide::composed\n",
            "[composed.md#encoder-decoders-fn-encode-and-fn-decode]: crate::guide::composed#encoder-decoders-fn-encode-and-fn-decode\n",
            "[composed.md#image-classifiers-fn-forwardimage]: crate::guide::composed#image-classifiers-fn-forwardimage\n",
            "[composed.md#reformers-two-reversible-streams]: crate::guide::composed#reformers-two-reversible-streams\n",
            "[decoders.md]: crate::guide::decoders\n",
            "[encoder-decoders.md]: crate::guide::encoder_decoders\n",
            "[encoders.md]: crate::guide::encoders\n",
            "[keys.md]: crate::guide::keys\n",
            "[keys.md#declaring-a-model]: crate::guide::keys#declaring-a-model\n",
            "[keys.md#encoder-decoder-sections]: crate::guide::keys#encoder-decoder-sections\n",
            "[keys.md#image-keys]: crate::guide::keys#image-keys\n",
            "[keys.md#the-keys]: crate::guide::keys#the-keys\n",
            "[reformer.md]: crate::guide::reformer\n",
            "[reformer.md#keys]: crate::guide::reformer#keys\n",
            "[training.md]: crate::guide::training\n",
            "[vision.md]: crate::guide::vision\n",
            "[weights.md]: crate::guide::weights\n",
            "[weights.md#composed-models]: crate::guide::weights#composed-models\n",
            "[weights.md#encoder-decoders]: crate::guide::weights#encoder-decoders\n",
            "[weights.md#one-stack-models]: crate::guide::weights#one-stack-models\n",
        )
    };
}

/// The guide: the reference pages under `docs/`, one per topic. Every example in them is compiled
/// as a doctest.
pub mod guide {
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/keys.md")]
    pub mod keys {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/encoders.md")]
    pub mod encoders {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/decoders.md")]
    pub mod decoders {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/encoder-decoders.md")]
    pub mod encoder_decoders {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/training.md")]
    pub mod training {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/vision.md")]
    pub mod vision {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/reformer.md")]
    pub mod reformer {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/composed.md")]
    pub mod composed {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/weights.md")]
    pub mod weights {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/checkpoints.md")]
    pub mod checkpoints {}
    #[doc = guide_links!()]
    #[doc = include_str!("../docs/correctness.md")]
    pub mod correctness {}
}
