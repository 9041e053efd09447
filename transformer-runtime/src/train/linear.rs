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
//! Both products are GEMMs ([`matmul_strided`]; `dyᵀ` is a strided view, not a copy). The input
//! gradient is split across threads by row blocks, the weight gradient by blocks of output
//! features, one block per thread, so no two threads write the same element and no reduction
//! across threads is needed: results do not depend on the thread count.

use crate::kernels::gemm::{matmul_strided, Strided};
use crate::train::Store;
use crate::Threads;

/// Rows per task: one contiguous block per thread. Each GEMM call packs its operands again, so
/// more, smaller blocks would repack the weight once per block (at 2048 rows and blocks of 64 that
/// was 13 % of a training step). How the rows are split does not change any element's arithmetic
/// (each is the same sum over the shared dimension), so results do not depend on the thread count.
fn row_block(rows: usize, threads: &Threads) -> usize {
    rows.div_ceil(threads.count()).max(1)
}

/// Output features (rows of `dW`) per task: one block per thread, a multiple of the GEMM's tile
/// heights.
fn feature_block(features: usize, threads: &Threads) -> usize {
    features.div_ceil(threads.count()).next_multiple_of(FEATURE_ALIGN)
}

const FEATURE_ALIGN: usize = 32;

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
    let (x, w) = (x.as_flattened(), Strided::row_major(weight, OUT, IN).t());
    let row_block = row_block(y.len(), threads);
    threads.for_each_chunk(y.as_flattened_mut(), row_block * OUT, |block, y| {
        let rows = y.len() / OUT;
        matmul_strided(Strided::row_major(&x[block * row_block * IN..][..rows * IN], rows, IN), w, y, false);
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(OUT) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
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
    let feature_block = feature_block(OUT, threads);
    match d_bias {
        Some(d_bias) => {
            assert_eq!(d_bias.len(), OUT, "linear {IN}->{OUT} backward: bias gradient is not [OUT]");
            threads.for_each_chunk_pair(
                d_weight,
                feature_block * IN,
                d_bias,
                feature_block,
                |block, dw, db| {
                    weight_gradient::<IN, OUT>(x, dy, block * feature_block, dw);
                    bias_gradient::<OUT>(dy, block * feature_block, db);
                },
            );
        }
        None => threads.for_each_chunk(d_weight, feature_block * IN, |block, dw| {
            weight_gradient::<IN, OUT>(x, dy, block * feature_block, dw);
        }),
    }
}

/// `dx = dy·W` (or `+=`), in row blocks across threads.
fn input_gradient<const IN: usize, const OUT: usize>(
    dy: &[f32],
    weight: &[f32],
    dx: &mut [f32],
    store: Store,
    threads: &Threads,
) {
    let w = Strided::row_major(weight, OUT, IN);
    let row_block = row_block(dx.len() / IN.max(1), threads);
    threads.for_each_chunk(dx, row_block * IN, |block, dx| {
        let rows = dx.len() / IN;
        let dy = Strided::row_major(&dy[block * row_block * OUT..][..rows * OUT], rows, OUT);
        matmul_strided(dy, w, dx, store == Store::Accumulate);
    });
}

/// `dW[first..first + n] += dy[:, first..first + n]ᵀ·x` for the `n = dw.len() / IN` output
/// features starting at `first`.
fn weight_gradient<const IN: usize, const OUT: usize>(x: &[f32], dy: &[f32], first: usize, dw: &mut [f32]) {
    let (features, rows) = (dw.len() / IN, x.len() / IN);
    if rows == 0 {
        return;
    }
    // dyᵀ restricted to these features: element (f, r) = dy[r·OUT + first + f].
    let dy_t = Strided { data: &dy[first..], rows: features, cols: rows, row_stride: 1, col_stride: OUT };
    matmul_strided(dy_t, Strided::row_major(x, rows, IN), dw, true);
}

/// `db[f] += Σ_r dy[r][first + f]`, summed in row order.
fn bias_gradient<const OUT: usize>(dy: &[f32], first: usize, db: &mut [f32]) {
    for row in dy.chunks_exact(OUT) {
        for (b, &g) in db.iter_mut().zip(&row[first..]) {
            *b += g;
        }
    }
}
