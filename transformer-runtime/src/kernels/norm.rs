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
    let (mean, inv_std) = layer_norm_stats(row, eps);
    for ((x, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *x = (*x - mean) * inv_std * g + b;
    }
}

/// A row's mean and `1/√(var + eps)` by the shifted two-pass scheme of the module comment; shared
/// with the training forward, which saves them for the backward pass.
#[inline(always)]
pub(crate) fn layer_norm_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let inv_d = 1.0 / row.len() as f32;
    let shift = row[0];
    let mean = shift + lane_sum(row, |x| x - shift) * inv_d;
    let var = lane_sum(row, |x| {
        let c = x - mean;
        c * c
    }) * inv_d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `rows[i] = rows[i] / sqrt(mean(rows[i]²) + eps) * weight`: RMSNorm as LLaMA/Mistral use it
/// (HF `LlamaRMSNorm`: `weight * (x * rsqrt(mean(x²) + eps))`, all in f32 for an f32 model).
///
/// The mean square is accumulated in f32 lanes. When `mean(x²) + eps` is not a normal f32 — the
/// squares overflowed (|x| beyond ~1e19), or the row is zero or subnormal-small with `eps = 0` —
/// the row is redone with f64 statistics, so finite input never gives NaN or ±∞: a zero row gives
/// zeros for any `eps ≥ 0`, a huge row its normalised value.
pub fn rms_norm<const D: usize>(rows: &mut [[f32; D]], weight: &[f32; D], eps: f32) {
    for row in rows {
        rms_row(row, weight, eps);
    }
}

/// `out[i] = RmsNorm(input[i])` as in [`rms_norm`], leaving `input` as it is (pre-norm: the residual
/// stream stays raw). Panics if the row counts differ.
pub fn rms_norm_into<const D: usize>(input: &[[f32; D]], out: &mut [[f32; D]], weight: &[f32; D], eps: f32) {
    assert_eq!(
        input.len(),
        out.len(),
        "rms_norm_into: input has {} rows but out has {}",
        input.len(),
        out.len()
    );
    for (src, dst) in input.iter().zip(out) {
        *dst = *src;
        rms_row(dst, weight, eps);
    }
}

#[inline(always)]
fn rms_row<const D: usize>(row: &mut [f32; D], weight: &[f32; D], eps: f32) {
    if D == 0 {
        return;
    }
    let denom = mean_square_plus_eps(row, eps);
    if denom.is_normal() {
        // denom ≥ f32::MIN_POSITIVE, so inv ≤ 9.2e18 and |x·inv| ≤ √D·(1 + rounding).
        let inv = 1.0 / denom.sqrt();
        for (x, &w) in row.iter_mut().zip(weight) {
            *x = w * (*x * inv);
        }
    } else {
        rms_row_f64(row, weight, eps);
    }
}

/// `mean(row²) + eps` in f32 lanes: RMSNorm's denominator before the square root (shared with
/// the training forward, which saves its inverse square root).
#[inline(always)]
pub(crate) fn mean_square_plus_eps(row: &[f32], eps: f32) -> f32 {
    lane_sum(row, |x| x * x) * (1.0 / row.len() as f32) + eps
}

/// `1/√(mean(row²) + eps)` in f64, for rows whose f32 denominator is not a normal number. A zero
/// row with eps = 0 has nothing to normalise: 0, so it stays zero (0·w), never 0/0. (NaN in the
/// row still reaches the output through the multiply: NaN input is not sanitised.)
#[cold]
pub(crate) fn rms_inverse_f64(row: &[f32], eps: f32) -> f64 {
    let mean = row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / row.len() as f64;
    let denom = mean + f64::from(eps);
    if denom > 0.0 {
        1.0 / denom.sqrt()
    } else {
        0.0
    }
}

/// The rare-path twin of [`rms_row`]: statistics and scaling in f64, where the square of any
/// finite f32 neither overflows nor underflows.
#[cold]
#[inline(never)]
fn rms_row_f64<const D: usize>(row: &mut [f32; D], weight: &[f32; D], eps: f32) {
    let inv = rms_inverse_f64(row, eps);
    for (x, &w) in row.iter_mut().zip(weight) {
        *x = w * ((f64::from(*x) * inv) as f32);
    }
}
