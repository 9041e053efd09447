//! Element-wise activations and the epilogue of a linear layer.
//!
//! [`bias_activation`] fuses the bias add with the activation so the `m×n` output of a matmul is
//! read and written once instead of twice; at transformer sizes that output does not fit in L1,
//! so the second pass would be a full extra trip through L2/L3.
//!
//! The GELUs are written branch-free on top of [`exp_f32`] so these loops auto-vectorise.

use super::exp_f32;

/// Activation function applied after a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `x`.
    Identity,
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))` (PyTorch `gelu`, `approximate='none'`).
    GeluErf,
    /// Tanh-approximated GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (PyTorch `gelu(approximate='tanh')`).
    GeluTanh,
    /// `max(x, 0)`; NaN propagates as in PyTorch.
    Relu,
    /// SiLU (swish), `x·sigmoid(x)` (PyTorch `silu`): the gate of LLaMA's SwiGLU.
    Silu,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::GeluErf => gelu_erf(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Relu => relu(x),
            Activation::Silu => silu(x),
        }
    }

    /// Applies the activation to every element of `xs`, in place.
    pub fn apply_slice(self, xs: &mut [f32]) {
        // The match is hoisted out of the loop so each arm is a tight, branch-free loop body.
        match self {
            Activation::Identity => {}
            Activation::GeluErf => xs.iter_mut().for_each(|x| *x = gelu_erf(*x)),
            Activation::GeluTanh => xs.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
            Activation::Relu => xs.iter_mut().for_each(|x| *x = relu(*x)),
            Activation::Silu => silu_slice(xs),
        }
    }
}

/// Epilogue of a linear layer: for each row `r` of `out` (width `n = bias.len()`),
/// `out[r] = act(out[r] + bias)`. (`out.len()` must be a multiple of `bias.len()`.)
pub fn bias_activation(out: &mut [f32], bias: &[f32], act: Activation) {
    let n = bias.len();
    if n == 0 {
        assert!(out.is_empty(), "bias_activation: empty bias but {} outputs", out.len());
        return;
    }
    assert!(
        out.len().is_multiple_of(n),
        "bias_activation: output length {} is not a multiple of the bias length {n}",
        out.len()
    );
    // One match per call, then a monomorphic loop per activation: the closure is inlined, and the
    // bias add shares the load/store of the activation instead of being a separate pass.
    fn rows(out: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32) {
        for row in out.chunks_exact_mut(bias.len()) {
            for (x, &b) in row.iter_mut().zip(bias) {
                *x = f(*x + b);
            }
        }
    }
    match act {
        Activation::Identity => rows(out, bias, |x| x),
        Activation::GeluErf => rows(out, bias, gelu_erf),
        Activation::GeluTanh => rows(out, bias, gelu_tanh),
        Activation::Relu => rows(out, bias, relu),
        Activation::Silu => rows(out, bias, silu),
    }
}

/// Same without a bias.
pub fn activation_only(out: &mut [f32], act: Activation) {
    act.apply_slice(out);
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    // `x < 0` rather than `x.max(0.0)`: `f32::max` would turn NaN into 0 and hide upstream bugs.
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    // GELU(x) = x·Φ(x) with Φ(x) = erfc(−x/√2)/2. Working with erfc(|x|/√2) (which is ≤ 1 and
    // decays like e^(−x²/2)) avoids the cancellation of `1 + erf` for negative x, so the result is
    // accurate in absolute terms on both tails.
    //
    // erfc uses Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), the same approximation as
    // PyTorch's vectorised CPU `erf`. It is branch-free and calls only `exp_f32`, so
    // `apply_slice`/`bias_activation` vectorise; `libm::erff` per element is ~10× slower. The test
    // suite checks the brief's bound (≤ 1e-6 absolute vs. the f64 formula) densely over [−10, 10].
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * core::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let half_erfc = 0.5 * poly * exp_f32(-z * z);
    let phi = if x < 0.0 { half_erfc } else { 1.0 - half_erfc };
    x * phi
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    // √(2/π), as PyTorch spells it (M_SQRT2 * M_2_SQRTPI * 0.5).
    const K: f32 = 0.797_884_6;
    const C: f32 = 0.044_715;
    // 0.5·x·(1 + tanh(u)) = x / (1 + e^(−2u)): one exp and one division, no cancellation near
    // u = 0, and the tails come out right (e^(−2u) → ∞ gives −0, → 0 gives x).
    let u = K * (x + C * x * x * x);
    x / (1.0 + exp_f32(-2.0 * u))
}

/// SiLU (swish), `x·sigmoid(x) = x / (1 + e^(−x))` (PyTorch `silu`).
///
/// One [`exp_f32`] and one division, branch-free. The tails need no special care: for x ≪ 0,
/// `e^(−x)` saturates to +∞ and the result is `−0`; for x ≫ 0 it is 0 and the result is `x`. Only
/// `x = −∞` (not finite input) would give `−∞/∞`; it is mapped to its limit `−0`. NaN propagates.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let y = x / (1.0 + exp_f32(-x));
    if x == f32::NEG_INFINITY {
        -0.0
    } else {
        y
    }
}

/// [`silu`] of every element of `xs`, in place.
pub fn silu_slice(xs: &mut [f32]) {
    xs.iter_mut().for_each(|x| *x = silu(*x));
}

/// The gated MLP activation of LLaMA/Mistral: each input row is `[gate (f) | up (f)]`, as one fused
/// GEMM of `gate_proj` and `up_proj` writes it, and the matching output row of `out` (width `f`) is
/// `silu(gate) * up`.
///
/// `gate_up.len()` must be `2 · out.len()` and `out.len()` a multiple of `f` (rows of `f`); panics
/// otherwise. Allocates nothing.
pub fn swiglu(gate_up: &[f32], out: &mut [f32], f: usize) {
    gated_rows("swiglu", gate_up, out, f, silu);
}

/// `out[r][i] = act(gate[r][i]) · up[r][i]` for rows of `[gate (f) | up (f)]`.
///
/// The gated feed-forward of every GLU variant, as one fused GEMM of the two input projections
/// writes its rows: SwiGLU (LLaMA, [`Activation::Silu`]; identical to [`swiglu`]), T5 v1.1's
/// "gated-gelu" (`gelu_new`, the tanh approximation: [`Activation::GeluTanh`], of `wi_0` times
/// `wi_1`), GeGLU with the exact GELU, ReGLU, and the bilinear (`Identity`) variant.
/// `gate_up.len()` must be `2 · out.len()` and `out.len()` a multiple of `f`; panics otherwise.
/// Allocates nothing.
pub fn gated(gate_up: &[f32], out: &mut [f32], f: usize, act: Activation) {
    // One match per call, then a monomorphic loop per activation (as in `bias_activation`).
    match act {
        Activation::Identity => gated_rows("gated", gate_up, out, f, |x| x),
        Activation::GeluErf => gated_rows("gated", gate_up, out, f, gelu_erf),
        Activation::GeluTanh => gated_rows("gated", gate_up, out, f, gelu_tanh),
        Activation::Relu => gated_rows("gated", gate_up, out, f, relu),
        Activation::Silu => gated_rows("gated", gate_up, out, f, silu),
    }
}

/// The shape checks and loop of [`gated`] / [`swiglu`] for one activation `act`.
#[inline(always)]
fn gated_rows(what: &str, gate_up: &[f32], out: &mut [f32], f: usize, act: impl Fn(f32) -> f32) {
    assert_eq!(
        gate_up.len(),
        2 * out.len(),
        "{what}: gate_up has {} floats, expected 2 × out = 2 × {}",
        gate_up.len(),
        out.len()
    );
    if f == 0 {
        assert!(out.is_empty(), "{what}: f = 0 but out has {} floats", out.len());
        return;
    }
    assert!(
        out.len().is_multiple_of(f),
        "{what}: out has {} floats, not a multiple of the row width f = {f}",
        out.len()
    );
    for (src, dst) in gate_up.chunks_exact(2 * f).zip(out.chunks_exact_mut(f)) {
        let (gate, up) = src.split_at(f);
        for ((o, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
            *o = act(g) * u;
        }
    }
}
