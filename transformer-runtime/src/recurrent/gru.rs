//! `torch.nn.GRU` (`batch_first=True`): gates `r, z, n`,
//!
//! ```text
//! r = σ(x·W_irᵀ + b_ir + h·W_hrᵀ + b_hr)      z = σ(… z …)
//! n = tanh(x·W_inᵀ + b_in + r ⊙ (h·W_hnᵀ + b_hn))
//! h' = (1 − z) ⊙ n + z ⊙ h                   (computed as torch does: n + z ⊙ (h − n))
//! ```

use std::path::Path;

use super::cell::{sigmoid, Cell};
use super::params::{self, Dims, ParamTensor};
use super::stack::{Stack, Tape};
use super::{as_nested_rows, as_rows};
use crate::train::Store;
use crate::weights::WeightLoader;
use crate::{Result, Threads};

/// The GRU cell: saves the gate activations and `h·W_hnᵀ + b_hn` (the reset gate's operand).
#[derive(Clone, Copy, Debug)]
pub(super) struct GruCell;

impl Cell for GruCell {
    const GATES: usize = 3;
    const CELL_STATE: bool = false;
    const NAME: &'static str = "GRU";

    fn forward(gates: &mut [f32], hh: &[f32], h: &mut [f32], _c: &mut [f32], keep: &mut [f32]) {
        let n = h.len();
        let (r, rest) = gates.split_at_mut(n);
        let (z, new) = rest.split_at_mut(n);
        for j in 0..n {
            r[j] = sigmoid(r[j] + hh[j]);
            z[j] = sigmoid(z[j] + hh[n + j]);
            keep[j] = hh[2 * n + j];
            new[j] = (new[j] + r[j] * keep[j]).tanh();
            h[j] = new[j] + z[j] * (h[j] - new[j]);
        }
    }

    fn backward(
        gates: &[f32],
        keep: &[f32],
        h_prev: &[f32],
        _c_prev: &[f32],
        dh: &mut [f32],
        _dc: &mut [f32],
        d_x_proj: &mut [f32],
        d_hh: &mut [f32],
    ) {
        let n = dh.len();
        for j in 0..n {
            let (r, z, new) = (gates[j], gates[n + j], gates[2 * n + j]);
            let d_new = dh[j] * (1.0 - z);
            let d_z = dh[j] * (h_prev[j] - new);
            let d_new_pre = d_new * (1.0 - new * new);
            let d_r = d_new_pre * keep[j];
            let (d_r_pre, d_z_pre) = (d_r * r * (1.0 - r), d_z * z * (1.0 - z));
            d_x_proj[j] = d_r_pre;
            d_x_proj[n + j] = d_z_pre;
            d_x_proj[2 * n + j] = d_new_pre;
            d_hh[j] = d_r_pre;
            d_hh[n + j] = d_z_pre;
            d_hh[2 * n + j] = d_new_pre * r;
            // h_t = n + z ⊙ (h_prev − n): the direct path; the stack adds the one through W_hh.
            dh[j] *= z;
        }
    }
}

/// `torch.nn.GRU(IN, H, num_layers, batch_first=True, bidirectional = D == 2)`: `layers` layers
/// of input width `IN` (the first) or `D·H` (the others), hidden width `H`, `D` directions (1 or
/// 2). See [the module](super) for the layouts of inputs, outputs, states and parameters.
#[derive(Clone, Debug)]
pub struct Gru<const IN: usize, const H: usize, const D: usize = 1> {
    stack: Stack<GruCell>,
}

recurrent_params!(Gru, GruCell, "GRU");

impl<const IN: usize, const H: usize, const D: usize> Gru<IN, H, D> {
    /// The forward pass over `batch` sequences of equal length, `x` rows batch-first (row
    /// `b·time + t`), from the initial states `h0` (`[layers·D, batch]` rows; zeros when `None`).
    /// Outputs and final states are then in `saved` ([`GruSaved::output`], [`GruSaved::h_n`]),
    /// with everything [`Self::backward`] reads. Panics if `x` is not `batch` sequences of at
    /// least one step or `h0` is not `[layers·D, batch, H]`.
    pub fn forward(
        &self,
        x: &[[f32; IN]],
        batch: usize,
        h0: Option<&[[f32; H]]>,
        saved: &mut GruSaved<H, D>,
        threads: &Threads,
    ) {
        let h0 = h0.map(|h| h.as_flattened());
        self.stack.forward(x.as_flattened(), batch, h0, None, &mut saved.tape, threads);
    }

    /// Backpropagation through time of the last [`Self::forward`] into `saved`, whose input was
    /// `x`. `d_output` is the gradient of the outputs, `d_h_n` of the final states (zeros when
    /// `None`). The parameters' gradients are added into `grads` (laid out as [`Self::params`]);
    /// `d_input`, when given, is written or added as its [`Store`] says; the initial states'
    /// gradient is then [`GruSaved::d_h0`]. Panics on shapes that do not
    /// match the forward's.
    pub fn backward(
        &self,
        x: &[[f32; IN]],
        saved: &mut GruSaved<H, D>,
        d_output: &[[[f32; H]; D]],
        d_h_n: Option<&[[f32; H]]>,
        d_input: Option<(&mut [[f32; IN]], Store)>,
        grads: &mut [f32],
        threads: &Threads,
    ) {
        let ends = (d_h_n.map(|h| h.as_flattened()), None);
        let d_input = d_input.map(|(dx, store)| (dx.as_flattened_mut(), store));
        let d_output = d_output.as_flattened().as_flattened();
        self.stack.backward(x.as_flattened(), &mut saved.tape, d_output, ends, d_input, grads, threads);
    }
}

/// What [`Gru::forward`] saves for [`Gru::backward`], and the results of both. Reusable: its
/// buffers grow to the largest shape seen and are then reused without allocating.
#[derive(Clone, Debug, Default)]
pub struct GruSaved<const H: usize, const D: usize = 1> {
    tape: Tape,
}

impl<const H: usize, const D: usize> GruSaved<H, D> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `(batch, time)` of the last forward.
    pub fn batch_time(&self) -> (usize, usize) {
        self.tape.batch_time()
    }

    /// The last layer's outputs, rows batch-first, each `[forward h_t, reverse h_t]`.
    pub fn output(&self) -> &[[[f32; H]; D]] {
        as_nested_rows(self.tape.output())
    }

    /// The final hidden states, `[layers·D, batch]` rows.
    pub fn h_n(&self) -> &[[f32; H]] {
        as_rows(self.tape.h_n())
    }

    /// After a backward: the gradient of the initial hidden states, `[layers·D, batch]` rows.
    pub fn d_h0(&self) -> &[[f32; H]] {
        as_rows(self.tape.d_h0())
    }
}
