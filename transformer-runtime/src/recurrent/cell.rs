//! What distinguishes an LSTM from a GRU: the pointwise update of one time step and its
//! derivative. Everything else (projections, the recurrent product, the order of steps and
//! layers) is [`super::stack`]'s, shared.

/// One recurrent cell's step for one sequence, over slices of one hidden width `H`.
///
/// Per row the stack hands the cell `x_proj = x·W_ihᵀ + b_ih` (`G·H` values, `G = GATES`) and
/// `hh = h_prev·W_hhᵀ + b_hh` (`G·H`), both gate blocks in torch's order.
pub(super) trait Cell {
    /// Gate blocks per row (LSTM: `i, f, g, o`; GRU: `r, z, n`).
    const GATES: usize;
    /// Whether the cell carries a second state (the LSTM's `c`).
    const CELL_STATE: bool;
    /// For messages: `"LSTM"`, `"GRU"`.
    const NAME: &'static str;

    /// One step, in place: `gates` holds `x_proj` on entry and the gate activations the backward
    /// reads on exit; `h` holds `h_prev` on entry and `h_t` on exit; `c` likewise `c_prev → c_t`
    /// (empty without a cell state); `keep` (`H`) receives the other value the backward reads (the
    /// LSTM's `c_t`, the GRU's `W_hn·h_prev + b_hn`).
    fn forward(gates: &mut [f32], hh: &[f32], h: &mut [f32], c: &mut [f32], keep: &mut [f32]);

    /// The step's derivative. Reads the saved `gates` and `keep`, the step's `h_prev` and `c_prev`
    /// (empty without a cell state). `dh` holds `∂L/∂h_t` on entry and, on exit, the part of
    /// `∂L/∂h_prev` that does not pass through `W_hh` (the stack adds that part); `dc` holds
    /// `∂L/∂c_t` from the later steps on entry and `∂L/∂c_prev` on exit. Writes the gradients of
    /// `x_proj` into `d_x_proj` and of `hh` into `d_hh` (`G·H` each; equal for an LSTM).
    fn backward(
        gates: &[f32],
        keep: &[f32],
        h_prev: &[f32],
        c_prev: &[f32],
        dh: &mut [f32],
        dc: &mut [f32],
        d_x_proj: &mut [f32],
        d_hh: &mut [f32],
    );
}

/// `1 / (1 + e^{−x})`.
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
