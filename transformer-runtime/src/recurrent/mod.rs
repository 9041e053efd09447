//! Recurrent layers: [`Lstm`] and [`Gru`], exactly `torch.nn.LSTM` / `torch.nn.GRU` with
//! `batch_first=True`, forward and backpropagation through time.
//!
//! # Shapes
//!
//! A layer is `Lstm<IN, H, D>` / `Gru<IN, H, D>`: input width `IN`, hidden width `H`, `D`
//! directions (1, or 2 for torch's `bidirectional=True`), all const generics, and a layer count
//! chosen at construction (torch's `num_layers`; layers above the first read `D·H` wide inputs,
//! which is why that count is not a type parameter too).
//!
//! * **Inputs** are `&[[f32; IN]]`: `batch` sequences of `time` steps each, row `b·time + t` (torch's
//!   `[batch, time, IN]` flattened; every sequence has the same length, no packing).
//! * **Outputs** are rows `[[f32; H]; D]` in the same order: the last layer's `h_t`, the forward
//!   direction's first and the reverse direction's after it (torch's `[batch, time, D·H]`).
//! * **States** (`h0`, `c0`, `h_n`, `c_n`) are torch's `[layers·D, batch, H]`: row
//!   `(layer·D + direction)·batch + b`, even with `batch_first` (as torch has them).
//!
//! # Weights
//!
//! Parameters live in one flat `Vec<f32>` ([`Lstm::params`]), in torch's `state_dict` order and
//! under its names ([`ParamTensor`]): for each layer `k`, for each direction (the reverse one with
//! the suffix `_reverse`), `weight_ih_l{k}` `[G·H, in]`, `weight_hh_l{k}` `[G·H, H]`, `bias_ih_l{k}`
//! `[G·H]`, `bias_hh_l{k}` `[G·H]`, where the `G` gate blocks are stacked `i, f, g, o` (LSTM) or
//! `r, z, n` (GRU). Gradients use the same layout, so an optimizer is one loop over both slices.
//! `bias=False` modules are not supported (a missing bias is a missing tensor).
//!
//! # What is computed how
//!
//! Forward, per layer and direction: the input projection of every time step at once is one GEMM
//! (`gates = x·W_ihᵀ + b_ih` over all `batch·time` rows); then, step by step, one small GEMM of
//! the whole batch's previous states `h·W_hhᵀ + b_hh` (against `W_hhᵀ` packed once per call) and
//! the cell's pointwise update. The two directions of a layer run on two threads when there are.
//!
//! Saved for the backward (in [`LstmSaved`] / [`GruSaved`], flat buffers sized by the shape, grown
//! to the largest shape seen and then reused): each step's gate activations `[rows, G·H]`, the
//! previous state `h_{t−1}` of each row `[rows, H]` (so `dW_hh` is one GEMM), the LSTM's cell
//! state `c_t` or the GRU's `W_hn·h + b_hn` `[rows, H]`, and every layer's output (the next
//! layer's input). Nothing is allocated inside a time step.
//!
//! Backward (BPTT), per layer from the top: step by step in reverse, the pointwise derivative of
//! the cell gives the gates' gradients, and one small GEMM `dGates·W_hh` carries the state's
//! gradient to the previous step. Then, over all rows at once, `dW_ih += dGatesᵀ·x`,
//! `dW_hh += dGatesᵀ·h_prev` and `dx = dGates·W_ih` are GEMMs (split across threads by output
//! features and rows, as [`crate::train::linear`] does). Parameter gradients accumulate; the input
//! gradient is stored as its [`Store`](crate::train::Store) says.
//!
//! Parity with PyTorch's autograd: `transformer-runtime/tests/recurrent.rs`, fixtures written by
//! `scripts/reference/recurrent.py`.

/// The parameter handling `Lstm` and `Gru` share (construction, loading, accessors), written once
/// for a layer type `$layer` over the cell `$cell`; `$torch` names the module in messages.
macro_rules! recurrent_params {
    ($layer:ident, $cell:ty, $torch:literal) => {
        impl<const IN: usize, const H: usize, const D: usize> $layer<IN, H, D> {
            fn dims(layers: usize) -> Dims {
                const {
                    assert!(
                        IN > 0 && H > 0,
                        concat!("the ", $torch, "'s input and hidden widths must be positive")
                    )
                };
                const {
                    assert!(
                        D == 1 || D == 2,
                        concat!("the ", $torch, " has 1 direction or 2 (bidirectional)")
                    )
                };
                Dims { input: IN, hidden: H, layers, directions: D, gates: <$cell>::GATES }
            }

            /// `layers` layers with every parameter zero.
            pub fn zeros(layers: usize) -> Self {
                Self {
                    stack: Stack::from_values(Self::dims(layers), |t| {
                        vec![0.0; t.iter().map(ParamTensor::len).sum()]
                    }),
                }
            }

            /// `layers` layers initialised as torch initialises them (uniform in `±1/√H`), from
            /// `seed`.
            pub fn init(layers: usize, seed: u64) -> Self {
                let values = |t: &[ParamTensor]| params::init(t.iter().map(ParamTensor::len).sum(), H, seed);
                Self { stack: Stack::from_values(Self::dims(layers), values) }
            }

            /// `layers` layers read from `loader` under torch's names (`weight_ih_l0`, …) after
            /// `{prefix}.` (no prefix when empty). Missing tensors and wrong shapes are recorded in
            /// the loader, which reports them, each with its name and expected shape, at
            /// [`WeightLoader::finish`].
            pub fn load(loader: &mut WeightLoader, prefix: &str, layers: usize) -> Self {
                Self { stack: Stack::from_values(Self::dims(layers), |t| params::load(loader, prefix, t)) }
            }

            /// `layers` layers from a safetensors file holding exactly this module's `state_dict`
            /// (`safetensors.torch.save_file(module.state_dict(), path)`). A missing, misshaped or
            /// extra tensor is [`Error::Weights`](crate::Error::Weights), listing every one.
            pub fn open(path: impl AsRef<Path>, layers: usize) -> Result<Self> {
                let mut loader = WeightLoader::open(path)?;
                let layer = Self::load(&mut loader, "", layers);
                loader.finish()?;
                Ok(layer)
            }

            pub fn layers(&self) -> usize {
                self.stack.dims().layers
            }

            /// The parameter tensors: names, shapes and ranges in [`Self::params`] (and in a
            /// gradient buffer), in torch's `state_dict` order.
            pub fn tensors(&self) -> &[ParamTensor] {
                self.stack.tensors()
            }

            /// Every parameter, flat, laid out as [`Self::tensors`] says.
            pub fn params(&self) -> &[f32] {
                self.stack.values()
            }

            pub fn params_mut(&mut self) -> &mut [f32] {
                self.stack.values_mut()
            }
        }
    };
}

mod cell;
mod gru;
mod lstm;
mod params;
mod products;
mod stack;

pub use gru::{Gru, GruSaved};
pub use lstm::{Lstm, LstmSaved, LstmStates};
pub use params::ParamTensor;

/// A flat buffer as rows of `H` (its length is a multiple of `H` by construction).
fn as_rows<const H: usize>(flat: &[f32]) -> &[[f32; H]] {
    let (rows, rest) = flat.as_chunks::<H>();
    debug_assert!(rest.is_empty(), "{} values are not rows of {H}", flat.len());
    rows
}

/// A flat buffer as rows of `D` blocks of `H`.
fn as_nested_rows<const H: usize, const D: usize>(flat: &[f32]) -> &[[[f32; H]; D]] {
    let (rows, rest) = as_rows::<H>(flat).as_chunks::<D>();
    debug_assert!(rest.is_empty(), "{} values are not rows of {D}×{H}", flat.len());
    rows
}
