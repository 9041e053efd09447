//! `torch.nn.LSTM` (`batch_first=True`): gates `i, f, g, o`,
//!
//! ```text
//! i = σ(x·W_iiᵀ + b_ii + h·W_hiᵀ + b_hi)      f = σ(… f …)      g = tanh(… g …)      o = σ(… o …)
//! c' = f ⊙ c + i ⊙ g
//! h' = o ⊙ tanh(c')
//! ```

use std::path::Path;

use super::cell::{sigmoid, Cell};
use super::params::{self, Dims, ParamTensor};
use super::stack::{Stack, Tape};
use super::{as_nested_rows, as_rows};
use crate::train::Store;
use crate::weights::WeightLoader;
use crate::{Result, Threads};

/// The LSTM cell: saves the gate activations and `c_t`.
#[derive(Clone, Copy, Debug)]
pub(super) struct LstmCell;

impl Cell for LstmCell {
    const GATES: usize = 4;
    const CELL_STATE: bool = true;
    const NAME: &'static str = "LSTM";

    fn forward(gates: &mut [f32], hh: &[f32], h: &mut [f32], c: &mut [f32], keep: &mut [f32]) {
        let n = h.len();
        let (i, rest) = gates.split_at_mut(n);
        let (f, rest) = rest.split_at_mut(n);
        let (g, o) = rest.split_at_mut(n);
        for j in 0..n {
            i[j] = sigmoid(i[j] + hh[j]);
            f[j] = sigmoid(f[j] + hh[n + j]);
            g[j] = (g[j] + hh[2 * n + j]).tanh();
            o[j] = sigmoid(o[j] + hh[3 * n + j]);
            c[j] = f[j] * c[j] + i[j] * g[j];
            keep[j] = c[j];
            h[j] = o[j] * c[j].tanh();
        }
    }

    fn backward(
        gates: &[f32],
        keep: &[f32],
        _h_prev: &[f32],
        c_prev: &[f32],
        dh: &mut [f32],
        dc: &mut [f32],
        d_x_proj: &mut [f32],
        d_hh: &mut [f32],
    ) {
        let n = dh.len();
        for j in 0..n {
            let (i, f, g, o) = (gates[j], gates[n + j], gates[2 * n + j], gates[3 * n + j]);
            let tanh_c = keep[j].tanh();
            let d_o = dh[j] * tanh_c;
            let d_c = dc[j] + dh[j] * o * (1.0 - tanh_c * tanh_c);
            let (d_i, d_f, d_g) = (d_c * g, d_c * c_prev[j], d_c * i);
            let pre = [d_i * i * (1.0 - i), d_f * f * (1.0 - f), d_g * (1.0 - g * g), d_o * o * (1.0 - o)];
            for (k, v) in pre.into_iter().enumerate() {
                d_x_proj[k * n + j] = v;
                d_hh[k * n + j] = v;
            }
            dc[j] = d_c * f;
            // h_prev reaches h_t only through W_hh, which the stack applies.
            dh[j] = 0.0;
        }
    }
}

/// The states of every layer and direction at one end of the sequences, torch's `(h, c)`:
/// `[layers·D, batch]` rows of `H` each (row `(layer·D + direction)·batch + b`). A state left
/// `None` is zeros. The forward's initial states, and the backward's gradients of the final ones.
#[derive(Clone, Copy, Debug, Default)]
pub struct LstmStates<'a, const H: usize> {
    pub h: Option<&'a [[f32; H]]>,
    pub c: Option<&'a [[f32; H]]>,
}

impl<const H: usize> LstmStates<'_, H> {
    /// Both states zero.
    pub const ZERO: Self = LstmStates { h: None, c: None };
}

/// `torch.nn.LSTM(IN, H, num_layers, batch_first=True, bidirectional = D == 2)`: `layers` layers
/// of input width `IN` (the first) or `D·H` (the others), hidden width `H`, `D` directions (1 or
/// 2). See [the module](super) for the layouts of inputs, outputs, states and parameters.
#[derive(Clone, Debug)]
pub struct Lstm<const IN: usize, const H: usize, const D: usize = 1> {
    stack: Stack<LstmCell>,
}

recurrent_params!(Lstm, LstmCell, "LSTM");

impl<const IN: usize, const H: usize, const D: usize> Lstm<IN, H, D> {
    /// The forward pass over `batch` sequences of equal length, `x` rows batch-first (row
    /// `b·time + t`), from `initial` states. Outputs and final states are then in `saved`
    /// ([`LstmSaved::output`], [`LstmSaved::h_n`], [`LstmSaved::c_n`]), with everything
    /// [`Self::backward`] reads. Panics if `x` is not `batch` sequences of at least one step or a
    /// state is not `[layers·D, batch, H]`.
    pub fn forward(
        &self,
        x: &[[f32; IN]],
        batch: usize,
        initial: LstmStates<'_, H>,
        saved: &mut LstmSaved<H, D>,
        threads: &Threads,
    ) {
        let h0 = initial.h.map(|h| h.as_flattened());
        let c0 = initial.c.map(|c| c.as_flattened());
        self.stack.forward(x.as_flattened(), batch, h0, c0, &mut saved.tape, threads);
    }

    /// Backpropagation through time of the last [`Self::forward`] into `saved`, whose input was
    /// `x`. `d_output` is the gradient of the outputs, `d_final` of the final states (zeros where
    /// `None`). The parameters' gradients are added into `grads` (laid out as [`Self::params`]);
    /// `d_input`, when given, is written or added as its [`Store`] says; the initial states'
    /// gradients are then [`LstmSaved::d_h0`] and [`LstmSaved::d_c0`]. Panics on shapes that do not
    /// match the forward's.
    pub fn backward(
        &self,
        x: &[[f32; IN]],
        saved: &mut LstmSaved<H, D>,
        d_output: &[[[f32; H]; D]],
        d_final: LstmStates<'_, H>,
        d_input: Option<(&mut [[f32; IN]], Store)>,
        grads: &mut [f32],
        threads: &Threads,
    ) {
        let ends = (d_final.h.map(|h| h.as_flattened()), d_final.c.map(|c| c.as_flattened()));
        let d_input = d_input.map(|(dx, store)| (dx.as_flattened_mut(), store));
        let d_output = d_output.as_flattened().as_flattened();
        self.stack.backward(x.as_flattened(), &mut saved.tape, d_output, ends, d_input, grads, threads);
    }
}

/// What [`Lstm::forward`] saves for [`Lstm::backward`], and the results of both. Reusable: its
/// buffers grow to the largest shape seen and are then reused without allocating.
#[derive(Clone, Debug, Default)]
pub struct LstmSaved<const H: usize, const D: usize = 1> {
    tape: Tape,
}

impl<const H: usize, const D: usize> LstmSaved<H, D> {
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

    /// The final cell states, `[layers·D, batch]` rows.
    pub fn c_n(&self) -> &[[f32; H]] {
        as_rows(self.tape.c_n())
    }

    /// After a backward: the gradient of the initial hidden states, `[layers·D, batch]` rows.
    pub fn d_h0(&self) -> &[[f32; H]] {
        as_rows(self.tape.d_h0())
    }

    /// After a backward: the gradient of the initial cell states, `[layers·D, batch]` rows.
    pub fn d_c0(&self) -> &[[f32; H]] {
        as_rows(self.tape.d_c0())
    }
}
