//! Backward of a linear layer `y = x·Wᵀ + b` (`W` stored `[OUT, IN]`, as `nn.Linear`):
//!
//! ```text
//! dx  = dy·W            [rows, IN]   (written or added, see Store)
//! dW += dyᵀ·x           [OUT, IN]
//! db += Σ_rows dy       [OUT]
//! ```
//!
//! An activation fused into the forward's epilogue is undone first with
//! [`activation_backward`](super::activation::activation_backward) on the saved pre-activation.
//!
//! Every product runs on the packed-B GEMM inference uses ([`matmul_packed_sums`], the CPU's best
//! microkernel chosen at run time). Training's weights change every step, so B is packed per call,
//! once for all threads, into a buffer kept per calling thread ([`with_scratch`]) and reused: a
//! warm step allocates nothing here. `dyᵀ` is copied once into a row-major buffer, so A is always
//! read in place.
//!
//! The input gradient and the forward are split across threads by row blocks, the weight gradient
//! by blocks of output features, one block per thread, so no two threads write the same element
//! and no reduction across threads is needed. How the rows are split does not change any element's
//! arithmetic (each is one multiply-add chain over the shared dimension, in order), so results do
//! not depend on the thread count.

use std::cell::RefCell;

use crate::kernels::gemm::{matmul_packed_sums, GemmIsa, PackedB};
use crate::train::Store;
use crate::Threads;

/// Rows per task: one contiguous block per thread.
fn row_block(rows: usize, threads: &Threads) -> usize {
    rows.div_ceil(threads.count()).max(1)
}

/// Output features (rows of `dW`) per task: one block per thread, a multiple of the GEMM's tile
/// heights.
fn feature_block(features: usize, threads: &Threads) -> usize {
    features.div_ceil(threads.count()).next_multiple_of(FEATURE_ALIGN)
}

const FEATURE_ALIGN: usize = 32;

/// The buffers a product packs its operands into, kept per calling thread and reused.
struct Scratch {
    /// B of the current product, packed for the CPU's GEMM.
    packed: PackedB,
    /// `dyᵀ`, row-major, for the weight gradient.
    transposed: Vec<f32>,
}

thread_local! {
    // Per thread rather than per trainer: the generated code calls these functions with the
    // weights it owns, and a buffer per calling thread is reused across every layer and step
    // without threading a workspace through each call. The worker threads only read it.
    static SCRATCH: RefCell<Scratch> =
        RefCell::new(Scratch { packed: PackedB::empty(), transposed: Vec::new() });
}

/// Runs `f` with this thread's packing buffers. Not re-entrant (no product calls another).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// The training forward `y = x·Wᵀ + b` over unpacked weights, in row blocks across threads.
///
/// Inference packs each weight once at load ([`crate::kernels::gemm::PackedB`]); in training the
/// weights change every step, so this reads them as they are (the GEMM packs per call). `weight`
/// is `[OUT, IN]`; `y` is overwritten. A fused activation is applied by the caller after keeping
/// the pre-activation (its backward needs it). Panics on inconsistent lengths.
pub fn linear_train<const IN: usize, const OUT: usize>(
    x: &[[f32; IN]],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [[f32; OUT]],
    threads: &Threads,
) {
    assert_eq!(y.len(), x.len(), "linear {IN}->{OUT}: {} inputs but {} output rows", x.len(), y.len());
    assert_eq!(weight.len(), IN * OUT, "linear {IN}->{OUT}: weight is not [OUT, IN]");
    if let Some(b) = bias {
        assert_eq!(b.len(), OUT, "linear {IN}->{OUT}: bias is not [OUT]");
    }
    let x = x.as_flattened();
    let row_block = row_block(y.len(), threads);
    with_scratch(|scratch| {
        // B = Wᵀ: element (i, o) is W[o][i].
        scratch.packed.refill(GemmIsa::detected(), IN, OUT, |i, o| weight[o * IN + i]);
        let packed = &scratch.packed;
        threads.for_each_chunk(y.as_flattened_mut(), row_block * OUT, |block, y| {
            let rows = y.len() / OUT;
            let x = &x[block * row_block * IN..][..rows * IN];
            matmul_packed_sums(x, rows, packed, y, bias, false);
        });
    });
}

/// Gradients of a linear layer given the gradient `dy` of its (pre-activation) output.
///
/// `weight` is `W` as `[OUT, IN]` row-major; `d_weight` (`[OUT, IN]`) and `d_bias` (`[OUT]`)
/// accumulate. `dx`, when asked for, is stored as its [`Store`] says; skip it (`None`) for a layer
/// whose input needs no gradient (the first layer over token embeddings still needs one; a frozen
/// input does not). Panics on inconsistent lengths (caller bugs).
pub fn linear_backward<const IN: usize, const OUT: usize>(
    x: &[[f32; IN]],
    dy: &[[f32; OUT]],
    weight: &[f32],
    dx: Option<(&mut [[f32; IN]], Store)>,
    d_weight: &mut [f32],
    d_bias: Option<&mut [f32]>,
    threads: &Threads,
) {
    let rows = x.len();
    assert_eq!(
        dy.len(),
        rows,
        "linear {IN}->{OUT} backward: {rows} inputs but {} output gradients",
        dy.len()
    );
    assert_eq!(weight.len(), IN * OUT, "linear {IN}->{OUT} backward: weight is not [OUT, IN]");
    assert_eq!(d_weight.len(), IN * OUT, "linear {IN}->{OUT} backward: weight gradient is not [OUT, IN]");
    let (x, dy) = (x.as_flattened(), dy.as_flattened());
    if let Some((dx, store)) = dx {
        assert_eq!(dx.len(), rows, "linear {IN}->{OUT} backward: dx has {} rows, not {rows}", dx.len());
        input_gradient::<IN, OUT>(dy, weight, dx.as_flattened_mut(), store, threads);
    }
    if let Some(d_bias) = d_bias {
        assert_eq!(d_bias.len(), OUT, "linear {IN}->{OUT} backward: bias gradient is not [OUT]");
        bias_gradient::<OUT>(dy, d_bias);
    }
    weight_gradient::<IN, OUT>(x, dy, d_weight, threads);
}

/// `dx = dy·W` (or `+=`), in row blocks across threads.
fn input_gradient<const IN: usize, const OUT: usize>(
    dy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
    store: Store,
    threads: &Threads,
) {
    let row_block = row_block(dx.len() / IN.max(1), threads);
    with_scratch(|scratch| {
        // B = W, `[OUT, IN]` as stored.
        scratch.packed.refill(GemmIsa::detected(), OUT, IN, |o, i| weight[o * IN + i]);
        let packed = &scratch.packed;
        threads.for_each_chunk(dx, row_block * IN, |block, dx| {
            let rows = dx.len() / IN;
            let dy = &dy[block * row_block * OUT..][..rows * OUT];
            matmul_packed_sums(dy, rows, packed, dx, None, store == Store::Accumulate);
        });
    });
}

/// `dW += dyᵀ·x`: `dyᵀ` copied row-major, `x` packed as B, blocks of output features across
/// threads.
fn weight_gradient<const IN: usize, const OUT: usize>(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    threads: &Threads,
) {
    let rows = x.len() / IN.max(1);
    if rows == 0 {
        return;
    }
    let feature_block = feature_block(OUT, threads);
    with_scratch(|scratch| {
        let Scratch { packed, transposed } = scratch;
        transpose_into::<OUT>(dy, rows, transposed);
        packed.refill(GemmIsa::detected(), rows, IN, |r, i| x[r * IN + i]);
        let (packed, dy_t) = (&*packed, &transposed[..]);
        threads.for_each_chunk(dw, feature_block * IN, |block, dw| {
            let features = dw.len() / IN;
            let a = &dy_t[block * feature_block * rows..][..features * rows];
            matmul_packed_sums(a, features, packed, dw, None, true);
        });
    });
}

/// `out[f·rows + r] = dy[r·OUT + f]`: `dy` (`[rows, OUT]`) transposed into a reused buffer, in
/// tiles of 16 × 16 so that the 16 rows read stay in L1 while each output row is written
/// contiguously.
fn transpose_into<const OUT: usize>(dy: &[f32], rows: usize, out: &mut Vec<f32>) {
    const TILE: usize = 16;
    out.clear();
    out.resize(rows * OUT, 0.0);
    for r0 in (0..rows).step_by(TILE) {
        let nr = TILE.min(rows - r0);
        let block = &dy[r0 * OUT..][..nr * OUT];
        for f in 0..OUT {
            let dst = &mut out[f * rows + r0..][..nr];
            for (r, d) in dst.iter_mut().enumerate() {
                *d = block[r * OUT + f];
            }
        }
    }
}

/// `db[f] += Σ_r dy[r][f]`, summed in row order.
fn bias_gradient<const OUT: usize>(dy: &[f32], db: &mut [f32]) {
    for row in dy.chunks_exact(OUT) {
        for (b, &g) in db.iter_mut().zip(row) {
            *b += g;
        }
    }
}
