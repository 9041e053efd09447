//! Layer normalisation, optionally fused with the residual add that precedes it.
//!
//! In a post-norm (BERT-style) block the sequence `stream += sublayer; stream = LN(stream)` would
//! otherwise walk the hidden state three times (add, statistics, normalise). [`add_layer_norm`]
//! forms the sum while computing the mean, so each row is touched twice and stays in L1 between
//! the passes (a row is `D` floats, 1.5 KiB for D = 384).
//!
//! Statistics use a shifted two-pass scheme: the mean is computed as `x₀ + mean(x − x₀)` and the
//! variance as the mean of the squared *centred* values. Shifting by the row's first element
//! removes the catastrophic cancellation of `E[x²] − E[x]²` and makes a constant row produce an
//! exactly zero variance and exactly zero centred values, so the output is exactly `beta` even
//! with BERT's tiny `eps = 1e-12` (where a mean that is off by one ulp would otherwise be blown up
//! by `1/√eps = 1e6`).

use super::lane_sum;

/// `rows[i] = LayerNorm(rows[i]) * gamma + beta`, biased variance, `eps` inside the sqrt (PyTorch
/// semantics).
pub fn layer_norm<const D: usize>(rows: &mut [[f32; D]], gamma: &[f32; D], beta: &[f32; D], eps: f32) {
    for row in rows {
        normalise_row(row, gamma, beta, eps);
    }
}

/// Fused residual + LayerNorm: `stream[i] = LayerNorm(stream[i] + sublayer[i])` (post-norm BERT
/// style), with `gamma`/`beta`/`eps` as in [`layer_norm`].
/// Panics if lengths differ.
pub fn add_layer_norm<const D: usize>(
    stream: &mut [[f32; D]],
    sublayer: &[[f32; D]],
    gamma: &[f32; D],
    beta: &[f32; D],
    eps: f32,
) {
    assert_eq!(
        stream.len(),
        sublayer.len(),
        "add_layer_norm: stream has {} rows but sublayer has {}",
        stream.len(),
        sublayer.len()
    );
    for (row, sub) in stream.iter_mut().zip(sublayer) {
        for (x, &s) in row.iter_mut().zip(sub) {
            *x += s;
        }
        normalise_row(row, gamma, beta, eps);
    }
}

#[inline(always)]
fn normalise_row<const D: usize>(row: &mut [f32; D], gamma: &[f32; D], beta: &[f32; D], eps: f32) {
    if D == 0 {
        return;
    }
    let inv_d = 1.0 / D as f32;
    let shift = row[0];
    let mean = shift + lane_sum(row, |x| x - shift) * inv_d;
    let var = lane_sum(row, |x| {
        let c = x - mean;
        c * c
    }) * inv_d;
    let inv_std = 1.0 / (var + eps).sqrt();
    for ((x, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = (*x - mean) * inv_std * g + b;
    }
}
