//! Runtime of the `transformer` crate.
//!
//! The `model!` macro generates statically shaped model code; this crate is what that code calls:
//! fused CPU kernels ([`kernels`]), the building blocks made from them ([`layers`]), weight loading
//! from safetensors ([`weights`]), the input batch ([`input`]), the reusable forward-pass workspace
//! ([`workspace`]), thread control ([`parallel`]) and the one error type ([`Error`]).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod audio;
pub mod cache;
pub mod config;
pub mod error;
pub mod generate;
pub mod input;
pub mod kernels;
pub mod layers;
pub mod memory;
pub mod parallel;
pub mod recurrent;
pub mod text;
pub mod train;
pub mod vision;
pub mod weights;
pub mod workspace;

pub use cache::KvCache;
pub use error::Error;
pub use generate::{generate, generate_padded, stream, CausalLm, GenerateOptions, Sampling, TokenStream};
pub use input::Batch;
pub use kernels::activation::Activation;
pub use memory::EncoderMemory;
pub use parallel::Threads;
pub use weights::{WeightError, WeightLoader, WeightProblem};
pub use workspace::Workspace;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
