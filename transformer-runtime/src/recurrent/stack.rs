//! The recurrent stack both layers share: parameters, the forward over layers, directions and time
//! steps, what it saves, and backpropagation through time. The cell ([`Cell`]) supplies only the
//! pointwise step and its derivative.
//!
//! Rows are batch-first (`b·time + t`) in every buffer. Per time step the batch's states are
//! gathered in a contiguous `[batch, H]` scratch, the recurrent product runs on it as one small
//! GEMM against a weight packed once per call ([`matmul_packed`], which does not allocate), and
//! the cell updates each row in place.

use std::marker::PhantomData;

use super::cell::Cell;
use super::params::{self, Dims, ParamTensor, BIAS_HH, BIAS_IH, WEIGHT_HH, WEIGHT_IH};
use super::products;
use crate::kernels::gemm::{matmul_packed, Epilogue, GemmIsa, PackedB};
use crate::train::Store;
use crate::{Activation, Threads};

/// A stack of recurrent layers of cell `C`: dims and the flat parameters.
#[derive(Clone, Debug)]
pub(super) struct Stack<C> {
    dims: Dims,
    tensors: Vec<ParamTensor>,
    values: Vec<f32>,
    cell: PhantomData<fn() -> C>,
}

/// One layer and direction's four tensors (weights `[G·H, in]`, `[G·H, H]`; biases `[G·H]`).
struct Direction<'a> {
    weight_ih: &'a [f32],
    weight_hh: &'a [f32],
    bias_ih: &'a [f32],
    bias_hh: &'a [f32],
}

impl<C: Cell> Stack<C> {
    /// A stack of `layers` layers over `values` laid out as [`params::layout`] says.
    pub fn from_values(dims: Dims, values: impl FnOnce(&[ParamTensor]) -> Vec<f32>) -> Self {
        assert!(dims.layers > 0, "{}: a stack needs at least one layer", C::NAME);
        let tensors = params::layout(dims);
        let values = values(&tensors);
        let len = tensors.last().map_or(0, |t| t.range().end);
        assert_eq!(values.len(), len, "{}: {} parameter values, expected {len}", C::NAME, values.len());
        Stack { dims, tensors, values, cell: PhantomData }
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    pub fn tensors(&self) -> &[ParamTensor] {
        &self.tensors
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    fn direction(&self, layer: usize, direction: usize) -> Direction<'_> {
        let first = params::first_tensor(self.dims, layer, direction);
        let part = |i: usize| &self.values[self.tensors[first + i].range()];
        Direction {
            weight_ih: part(WEIGHT_IH),
            weight_hh: part(WEIGHT_HH),
            bias_ih: part(BIAS_IH),
            bias_hh: part(BIAS_HH),
        }
    }

    /// The gradients of one layer and direction's four tensors, as disjoint slices of `grads`
    /// (they are consecutive in the layout).
    fn direction_grads<'g>(
        &self,
        grads: &'g mut [f32],
        layer: usize,
        direction: usize,
    ) -> [&'g mut [f32]; 4] {
        let first = params::first_tensor(self.dims, layer, direction);
        let tensors = &self.tensors[first..first + 4];
        let rest = &mut grads[tensors[0].offset..tensors[3].range().end];
        let (weight_ih, rest) = rest.split_at_mut(tensors[WEIGHT_IH].len());
        let (weight_hh, rest) = rest.split_at_mut(tensors[WEIGHT_HH].len());
        let (bias_ih, bias_hh) = rest.split_at_mut(tensors[BIAS_IH].len());
        [weight_ih, weight_hh, bias_ih, bias_hh]
    }

    /// Values in a `[layers·D, batch, H]` state tensor.
    fn state_len(&self, batch: usize) -> usize {
        self.dims.layers * self.dims.directions * batch * self.dims.hidden
    }

    /// The block of a state tensor holding `layer`'s `direction`: `batch` rows of `H`.
    fn state_block(&self, layer: usize, direction: usize, batch: usize) -> std::ops::Range<usize> {
        let len = batch * self.dims.hidden;
        let start = (layer * self.dims.directions + direction) * len;
        start..start + len
    }

    /// Checks a state tensor's length against `[layers·D, batch, H]`.
    fn check_state(&self, what: &str, state: Option<&[f32]>, batch: usize) {
        if let Some(state) = state {
            let d = self.dims;
            assert_eq!(
                state.len(),
                self.state_len(batch),
                "{}: {what} has {} values, expected [layers·D = {}, batch = {batch}, H = {}]",
                C::NAME,
                state.len(),
                d.layers * d.directions,
                d.hidden
            );
        }
    }

    /// The forward pass over `x` (`[batch·time, IN]`, batch-first), from the initial states `h0`
    /// and `c0` (zeros when `None`), saving into `tape` everything the backward reads. The
    /// outputs and final states are then in the tape.
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        h0: Option<&[f32]>,
        c0: Option<&[f32]>,
        tape: &mut Tape,
        threads: &Threads,
    ) {
        let d = self.dims;
        let (h, ow) = (d.hidden, d.output_width());
        assert!(batch > 0, "{}: the batch must have at least one sequence", C::NAME);
        assert!(
            x.len().is_multiple_of(batch * d.input) && !x.is_empty(),
            "{}: the input has {} rows of {}, not batch = {batch} sequences of one or more steps",
            C::NAME,
            x.len() / d.input,
            d.input
        );
        assert!(C::CELL_STATE || c0.is_none(), "{}: has no cell state c0", C::NAME);
        self.check_state("h0", h0, batch);
        self.check_state("c0", c0, batch);
        let time = x.len() / d.input / batch;
        tape.prepare_forward(d, C::CELL_STATE, batch, time);

        let Tape { layers, scratch, c0: saved_c0, h_n, c_n, .. } = tape;
        match c0 {
            Some(c0) => saved_c0.copy_from_slice(c0),
            None => saved_c0.fill(0.0),
        }
        for layer in 0..d.layers {
            let (below, rest) = layers.split_at_mut(layer);
            let current = &mut rest[0];
            let input: &[f32] = if layer == 0 { x } else { &below[layer - 1].output };
            for (direction, saved) in current.directions.iter_mut().enumerate() {
                let w = self.direction(layer, direction);
                products::project(
                    input,
                    d.input_of(layer),
                    w.weight_ih,
                    w.bias_ih,
                    &mut saved.gates,
                    threads,
                );
            }
            let saved_c0 = &*saved_c0;
            threads.for_each_chunk_pair(
                &mut current.directions,
                1,
                scratch,
                1,
                |direction, saved, scratch| {
                    let block = self.state_block(layer, direction, batch);
                    let h0 = h0.map(|h0| &h0[block.clone()]);
                    let c0 = if C::CELL_STATE { &saved_c0[block] } else { &[] };
                    self.recur(layer, direction, (batch, time), h0, c0, &mut saved[0], &mut scratch[0]);
                },
            );
            for (direction, scratch) in scratch.iter().enumerate() {
                let out = current.output.chunks_exact_mut(ow).map(|row| &mut row[direction * h..][..h]);
                out.zip(scratch.hidden.chunks_exact(h)).for_each(|(to, from)| to.copy_from_slice(from));
                let block = self.state_block(layer, direction, batch);
                h_n[block.clone()].copy_from_slice(&scratch.h);
                if C::CELL_STATE {
                    c_n[block].copy_from_slice(&scratch.c);
                }
            }
        }
    }

    /// One layer and direction's time steps, in its order (the reverse direction from the last
    /// step). `gates` already holds the input projection of every step.
    fn recur(
        &self,
        layer: usize,
        direction: usize,
        (batch, time): (usize, usize),
        h0: Option<&[f32]>,
        c0: &[f32],
        saved: &mut DirectionTape,
        s: &mut Scratch,
    ) {
        let (h, gw) = (self.dims.hidden, self.dims.gate_width());
        let w = self.direction(layer, direction);
        // `W_hhᵀ` (`[H, G·H]`) as the product's right operand, packed once for every step.
        let w_hh_t = PackedB::from_fn(GemmIsa::detected(), h, gw, |k, j| w.weight_hh[j * h + k]);
        let epilogue = Epilogue::new(Some(w.bias_hh), Activation::Identity);
        match h0 {
            Some(h0) => s.h.copy_from_slice(h0),
            None => s.h.fill(0.0),
        }
        s.c.copy_from_slice(c0);
        for step in 0..time {
            let t = if direction == 1 { time - 1 - step } else { step };
            matmul_packed(&s.h, batch, &w_hh_t, &mut s.hh, epilogue);
            for b in 0..batch {
                let row = b * time + t;
                let h_row = &mut s.h[b * h..][..h];
                saved.h_prev[row * h..][..h].copy_from_slice(h_row);
                let c_row: &mut [f32] = if C::CELL_STATE { &mut s.c[b * h..][..h] } else { &mut [] };
                let gates = &mut saved.gates[row * gw..][..gw];
                C::forward(gates, &s.hh[b * gw..][..gw], h_row, c_row, &mut saved.keep[row * h..][..h]);
                s.hidden[row * h..][..h].copy_from_slice(h_row);
            }
        }
    }

    /// Backpropagation through time. `x` and `tape` are the forward's input and what it saved;
    /// `d_output` is the gradient of the outputs (`[batch·time, D·H]`), `d_h_n` and `d_c_n` those
    /// of the final states (zeros when `None`). Parameter gradients are added into `grads` (the
    /// parameters' layout); `d_input`, when asked for, is stored as its [`Store`] says; the
    /// initial states' gradients are left in the tape.
    pub fn backward(
        &self,
        x: &[f32],
        tape: &mut Tape,
        d_output: &[f32],
        (d_h_n, d_c_n): (Option<&[f32]>, Option<&[f32]>),
        d_input: Option<(&mut [f32], Store)>,
        grads: &mut [f32],
        threads: &Threads,
    ) {
        let d = self.dims;
        let (h, gw, ow) = (d.hidden, d.gate_width(), d.output_width());
        assert_eq!(
            tape.dims,
            Some(d),
            "{}: backward without a forward of this layer into the saved state",
            C::NAME
        );
        let (batch, time) = (tape.batch, tape.time);
        let rows = batch * time;
        assert_eq!(
            x.len(),
            rows * d.input,
            "{}: backward's input has {} rows of {}, the forward's had {rows}",
            C::NAME,
            x.len() / d.input,
            d.input
        );
        assert_eq!(
            d_output.len(),
            rows * ow,
            "{}: the output gradient has {} values, expected [batch·time = {rows}, D·H = {ow}]",
            C::NAME,
            d_output.len()
        );
        assert_eq!(
            grads.len(),
            self.values.len(),
            "{}: the gradient buffer has {} values, the parameters {}",
            C::NAME,
            grads.len(),
            self.values.len()
        );
        assert!(C::CELL_STATE || d_c_n.is_none(), "{}: has no cell state c_n", C::NAME);
        self.check_state("the gradient of h_n", d_h_n, batch);
        self.check_state("the gradient of c_n", d_c_n, batch);
        if let Some((dx, _)) = &d_input {
            assert_eq!(
                dx.len(),
                x.len(),
                "{}: the input gradient has {} values, the input {}",
                C::NAME,
                dx.len(),
                x.len()
            );
        }
        tape.prepare_backward(d, C::CELL_STATE);

        let Tape { layers, scratch, c0, d_h0, d_c0, d_above, d_below, .. } = tape;
        let mut d_input = d_input;
        for layer in (0..d.layers).rev() {
            let current = &layers[layer];
            let input: &[f32] = if layer == 0 { x } else { &layers[layer - 1].output };
            let d_y: &[f32] = if layer == d.layers - 1 { d_output } else { d_above };
            let c0 = &*c0;
            threads.for_each_chunk(scratch, 1, |direction, s| {
                let block = self.state_block(layer, direction, batch);
                let ends = (d_h_n.map(|g| &g[block.clone()]), d_c_n.map(|g| &g[block.clone()]));
                let c0 = if C::CELL_STATE { &c0[block] } else { &[] };
                let saved = &current.directions[direction];
                self.recur_backward(layer, direction, (batch, time), d_y, ends, c0, saved, &mut s[0]);
            });
            for (direction, s) in scratch.iter().enumerate() {
                let block = self.state_block(layer, direction, batch);
                d_h0[block.clone()].copy_from_slice(&s.dh);
                if C::CELL_STATE {
                    d_c0[block].copy_from_slice(&s.dc);
                }
                let saved = &current.directions[direction];
                let [dw_ih, dw_hh, db_ih, db_hh] = self.direction_grads(grads, layer, direction);
                products::weight_gradient(&s.d_x_proj, input, d.input_of(layer), dw_ih, db_ih, threads);
                products::weight_gradient(&s.d_hh, &saved.h_prev, h, dw_hh, db_hh, threads);
            }
            // The gradient of this layer's input: the layer below's output, or the caller's.
            let (dx, accumulate): (&mut [f32], bool) = if layer > 0 {
                (&mut d_below[..], false)
            } else if let Some((dx, store)) = d_input.as_mut() {
                (&mut dx[..], *store == Store::Accumulate)
            } else {
                continue;
            };
            for (direction, s) in scratch.iter().enumerate() {
                let w_ih = self.direction(layer, direction).weight_ih;
                products::input_gradient(&s.d_x_proj, gw, w_ih, dx, accumulate || direction > 0, threads);
            }
            std::mem::swap(d_above, d_below);
        }
    }

    /// One layer and direction's steps backwards (the forward direction from the last step, the
    /// reverse one from the first), leaving the gates' gradients of every row in the scratch and
    /// the initial states' gradients in `s.dh` / `s.dc`.
    fn recur_backward(
        &self,
        layer: usize,
        direction: usize,
        (batch, time): (usize, usize),
        d_y: &[f32],
        (d_h_n, d_c_n): (Option<&[f32]>, Option<&[f32]>),
        c0: &[f32],
        saved: &DirectionTape,
        s: &mut Scratch,
    ) {
        let d = self.dims;
        let (h, gw, ow) = (d.hidden, d.gate_width(), d.output_width());
        // `∂h_prev = ∂hh·W_hh`: `W_hh` (`[G·H, H]`) is the right operand as stored.
        let w_hh = PackedB::pack(self.direction(layer, direction).weight_hh, gw, h);
        match d_h_n {
            Some(g) => s.dh.copy_from_slice(g),
            None => s.dh.fill(0.0),
        }
        match d_c_n {
            Some(g) => s.dc.copy_from_slice(g),
            None => s.dc.fill(0.0),
        }
        for step in 0..time {
            let t = if direction == 1 { step } else { time - 1 - step };
            // The state this step started from: the previous step's in this direction's order.
            let prev = if direction == 1 { t + 1 } else { t.wrapping_sub(1) };
            for b in 0..batch {
                let row = b * time + t;
                let dh = &mut s.dh[b * h..][..h];
                dh.iter_mut().zip(&d_y[row * ow + direction * h..][..h]).for_each(|(g, y)| *g += y);
                let (c_prev, dc): (&[f32], &mut [f32]) = if !C::CELL_STATE {
                    (&[], &mut [])
                } else if prev < time {
                    (&saved.keep[(b * time + prev) * h..][..h], &mut s.dc[b * h..][..h])
                } else {
                    (&c0[b * h..][..h], &mut s.dc[b * h..][..h])
                };
                let d_step = &mut s.d_step[b * gw..][..gw];
                C::backward(
                    &saved.gates[row * gw..][..gw],
                    &saved.keep[row * h..][..h],
                    &saved.h_prev[row * h..][..h],
                    c_prev,
                    dh,
                    dc,
                    &mut s.d_x_proj[row * gw..][..gw],
                    d_step,
                );
                s.d_hh[row * gw..][..gw].copy_from_slice(d_step);
            }
            matmul_packed(&s.d_step, batch, &w_hh, &mut s.dh_recurrent, Epilogue::NONE);
            s.dh.iter_mut().zip(&s.dh_recurrent).for_each(|(g, r)| *g += r);
        }
    }
}

/// What a forward pass saves for its backward, and the scratch both use: flat buffers sized by
/// the last shape, grown when a larger one comes and otherwise reused (no allocation after the
/// first call at a shape, apart from the per-call weight packing and GEMM buffers).
#[derive(Clone, Debug, Default)]
pub(super) struct Tape {
    /// The stack and shape of the last forward (`None` before one).
    dims: Option<Dims>,
    batch: usize,
    time: usize,
    /// Per layer.
    layers: Vec<LayerTape>,
    /// Per direction (reused by every layer).
    scratch: Vec<Scratch>,
    /// `[layers·D, batch, H]` each: the initial cell state (zeros when not given; LSTM only), the
    /// final states, the initial states' gradients.
    c0: Vec<f32>,
    h_n: Vec<f32>,
    c_n: Vec<f32>,
    d_h0: Vec<f32>,
    d_c0: Vec<f32>,
    /// `[batch·time, D·H]`: the gradient of the current layer's output and of its input.
    d_above: Vec<f32>,
    d_below: Vec<f32>,
}

#[derive(Clone, Debug, Default)]
struct LayerTape {
    /// `[batch·time, D·H]`: the layer's output (the next layer's input).
    output: Vec<f32>,
    directions: Vec<DirectionTape>,
}

#[derive(Clone, Debug, Default)]
struct DirectionTape {
    /// `[batch·time, G·H]`: the gate activations of every step.
    gates: Vec<f32>,
    /// `[batch·time, H]`: the cell's other saved value (LSTM `c_t`, GRU `W_hn·h_prev + b_hn`).
    keep: Vec<f32>,
    /// `[batch·time, H]`: the state each step started from.
    h_prev: Vec<f32>,
}

/// One direction's working buffers.
#[derive(Clone, Debug, Default)]
struct Scratch {
    /// `[batch, H]`: the running states.
    h: Vec<f32>,
    c: Vec<f32>,
    /// `[batch, G·H]`: a step's `h·W_hhᵀ + b_hh`.
    hh: Vec<f32>,
    /// `[batch·time, H]`: this direction's outputs, before they are interleaved.
    hidden: Vec<f32>,
    /// Backward. `[batch·time, G·H]`: the gradients of the input projection and of the recurrent
    /// product of every row.
    d_x_proj: Vec<f32>,
    d_hh: Vec<f32>,
    /// `[batch, H]`: the running gradients of the states.
    dh: Vec<f32>,
    dc: Vec<f32>,
    /// `[batch, G·H]` and `[batch, H]`: one step's `d_hh` and `d_hh·W_hh`.
    d_step: Vec<f32>,
    dh_recurrent: Vec<f32>,
}

/// `buffer` as `len` zeros, keeping its allocation when it is large enough.
fn sized(buffer: &mut Vec<f32>, len: usize) {
    buffer.clear();
    buffer.resize(len, 0.0);
}

impl Tape {
    fn prepare_forward(&mut self, d: Dims, cell_state: bool, batch: usize, time: usize) {
        let (h, gw, rows) = (d.hidden, d.gate_width(), batch * time);
        self.dims = Some(d);
        (self.batch, self.time) = (batch, time);
        self.layers.resize_with(d.layers, LayerTape::default);
        for layer in &mut self.layers {
            sized(&mut layer.output, rows * d.output_width());
            layer.directions.resize_with(d.directions, DirectionTape::default);
            for direction in &mut layer.directions {
                sized(&mut direction.gates, rows * gw);
                sized(&mut direction.keep, rows * h);
                sized(&mut direction.h_prev, rows * h);
            }
        }
        self.scratch.resize_with(d.directions, Scratch::default);
        for s in &mut self.scratch {
            sized(&mut s.h, batch * h);
            sized(&mut s.c, if cell_state { batch * h } else { 0 });
            sized(&mut s.hh, batch * gw);
            sized(&mut s.hidden, rows * h);
        }
        let states = d.layers * d.directions * batch * h;
        sized(&mut self.h_n, states);
        sized(&mut self.c0, if cell_state { states } else { 0 });
        sized(&mut self.c_n, if cell_state { states } else { 0 });
    }

    fn prepare_backward(&mut self, d: Dims, cell_state: bool) {
        let (h, gw, rows) = (d.hidden, d.gate_width(), self.batch * self.time);
        for s in &mut self.scratch {
            sized(&mut s.d_x_proj, rows * gw);
            sized(&mut s.d_hh, rows * gw);
            sized(&mut s.dh, self.batch * h);
            sized(&mut s.dc, if cell_state { self.batch * h } else { 0 });
            sized(&mut s.d_step, self.batch * gw);
            sized(&mut s.dh_recurrent, self.batch * h);
        }
        let states = d.layers * d.directions * self.batch * h;
        sized(&mut self.d_h0, states);
        sized(&mut self.d_c0, if cell_state { states } else { 0 });
        sized(&mut self.d_above, rows * d.output_width());
        sized(&mut self.d_below, rows * d.output_width());
    }

    /// Sequences and steps of the last forward (0 before one).
    pub fn batch_time(&self) -> (usize, usize) {
        (self.batch, self.time)
    }

    /// The last layer's output, `[batch·time, D·H]` (empty before a forward).
    pub fn output(&self) -> &[f32] {
        self.layers.last().map_or(&[], |layer| &layer.output)
    }

    pub fn h_n(&self) -> &[f32] {
        &self.h_n
    }

    pub fn c_n(&self) -> &[f32] {
        &self.c_n
    }

    pub fn d_h0(&self) -> &[f32] {
        &self.d_h0
    }

    pub fn d_c0(&self) -> &[f32] {
        &self.d_c0
    }
}
