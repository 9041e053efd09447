//! Fused CPU kernels.
//!
//! Every public function here is safe and shape-checked; shape violations are caller bugs and
//! panic with a message naming the mismatch. `unsafe` is confined to a few small functions: the
//! `sgemm` call in [`gemm`] and the runtime-dispatched SIMD entry in [`attention`], each with a
//! scalar twin that the tests compare against.

pub mod activation;
pub mod additive;
pub mod attention;
pub mod gemm;
pub mod lsh;
pub mod norm;
pub mod pooling;
pub mod rope;
pub mod sparse;

/// Number of independent accumulators used by the reductions below.
///
/// A plain `fold` over `f32` is a serial dependency chain that LLVM may not reorder (float addition
/// is not associative), so it neither vectorises nor pipelines. Eight explicit lanes give the
/// compiler a vector-shaped loop and, as a bonus, a partially pairwise summation with a smaller
/// rounding error than a single running sum.
pub(crate) const LANES: usize = 8;

/// Sum of `f(x)` over `xs`, with [`LANES`] independent accumulators.
#[inline(always)]
pub(crate) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for j in 0..LANES {
            acc[j] += f(chunk[j]);
        }
    }
    for (j, &x) in chunks.remainder().iter().enumerate() {
        acc[j] += f(x);
    }
    reduce_lanes(acc)
}

/// Tree reduction of the lane accumulators (pairwise, so the final error does not grow serially).
#[inline(always)]
pub(crate) fn reduce_lanes(acc: [f32; LANES]) -> f32 {
    let a = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    let b = [a[0] + a[2], a[1] + a[3]];
    b[0] + b[1]
}

/// `eˣ` for f32 without branches or calls, so loops over it auto-vectorise (a `libm` call per
/// element cannot, and dominated the softmax and GELU at ~10 ns per element).
///
/// Cephes `expf` scheme: `x = n·ln2 + r` with |r| ≤ ln2/2, `eʳ` by a degree-7 polynomial, and
/// `2ⁿ` assembled directly in the exponent bits. Relative error ≤ 2 ulp for `x` in
/// [−87.33, 88.37]; below that (results under the smallest normal f32) it returns 0, above it +∞
/// (slightly early: `f32::MAX` is e^88.72, but keeping `n ≤ 127` keeps the bit assembly simple,
/// and the callers only ever need `x ≤ 0` or saturate anyway). NaN propagates.
#[doc(hidden)]
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_with(x, |a, b, c| a * b + c)
}

/// [`exp_f32`] with its multiply-adds done by `mul_add(a, b, c) = a·b + c`: a separate multiply and
/// add gives exactly [`exp_f32`]; a fused one (where the CPU has FMA, inside a `#[target_feature]`
/// function) halves the polynomial's instructions and its latency chain, and is at least as
/// accurate. Same range, clamping and NaN behaviour.
#[inline(always)]
pub(crate) fn exp_with(x: f32, mul_add: impl Fn(f32, f32, f32) -> f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // ln2 split so that n·LN2_HI is exact for |n| < 2⁹ (LN2_HI has 9 significant bits).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits (SSE2-friendly,
    // unlike `f32::round`, which is a libm call on the baseline target).
    const ROUND: f32 = 12_582_912.0;
    // Beyond these the result leaves the normal f32 range (LO) or n would reach 128 (HI).
    const HI: f32 = 88.37;
    const LO: f32 = -87.336_55;

    let xc = x.clamp(LO, HI);
    let t = mul_add(xc, LOG2E, ROUND);
    let n = t - ROUND;
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = mul_add(-n, LN2_LO, mul_add(-n, LN2_HI, xc));
    let p = 1.987_569_2e-4f32;
    let p = mul_add(p, r, 1.398_199_9e-3);
    let p = mul_add(p, r, 8.333_452e-3);
    let p = mul_add(p, r, 4.166_579_6e-2);
    let p = mul_add(p, r, 1.666_666_5e-1);
    let p = mul_add(p, r, 0.5);
    let er = mul_add(p, r * r, r) + 1.0;
    // n ∈ [-126, 127] after the clamp, so the biased exponent is a valid normal exponent.
    let two_n = f32::from_bits(((n_bits + 127) << 23) as u32);
    let y = er * two_n;
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}
