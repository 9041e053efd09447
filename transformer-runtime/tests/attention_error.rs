//! Measured error of the online-softmax attention kernel against a float64 reference, over key
//! counts 16…4096 and head dims 32 and 64, asserted to stay under the bound derived in
//! `docs/NUMERICS.md`:
//!
//! ```text
//! err  ≤  (N + 9·T + 19)·u  +  2·Δs,     T = ⌈N / 64⌉ key tiles,  u = 2⁻²⁴,
//! Δs   =  (⌈HD / 8⌉ + 4)·u · max_j Σ_i |q_i·scale·k_ji|
//! ```
//!
//! where `err` is the error of each output element relative to its natural scale
//! `Σ_j p_j |v_jd| / Σ_j p_j` (the softmax-weighted mean magnitude of the values it averages; a
//! plain relative error is meaningless where the weighted average cancels to near 0).
//!
//! Run with `--nocapture` to see the table reported in the doc. Both the dispatched kernel (AVX2 +
//! FMA where the CPU has it) and the portable twin are measured.

use transformer_runtime::kernels::attention::{
    attention_general, attention_general_scalar, attention_isa, HeadRows, Mask,
};

/// The signature shared by the attention kernel and its twins.
type AttentionFn =
    fn(HeadRows<'_>, HeadRows<'_>, HeadRows<'_>, usize, usize, usize, Mask<'_>, f32, &mut [f32]);

const U: f64 = f32::EPSILON as f64 / 2.0;
const QUERIES: usize = 8;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The inputs of one measurement.
struct Case {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    keys: usize,
    scale: f32,
}

/// `random`: q, k, v uniform in [-1, 1). `sharp`: q scaled ×16 (a peaked softmax, scores up to
/// ~±20). `ascending`: every key scores higher than the one before, so the running maximum grows
/// in every tile and the accumulator is rescaled `T − 1` times (the rescaling worst case).
fn case<const HD: usize>(kind: &str, keys: usize, seed: u64) -> Case {
    let scale = 1.0 / (HD as f32).sqrt();
    let mut q = values(QUERIES * HD, seed);
    let mut k = values(keys * HD, seed + 1);
    let v = values(keys * HD, seed + 2);
    match kind {
        "random" => {}
        "sharp" => q.iter_mut().for_each(|x| *x *= 16.0),
        "ascending" => {
            q.iter_mut().for_each(|x| *x = x.abs() + 0.5);
            for (j, row) in k.chunks_exact_mut(HD).enumerate() {
                let t = 8.0 * j as f32 / keys as f32;
                row.iter_mut().for_each(|x| *x = 0.1 * *x + t);
            }
        }
        _ => unreachable!(),
    }
    Case { q, k, v, keys, scale }
}

/// Runs `kernel` and returns (the max error relative to the natural scale over every output
/// element, the smallest bound over the query rows).
fn measure<const HD: usize>(c: &Case, kernel: AttentionFn) -> (f64, f64) {
    let view = |data, rows| HeadRows { data, stride: HD, offset: 0, rows };
    let mut out = vec![f32::NAN; QUERIES * HD];
    let mask = Mask { key_valid: None, causal: false, window: None, bias: None };
    kernel(view(&c.q, QUERIES), view(&c.k, c.keys), view(&c.v, c.keys), 1, 1, 0, mask, c.scale, &mut out);
    assert!(out.iter().all(|x| x.is_finite()), "non-finite attention output");

    let n = c.keys as f64;
    let tiles = c.keys.div_ceil(64) as f64;
    let mut worst_err = 0.0f64;
    let mut worst_bound = f64::INFINITY;
    for r in 0..QUERIES {
        let q = &c.q[r * HD..][..HD];
        let scores: Vec<f64> = c
            .k
            .chunks_exact(HD)
            .map(|k| {
                q.iter().zip(k).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * f64::from(c.scale)
            })
            .collect();
        let magnitude =
            c.k.chunks_exact(HD)
                .map(|k| {
                    q.iter()
                        .zip(k)
                        .map(|(&a, &b)| (f64::from(a) * f64::from(c.scale) * f64::from(b)).abs())
                        .sum::<f64>()
                })
                .fold(0.0, f64::max);
        let delta_s = (HD.div_ceil(8) as f64 + 4.0) * U * magnitude;
        let bound = (n + 9.0 * tiles + 19.0) * U + 2.0 * delta_s;
        worst_bound = worst_bound.min(bound);
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = p.iter().sum();
        for d in 0..HD {
            let exact: f64 =
                p.iter().zip(c.v.chunks_exact(HD)).map(|(p, v)| p * f64::from(v[d])).sum::<f64>() / total;
            let natural: f64 =
                p.iter().zip(c.v.chunks_exact(HD)).map(|(p, v)| p * f64::from(v[d]).abs()).sum::<f64>()
                    / total;
            let err = (f64::from(out[r * HD + d]) - exact).abs() / natural;
            worst_err = worst_err.max(err);
        }
    }
    (worst_err, worst_bound)
}

fn sweep<const HD: usize>() {
    println!("HD = {HD}, dispatched kernel: {}", attention_isa());
    println!("{:>6} {:>10} {:>12} {:>12} {:>12}", "keys", "inputs", "dispatched", "portable", "bound");
    for keys in [16, 64, 65, 256, 1024, 4096] {
        for kind in ["random", "sharp", "ascending"] {
            let c = case::<HD>(kind, keys, keys as u64 * 7 + HD as u64);
            let (fast, bound) = measure::<HD>(&c, attention_general::<HD>);
            let (portable, _) = measure::<HD>(&c, attention_general_scalar::<HD>);
            println!("{keys:>6} {kind:>10} {fast:>12.3e} {portable:>12.3e} {bound:>12.3e}");
            assert!(
                fast <= bound,
                "HD {HD}, {keys} keys, {kind}: dispatched error {fast:e} > bound {bound:e}"
            );
            assert!(
                portable <= bound,
                "HD {HD}, {keys} keys, {kind}: portable error {portable:e} > bound {bound:e}"
            );
        }
    }
}

#[test]
fn online_softmax_error_stays_under_the_documented_bound_hd32() {
    sweep::<32>();
}

#[test]
fn online_softmax_error_stays_under_the_documented_bound_hd64() {
    sweep::<64>();
}
