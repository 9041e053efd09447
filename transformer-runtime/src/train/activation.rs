//! Derivatives of the activations ([`Activation`]) and of the gated feed-forward ([`gated`]).
//!
//! The forward pass fuses the activation into the GEMM's epilogue and keeps only its output; a
//! training forward also keeps the pre-activation (the GEMM + bias result), because the GELUs'
//! and SiLU's derivatives need their input. Each derivative is written as PyTorch's autograd
//! computes it (`GeluBackward` in both approximations, `SiluBackward`, `ThresholdBackward`), so
//! gradients agree to rounding.
//!
//! [`gated`]: crate::kernels::activation::gated

use crate::kernels::activation::Activation;
use crate::kernels::exp_f32;

/// `1/√(2π)`, the standard normal density's constant.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `grad[i] *= act′(pre[i])`: turns the gradient of an activation's output into the gradient of
/// its input `pre`, in place. Panics if the lengths differ.
pub fn activation_backward(act: Activation, pre: &[f32], grad: &mut [f32]) {
    assert_eq!(
        pre.len(),
        grad.len(),
        "activation backward: {} inputs but {} gradients",
        pre.len(),
        grad.len()
    );
    // One match per call, then a monomorphic loop (as the forward's epilogue does).
    fn each(pre: &[f32], grad: &mut [f32], d: impl Fn(f32) -> f32) {
        for (g, &x) in grad.iter_mut().zip(pre) {
            *g *= d(x);
        }
    }
    match act {
        Activation::Identity => {}
        Activation::GeluErf => each(pre, grad, gelu_erf_derivative),
        Activation::GeluTanh => each(pre, grad, gelu_tanh_derivative),
        Activation::Relu => each(pre, grad, relu_derivative),
        Activation::Silu => each(pre, grad, silu_derivative),
    }
}

/// The derivative of `act` at `x`.
pub fn derivative(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Identity => 1.0,
        Activation::GeluErf => gelu_erf_derivative(x),
        Activation::GeluTanh => gelu_tanh_derivative(x),
        Activation::Relu => relu_derivative(x),
        Activation::Silu => silu_derivative(x),
    }
}

/// Backward of the gated feed-forward `out = act(gate) · up` over rows of `[gate (f) | up (f)]`:
/// `d_gate = d_out · up · act′(gate)`, `d_up = d_out · act(gate)`, written into `d_gate_up` in the
/// same `[gate | up]` row layout, which is what the fused gate/up projection's backward reads.
/// `gate_up` is the forward's input (the fused GEMM's output). Panics on inconsistent lengths.
pub fn gated_backward(act: Activation, gate_up: &[f32], d_out: &[f32], d_gate_up: &mut [f32], f: usize) {
    assert!(f > 0, "gated backward: the row width f must be positive");
    assert_eq!(gate_up.len(), 2 * d_out.len(), "gated backward: gate_up must be twice d_out");
    assert_eq!(d_gate_up.len(), gate_up.len(), "gated backward: d_gate_up must match gate_up");
    assert!(d_out.len().is_multiple_of(f), "gated backward: d_out is not rows of {f}");
    let rows = gate_up.chunks_exact(2 * f).zip(d_gate_up.chunks_exact_mut(2 * f)).zip(d_out.chunks_exact(f));
    for ((src, dst), dy) in rows {
        let (gate, up) = src.split_at(f);
        let (d_gate, d_up) = dst.split_at_mut(f);
        for i in 0..f {
            d_gate[i] = dy[i] * up[i] * derivative(act, gate[i]);
            d_up[i] = dy[i] * act.apply(gate[i]);
        }
    }
}

/// `d/dx relu(x)`: 1 where `x > 0`, else 0 (PyTorch's `threshold_backward` at 0).
#[inline(always)]
fn relu_derivative(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// `d/dx x·Φ(x) = Φ(x) + x·φ(x)`, with Φ from the same erfc approximation as the forward
/// (|error| ≤ 1.5e-7) and φ the standard normal density.
#[inline(always)]
fn gelu_erf_derivative(x: f32) -> f32 {
    let phi_density = INV_SQRT_2PI * exp_f32(-0.5 * x * x);
    normal_cdf(x) + x * phi_density
}

/// Φ(x) = erfc(−x/√2)/2 by Abramowitz & Stegun 7.1.26, as `kernels::activation`'s GELU forms it.
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * core::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let half_erfc = 0.5 * poly * exp_f32(-z * z);
    if x < 0.0 {
        half_erfc
    } else {
        1.0 - half_erfc
    }
}

/// PyTorch's tanh-GELU backward: with `u = k(x + c·x³)` and `t = tanh(u)`,
/// `½(1 + t) + ½x·(1 − t²)·k·(1 + 3c·x²)`.
#[inline(always)]
fn gelu_tanh_derivative(x: f32) -> f32 {
    const K: f32 = 0.797_884_6;
    const C: f32 = 0.044_715;
    let u = K * (x + C * x * x * x);
    let t = tanh(u);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * K * (1.0 + 3.0 * C * x * x)
}

/// tanh from one exp, branch-free: `1 − 2/(e^{2u} + 1)`, exact limits ±1 for large |u|.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * u) + 1.0)
}

/// `d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))` (PyTorch's `silu_backward`).
#[inline(always)]
fn silu_derivative(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp_f32(-x));
    s * (1.0 + x * (1.0 - s))
}
