//! Backward of the sentence-embedding pooling ([`pool`]) and of the L2 normalisation
//! ([`normalize_rows`]) that follows it:
//!
//! ```text
//! mean   dx[r] = dy[b] / max(n_b, 1e-9)  for the n_b real rows r of sequence b, 0 for padding
//! cls    dx[r] = dy[b]                   for the first real row of b, 0 for every other
//! max    dx[r][d] = dy[b][d]             for the first real row holding column d's maximum
//! norm   dx = (dy − y·(y·dy)) / ‖x‖      y = x/‖x‖, when ‖x‖ ≥ 1e-12; dx = dy/1e-12 below
//! ```
//!
//! As sentence-transformers' `Pooling` and `Normalize` modules differentiate under autograd
//! (`torch.max` routes a column's gradient to the index it returned; `clamp_min` passes the
//! gradient where the norm is at least `eps`, so a vector below it is scaled by `1/eps` only).
//! The forwards keep nothing: mean and cls need only the batch's mask, max and the normalisation
//! recompute from their input.
//!
//! [`pool`]: crate::layers::pooling::pool
//! [`normalize_rows`]: crate::layers::pooling::normalize_rows

use crate::layers::pooling::Pooling;
use crate::train::Store;
use crate::Batch;

/// `F.normalize`'s `eps`: norms are clamped to at least this.
pub(crate) const NORM_EPS: f64 = 1e-12;

/// Gradient of [`pool`](crate::layers::pooling::pool) with respect to the hidden states: `dy` has
/// one row per sequence, `dx` one per row of `hidden` (`batch.rows()`), stored as `store` says
/// (padding rows, which receive no gradient, are written 0 or left as they are). `hidden` is the
/// forward's input; only [`Pooling::Max`] reads it. Panics on inconsistent lengths.
pub fn pool_backward<const D: usize>(
    hidden: &[[f32; D]],
    batch: &Batch,
    pooling: Pooling,
    dy: &[[f32; D]],
    dx: &mut [[f32; D]],
    store: Store,
) {
    let rows = batch.rows();
    assert_eq!(dy.len(), batch.batch_size(), "pool_backward: one gradient row per sequence");
    assert_eq!(dx.len(), rows, "pool_backward: dx has {} rows, the batch {rows}", dx.len());
    if pooling == Pooling::Max {
        assert_eq!(hidden.len(), rows, "pool_backward: hidden states do not fit the batch");
    }
    let seq = batch.seq_len();
    for (b, (g, dx)) in dy.iter().zip(dx.chunks_exact_mut(seq)).enumerate() {
        let mask = batch.mask_of(b);
        if store == Store::Overwrite {
            dx.fill([0.0; D]);
        }
        match pooling {
            Pooling::Mean => {
                let count = mask.iter().filter(|&&m| m).count();
                // The forward's division by the same clamped count.
                let denom = (count as f32).max(1e-9);
                for (dx, _) in dx.iter_mut().zip(mask).filter(|(_, &m)| m) {
                    for (d, &g) in dx.iter_mut().zip(g) {
                        *d += g / denom;
                    }
                }
            }
            Pooling::Cls => {
                let first = mask.iter().position(|&m| m).unwrap_or(0);
                add(&mut dx[first], g);
            }
            Pooling::Max => {
                let rows = &hidden[b * seq..][..seq];
                for d in 0..D {
                    let best =
                        (0..seq)
                            .filter(|&r| mask[r])
                            .reduce(|a, r| if rows[r][d] > rows[a][d] { r } else { a });
                    if let Some(r) = best {
                        dx[r][d] += g[d];
                    }
                }
            }
        }
    }
}

/// Gradient of [`normalize_rows`](crate::layers::pooling::normalize_rows) (`y = x / max(‖x‖,
/// 1e-12)` per row): `x` is the forward's input, `dx` stored as `store` says. Panics on
/// inconsistent lengths.
pub fn normalize_backward<const D: usize>(
    x: &[[f32; D]],
    dy: &[[f32; D]],
    dx: &mut [[f32; D]],
    store: Store,
) {
    assert!(
        x.len() == dy.len() && x.len() == dx.len(),
        "normalize_backward: {} inputs, {} gradients, {} outputs",
        x.len(),
        dy.len(),
        dx.len()
    );
    for ((x, dy), dx) in x.iter().zip(dy).zip(dx.iter_mut()) {
        let norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        normalize_row_backward(x, norm, &dy.map(f64::from), dx, store);
    }
}

/// One row of [`normalize_backward`] given the row's norm and the gradient of its output in
/// `f64` (the ranking loss's cosine similarity normalises the same way).
pub(crate) fn normalize_row_backward<const D: usize>(
    x: &[f32; D],
    norm: f64,
    dy: &[f64; D],
    dx: &mut [f32; D],
    store: Store,
) {
    if norm >= NORM_EPS {
        let inv = 1.0 / norm;
        let y_dot_dy: f64 = x.iter().zip(dy).map(|(&v, &g)| f64::from(v) * inv * g).sum();
        for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
            store.put(d, ((g - f64::from(v) * inv * y_dot_dy) * inv) as f32);
        }
    } else {
        for (d, &g) in dx.iter_mut().zip(dy) {
            store.put(d, (g / NORM_EPS) as f32);
        }
    }
}

fn add<const D: usize>(dst: &mut [f32; D], src: &[f32; D]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
