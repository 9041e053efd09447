//! The over-all-rows products of a recurrent layer, at widths known only at run time (layers
//! above the first read `D·H` wide inputs): the input projection, the weight gradients and the
//! input gradient. Each is [`matmul_strided`] split across threads the way
//! [`crate::train::linear`] splits its products (rows for the projection and the input gradient,
//! output features for the weight gradient), so no two threads write one element and results do
//! not depend on the thread count.

use crate::kernels::gemm::{matmul_strided, Strided};
use crate::Threads;

/// Rows per task: one contiguous block per thread.
fn row_block(rows: usize, threads: &Threads) -> usize {
    rows.div_ceil(threads.count()).max(1)
}

/// `y = x·Wᵀ + b` for `x` `[rows, inp]`, `W` `[out, inp]`, `b` `[out]`, `y` `[rows, out]`
/// (overwritten).
pub(super) fn project(x: &[f32], inp: usize, weight: &[f32], bias: &[f32], y: &mut [f32], threads: &Threads) {
    let out = bias.len();
    let rows = y.len() / out;
    assert_eq!(x.len(), rows * inp, "recurrent projection: input is not [{rows}, {inp}]");
    assert_eq!(weight.len(), out * inp, "recurrent projection: weight is not [{out}, {inp}]");
    let w = Strided::row_major(weight, out, inp).t();
    let row_block = row_block(rows, threads);
    threads.for_each_chunk(y, row_block * out, |block, y| {
        let n = y.len() / out;
        matmul_strided(Strided::row_major(&x[block * row_block * inp..][..n * inp], n, inp), w, y, false);
        for row in y.chunks_exact_mut(out) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    });
}

/// `dx (+)= dy·W` for `dy` `[rows, out]`, `W` `[out, inp]`, `dx` `[rows, inp]`: added to `dx` when
/// `accumulate`, else written.
pub(super) fn input_gradient(
    dy: &[f32],
    out: usize,
    weight: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    threads: &Threads,
) {
    let inp = weight.len() / out;
    let rows = dx.len() / inp;
    assert_eq!(dy.len(), rows * out, "recurrent input gradient: dy is not [{rows}, {out}]");
    let w = Strided::row_major(weight, out, inp);
    let row_block = row_block(rows, threads);
    threads.for_each_chunk(dx, row_block * inp, |block, dx| {
        let n = dx.len() / inp;
        let dy = Strided::row_major(&dy[block * row_block * out..][..n * out], n, out);
        matmul_strided(dy, w, dx, accumulate);
    });
}

/// Output features (rows of `dW`) per task: one block per thread, a multiple of the GEMM tiles.
fn feature_block(features: usize, threads: &Threads) -> usize {
    features.div_ceil(threads.count()).next_multiple_of(FEATURE_ALIGN)
}

const FEATURE_ALIGN: usize = 8;

/// `dW += dyᵀ·x` and `db += Σ_rows dy` for `dy` `[rows, out]`, `x` `[rows, inp]`, `dW` `[out, inp]`,
/// `db` `[out]`: every row's contribution in one GEMM.
pub(super) fn weight_gradient(
    dy: &[f32],
    x: &[f32],
    inp: usize,
    d_weight: &mut [f32],
    d_bias: &mut [f32],
    threads: &Threads,
) {
    let out = d_bias.len();
    let rows = dy.len() / out;
    assert_eq!(x.len(), rows * inp, "recurrent weight gradient: input is not [{rows}, {inp}]");
    assert_eq!(d_weight.len(), out * inp, "recurrent weight gradient: dW is not [{out}, {inp}]");
    if rows == 0 {
        return;
    }
    let block = feature_block(out, threads);
    threads.for_each_chunk_pair(d_weight, block * inp, d_bias, block, |index, dw, db| {
        let (first, features) = (index * block, db.len());
        // dyᵀ restricted to these features: element (f, r) = dy[r·out + first + f].
        let dy_t = Strided { data: &dy[first..], rows: features, cols: rows, row_stride: 1, col_stride: out };
        matmul_strided(dy_t, Strided::row_major(x, rows, inp), dw, true);
        for row in dy.chunks_exact(out) {
            db.iter_mut().zip(&row[first..]).for_each(|(b, g)| *b += g);
        }
    });
}
