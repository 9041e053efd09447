//! Backward of LayerNorm and RMSNorm, and the training forwards that save their statistics.
//!
//! With `x̂ = (x − μ)·r` (`r = 1/√(var + eps)`), `y = γ∘x̂ + β` and `g = dy∘γ`, PyTorch's
//! `native_layer_norm_backward` computes
//!
//! ```text
//! dx  = r·(g − mean(g) − x̂·mean(g∘x̂))
//! dγ += Σ_rows dy∘x̂        dβ += Σ_rows dy
//! ```
//!
//! and for RMSNorm (`y = w∘x·r`, `r = 1/√(mean(x²) + eps)`, autograd through HF's `LlamaRMSNorm`):
//!
//! ```text
//! dx  = r·(g − x·r²·mean(g∘x))      with g = dy∘w
//! dw += Σ_rows dy∘x·r
//! ```
//!
//! The training forwards ([`layer_norm_train`], [`rms_norm_train`]) compute exactly what the
//! inference kernels compute (the same statistics function, the same operation order), so a
//! trained model evaluates bit-identically in either, and keep `μ` and `r` per row.
//!
//! Rows are processed serially: the parameter gradients sum over rows, and a norm is a few
//! hundred flops per row next to the GEMMs around it.

use crate::kernels::norm::{layer_norm_stats, mean_square_plus_eps, rms_inverse_f64, rms_norm_into};
use crate::train::Store;

/// What a norm's backward needs from its forward, per row.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NormStats {
    /// The row's mean (LayerNorm); 0 for RMSNorm, which does not centre.
    pub mean: f32,
    /// `1/√(var + eps)` (LayerNorm) or `1/√(mean(x²) + eps)` (RMSNorm).
    pub rstd: f32,
}

/// `out[i] = LayerNorm(x[i])·γ + β`, as [`crate::kernels::norm::layer_norm`] computes it, saving
/// each row's statistics in `stats`. Panics on inconsistent lengths.
pub fn layer_norm_train<const D: usize>(
    x: &[[f32; D]],
    out: &mut [[f32; D]],
    gamma: &[f32; D],
    beta: &[f32; D],
    eps: f32,
    stats: &mut [NormStats],
) {
    check_rows("layer_norm_train", x.len(), out.len(), stats.len());
    if D == 0 {
        return;
    }
    for ((row, y), s) in x.iter().zip(out.iter_mut()).zip(stats.iter_mut()) {
        let (mean, rstd) = layer_norm_stats(row, eps);
        *s = NormStats { mean, rstd };
        for (((y, &x), &g), &b) in y.iter_mut().zip(row).zip(gamma).zip(beta) {
            *y = (x - mean) * rstd * g + b;
        }
    }
}

/// Gradients of LayerNorm given `dy`: `dx` stored as `store` says, `d_gamma` and `d_beta`
/// accumulate. `x` is the forward's input and `stats` what [`layer_norm_train`] saved for it.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward<const D: usize>(
    x: &[[f32; D]],
    stats: &[NormStats],
    gamma: &[f32; D],
    dy: &[[f32; D]],
    dx: &mut [[f32; D]],
    store: Store,
    d_gamma: &mut [f32; D],
    d_beta: &mut [f32; D],
) {
    check_rows("layer_norm_backward", x.len(), dy.len(), stats.len());
    assert_eq!(dx.len(), x.len(), "layer_norm_backward: dx has {} rows, not {}", dx.len(), x.len());
    let inv_d = 1.0 / D as f32;
    for (((row, s), dy), dx) in x.iter().zip(stats).zip(dy).zip(dx.iter_mut()) {
        let x_hat = |i: usize| (row[i] - s.mean) * s.rstd;
        let (mut sum_g, mut sum_g_xhat) = (0.0f32, 0.0f32);
        for i in 0..D {
            let g = dy[i] * gamma[i];
            sum_g += g;
            sum_g_xhat += g * x_hat(i);
            d_gamma[i] += dy[i] * x_hat(i);
            d_beta[i] += dy[i];
        }
        let (mean_g, mean_g_xhat) = (sum_g * inv_d, sum_g_xhat * inv_d);
        for i in 0..D {
            let g = dy[i] * gamma[i];
            store.put(&mut dx[i], s.rstd * (g - mean_g - x_hat(i) * mean_g_xhat));
        }
    }
}

/// `out[i] = x[i]·r·w` with `r = 1/√(mean(x[i]²) + eps)`: the inference kernel
/// ([`rms_norm_into`]), plus each row's `r` in `stats` (from the same denominator, rounded to f32
/// on the rare f64 path).
pub fn rms_norm_train<const D: usize>(
    x: &[[f32; D]],
    out: &mut [[f32; D]],
    weight: &[f32; D],
    eps: f32,
    stats: &mut [NormStats],
) {
    check_rows("rms_norm_train", x.len(), out.len(), stats.len());
    if D == 0 {
        return;
    }
    rms_norm_into(x, out, weight, eps);
    for (row, s) in x.iter().zip(stats.iter_mut()) {
        let denom = mean_square_plus_eps(row, eps);
        let rstd = if denom.is_normal() { 1.0 / denom.sqrt() } else { rms_inverse_f64(row, eps) as f32 };
        *s = NormStats { mean: 0.0, rstd };
    }
}

/// Gradients of RMSNorm given `dy`: `dx` stored as `store` says, `d_weight` accumulates. `x` is
/// the forward's input and `stats` what [`rms_norm_train`] saved for it.
pub fn rms_norm_backward<const D: usize>(
    x: &[[f32; D]],
    stats: &[NormStats],
    weight: &[f32; D],
    dy: &[[f32; D]],
    dx: &mut [[f32; D]],
    store: Store,
    d_weight: &mut [f32; D],
) {
    check_rows("rms_norm_backward", x.len(), dy.len(), stats.len());
    assert_eq!(dx.len(), x.len(), "rms_norm_backward: dx has {} rows, not {}", dx.len(), x.len());
    let inv_d = 1.0 / D as f32;
    for (((row, s), dy), dx) in x.iter().zip(stats).zip(dy).zip(dx.iter_mut()) {
        let r = s.rstd;
        let mut sum_g_x = 0.0f32;
        for i in 0..D {
            sum_g_x += dy[i] * weight[i] * row[i];
            d_weight[i] += dy[i] * (row[i] * r);
        }
        let k = r * r * sum_g_x * inv_d;
        for i in 0..D {
            store.put(&mut dx[i], r * (dy[i] * weight[i] - row[i] * k));
        }
    }
}

fn check_rows(what: &str, a: usize, b: usize, stats: usize) {
    assert!(a == b && a == stats, "{what}: {a} input rows, {b} output rows and {stats} saved statistics");
}
