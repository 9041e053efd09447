//! The LLaMA / Mistral building blocks: RMSNorm, SwiGLU, RoPE, grouped-query attention and sliding
//! windows, each against a straightforward f64 twin over random shapes, plus edge values, a
//! reference computed with transformers, and a check that a sliding window skips work.
//!
//! Tolerances are derived from the f32 roundings each kernel performs (stated next to each
//! comparison); an indexing, layout or masking bug shows up as an O(0.01..1) error.

use proptest::prelude::*;
use proptest::test_runner::Config;
use transformer_runtime::kernels::activation::{silu, silu_slice, swiglu};
use transformer_runtime::kernels::attention::{
    attention_general, attention_general_naive, attention_general_scalar, scores_computed, HeadRows, Mask,
    Q_BLOCK,
};
use transformer_runtime::kernels::norm::{rms_norm, rms_norm_into};
use transformer_runtime::kernels::rope::{rope_inv_freq, rope_rotate, rope_tables};
use transformer_runtime::layers::{
    cached_causal_attention, cached_causal_attention_with, causal_self_attention, causal_self_attention_with,
    AttentionShape, RmsNorm, Rope,
};
use transformer_runtime::{Batch, KvCache, Threads, WeightLoader};

const EPS32: f64 = f32::EPSILON as f64;

fn config() -> Config {
    Config::with_cases(64)
}

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

// ------------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------------

/// `x / sqrt(mean(x²) + eps) * w` in f64.
fn rms_f64(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
    let mean = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64;
    let denom = mean + f64::from(eps);
    let inv = if denom > 0.0 { 1.0 / denom.sqrt() } else { 0.0 };
    x.iter().zip(w).map(|(&v, &g)| f64::from(v) * inv * f64::from(g)).collect()
}

/// Tolerance: the f32 mean square is a lane sum of D squares (≤ (D/8 + 3)·ε relative), the sqrt
/// halves that, and the reciprocal, the two products and the sqrt round once each: relative per
/// element, `((D/8 + 3)/2 + 5)·ε`.
fn check_rms<const D: usize>(input: &[[f32; D]], got: &[[f32; D]], w: &[f32; D], eps: f32) {
    let tol = ((D as f64 / 8.0 + 3.0) / 2.0 + 5.0) * EPS32;
    for (r, (x, y)) in input.iter().zip(got).enumerate() {
        let want = rms_f64(x, w, eps);
        for (d, (&g, &e)) in y.iter().zip(&want).enumerate() {
            assert!(g.is_finite(), "row {r} [{d}]: {g}");
            assert!(
                (f64::from(g) - e).abs() <= tol * e.abs() + 1e-37,
                "D {D} eps {eps} row {r} [{d}]: {g} vs {e} (input {:?})",
                &x[..D.min(8)]
            );
        }
    }
}

fn rms_case<const D: usize>(rows: &[f32], w: &[f32], eps: f32) {
    let input: Vec<[f32; D]> = rows.chunks_exact(D).map(|c| c.try_into().unwrap()).collect();
    let w: [f32; D] = w.try_into().unwrap();
    let mut got = input.clone();
    rms_norm(&mut got, &w, eps);
    check_rms(&input, &got, &w, eps);
    // Pre-norm form: same values, input untouched.
    let mut out = vec![[f32::NAN; D]; input.len()];
    let before = input.clone();
    rms_norm_into(&input, &mut out, &w, eps);
    assert_eq!(input, before);
    assert_eq!(out, got, "rms_norm_into differs from rms_norm");
}

fn rms_strategy(d: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>, f32)> {
    (
        0usize..5,
        prop::sample::select(vec![1e-20f32, 1e-3, 1.0, 1e3, 1e25]),
        prop::sample::select(vec![0.0f32, 1e-6, 1e-5]),
    )
        .prop_flat_map(move |(rows, mag, eps)| {
            (
                prop::collection::vec(-1.0f32..1.0, rows * d)
                    .prop_map(move |v| v.into_iter().map(|x| x * mag).collect()),
                prop::collection::vec(-2.0f32..2.0, d),
                Just(eps),
            )
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rms_norm_matches_f64_d1((rows, w, eps) in rms_strategy(1)) { rms_case::<1>(&rows, &w, eps); }

    #[test]
    fn rms_norm_matches_f64_d7((rows, w, eps) in rms_strategy(7)) { rms_case::<7>(&rows, &w, eps); }

    #[test]
    fn rms_norm_matches_f64_d64((rows, w, eps) in rms_strategy(64)) { rms_case::<64>(&rows, &w, eps); }

    #[test]
    fn rms_norm_matches_f64_d300((rows, w, eps) in rms_strategy(300)) { rms_case::<300>(&rows, &w, eps); }
}

#[test]
fn rms_norm_constant_zero_huge_and_tiny_rows() {
    const D: usize = 16;
    let w: [f32; D] = std::array::from_fn(|i| 0.5 + i as f32 / 8.0);
    for eps in [0.0f32, 1e-6, 1e-5] {
        // Constant rows: x / sqrt(x² + eps) · w.
        for c in [3.0f32, -0.25, 1e-3] {
            let input = [[c; D]];
            let mut got = input;
            rms_norm(&mut got, &w, eps);
            check_rms(&input, &got, &w, eps);
        }
        // A zero row is zeros, for eps = 0 too (never 0/0).
        let mut zero = [[0.0f32; D]; 2];
        rms_norm(&mut zero, &w, eps);
        assert!(zero.iter().flatten().all(|&x| x == 0.0), "eps {eps}: {zero:?}");
        // Squares that overflow f32 (|x|² > 3.4e38) and squares that underflow: still the
        // normalised row, from the f64 fallback.
        for mag in [1e30f32, f32::MAX, 1e-30, 1e-40, f32::MIN_POSITIVE] {
            let input = [std::array::from_fn::<f32, D, _>(|i| mag * if i % 3 == 0 { -1.0 } else { 0.5 })];
            let mut got = input;
            rms_norm(&mut got, &w, eps);
            check_rms(&input, &got, &w, eps);
        }
    }
}

#[test]
fn rms_norm_layer_loads_only_the_weight() {
    const D: usize = 4;
    let weight = [1.0f32, -2.0, 0.5, 4.0];
    let header =
        format!(r#"{{"model.norm.weight":{{"dtype":"F32","shape":[{D}],"data_offsets":[0,{}]}}}}"#, 4 * D);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(weight.iter().flat_map(|x| x.to_le_bytes()));
    let mut loader = WeightLoader::from_bytes(bytes, "rms").unwrap();
    let norm = RmsNorm::<D>::load(&mut loader, "model.norm", 1e-6);
    // No bias asked for, nothing left over.
    loader.finish().unwrap();

    let input = [[1.0f32, 2.0, 3.0, 4.0], [0.0; D]];
    let mut out = [[f32::NAN; D]; 2];
    norm.forward_into(&input, &mut out);
    check_rms(&input, &out, &weight, 1e-6);
    let mut in_place = input;
    norm.forward(&mut in_place);
    assert_eq!(in_place, out);
    assert_eq!(out[1], [0.0; D]);
    let built = RmsNorm::<D>::from_parts(weight.to_vec(), 1e-6);
    let mut again = input;
    built.forward(&mut again);
    assert_eq!(again, out);
}

// ------------------------------------------------------------------------------------------------
// SwiGLU
// ------------------------------------------------------------------------------------------------

fn silu_f64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

proptest! {
    #![proptest_config(config())]

    /// Tolerance: exp_f32 (≤ 2 ulp), `1 + e`, the division and the product with `up` round once
    /// each: 6ε relative; plus 1e-36·|up| absolute for the gates in [−88.72, −88.37], where
    /// exp_f32 saturates to ∞ slightly early and silu is −0 instead of at most −88.7·e^−88.37 ≈
    /// −3.7e-37.
    #[test]
    fn swiglu_matches_f64(
        rows in 0usize..5,
        f in 1usize..40,
        mag in prop::sample::select(vec![0.5f32, 4.0, 20.0, 120.0]),
        seed in any::<u64>(),
    ) {
        let gate_up: Vec<f32> = values(rows * 2 * f, seed).into_iter().map(|x| x * mag).collect();
        let mut out = vec![f32::NAN; rows * f];
        swiglu(&gate_up, &mut out, f);
        for r in 0..rows {
            for i in 0..f {
                let (g, u) = (gate_up[r * 2 * f + i], gate_up[r * 2 * f + f + i]);
                let want = silu_f64(f64::from(g)) * f64::from(u);
                let got = out[r * f + i];
                prop_assert!(got.is_finite());
                prop_assert!(
                    (f64::from(got) - want).abs() <= 6.0 * EPS32 * want.abs() + 1e-36 * f64::from(u).abs(),
                    "row {} [{}]: silu({}) * {} = {} vs {}", r, i, g, u, got, want
                );
            }
        }
    }
}

#[test]
fn silu_edge_values() {
    let neg = silu(-100.0);
    assert!(neg == 0.0 && neg.is_sign_negative(), "silu(-100) = {neg}");
    assert_eq!(silu(100.0), 100.0);
    assert_eq!(silu(0.0), 0.0);
    assert_eq!(silu(1e30), 1e30);
    assert_eq!(silu(f32::MAX), f32::MAX);
    for x in [-1e30f32, f32::MIN, -88.5, -87.0, f32::NEG_INFINITY] {
        let y = silu(x);
        assert!(y == 0.0 || (y < 0.0 && y > -1e-30), "silu({x}) = {y}");
    }
    assert_eq!(silu(f32::INFINITY), f32::INFINITY);
    assert!(silu(f32::NAN).is_nan(), "NaN is not sanitised");
    // Dense sweep against f64: 4 ulp relative.
    for i in -20_000..=20_000 {
        let x = i as f32 / 1000.0;
        let (got, want) = (f64::from(silu(x)), silu_f64(f64::from(x)));
        assert!((got - want).abs() <= 4.0 * EPS32 * want.abs(), "silu({x}) = {got} vs {want}");
    }
    let mut xs = [-100.0f32, 100.0, -1e30, 1e30, 0.5];
    silu_slice(&mut xs);
    assert!(xs.iter().all(|x| !x.is_nan()), "{xs:?}");
    // In a gated row: silu(±huge) · up stays finite (or ±∞ only if the exact product overflows).
    let gate_up = [-100.0f32, 100.0, -1e30, 3.0, 1e3, -2.0, 1e3, 0.0];
    let mut out = [f32::NAN; 4];
    swiglu(&gate_up, &mut out, 4);
    assert_eq!(out[1], -200.0);
    assert_eq!(out[0], 0.0);
    assert_eq!(out[2], 0.0);
    assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
    // f = 0: nothing to do.
    swiglu(&[], &mut [], 0);
}

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

/// HF's float32 `inv_freq` and angle, written out independently of the kernel: exponent
/// `2i / R` in f32, `base ** exponent` of the f32 base rounded to f32, `1 / that` in f32, angle
/// `(p as f32) · inv_freq` in f32.
fn hf_angle(p: usize, i: usize, r: usize, theta: f64) -> f64 {
    let e = (2 * i) as f32 / r as f32;
    let pow = (f64::from(theta as f32)).powf(f64::from(e)) as f32;
    f64::from(p as f32 * (1.0f32 / pow))
}

/// Naive f64 twin of `Rope::apply`: every row's query and key heads rotated in f64 from the same
/// f32 angle HF forms.
fn rope_f64(
    qkv: &[f32],
    batch: &Batch,
    starts: Option<&[usize]>,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    r: usize,
    theta: f64,
) -> Vec<f64> {
    let stride = (heads + 2 * kv_heads) * hd;
    let mut out: Vec<f64> = qkv.iter().map(|&x| f64::from(x)).collect();
    for row in 0..batch.rows() {
        let p = batch.position(row) + starts.map_or(0, |s| s[row / batch.seq_len()]);
        for h in 0..heads + kv_heads {
            let base = row * stride + h * hd;
            for i in 0..r / 2 {
                let a = hf_angle(p, i, r, theta);
                let (x0, x1) = (f64::from(qkv[base + i]), f64::from(qkv[base + i + r / 2]));
                out[base + i] = x0 * a.cos() - x1 * a.sin();
                out[base + i + r / 2] = x1 * a.cos() + x0 * a.sin();
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct RopeCase {
    lens: Vec<usize>,
    starts: Option<Vec<usize>>,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    r: usize,
    theta: f64,
    seed: u64,
}

fn rope_case() -> impl Strategy<Value = RopeCase> {
    (
        prop::collection::vec(1usize..10, 1..4),
        1usize..3,
        1usize..3,
        1usize..12,
        0usize..7,
        prop::sample::select(vec![10_000.0f64, 500_000.0, 1e6, 100.0]),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(lens, kv_heads, group, half_hd, r_cut, theta, with_starts, seed)| {
            let hd = 2 * half_hd + usize::from(seed % 3 == 0); // odd head dims too
            let r = 2 * half_hd.saturating_sub(r_cut % 3); // partial rotary sometimes
            let n = lens.len();
            (prop::collection::vec(0usize..3000, n), Just(lens)).prop_map(move |(st, lens)| RopeCase {
                lens,
                starts: with_starts.then_some(st),
                heads: kv_heads * group,
                kv_heads,
                hd,
                r,
                theta,
                seed,
            })
        })
}

proptest! {
    #![proptest_config(config())]

    /// Tolerance: the table entries are cos/sin of the same f32 angle rounded once (ε/2), and the
    /// two products and the sum round once each: `2ε·(|x0| + |x1|)`. V and the dims ≥ R are
    /// compared bit for bit.
    #[test]
    fn rope_matches_f64_twin(c in rope_case()) {
        let seqs: Vec<Vec<u32>> = c.lens.iter().map(|&l| vec![1; l]).collect();
        let batch = Batch::from_sequences(&seqs).unwrap();
        let stride = (c.heads + 2 * c.kv_heads) * c.hd;
        let qkv = values(batch.rows() * stride, c.seed);
        let rope = Rope::new(3100 + 10, c.hd, c.r, c.theta);
        let mut got = qkv.clone();
        rope.apply(&mut got, &batch, c.starts.as_deref(), c.heads, c.kv_heads);
        let want = rope_f64(&qkv, &batch, c.starts.as_deref(), c.heads, c.kv_heads, c.hd, c.r, c.theta);
        for row in 0..batch.rows() {
            for h in 0..c.heads + 2 * c.kv_heads {
                for d in 0..c.hd {
                    let at = row * stride + h * c.hd;
                    let (g, w) = (got[at + d], want[at + d]);
                    if h >= c.heads + c.kv_heads || d >= c.r {
                        prop_assert_eq!(g.to_bits(), qkv[at + d].to_bits(), "row {} head {} dim {} changed", row, h, d);
                    } else {
                        let i = d % (c.r / 2);
                        let mag = f64::from(qkv[at + i].abs() + qkv[at + i + c.r / 2].abs());
                        prop_assert!(
                            (f64::from(g) - w).abs() <= 2.0 * EPS32 * mag,
                            "row {} head {} dim {}: {} vs {}", row, h, d, g, w
                        );
                    }
                }
            }
        }
    }
}

/// q/k after transformers' `apply_rotary_pos_emb`, printed by this script (Python 3.11, torch 2.9.1,
/// transformers 4.57.1, the repository's `.cache/venv`):
///
/// ```python
/// import torch
/// from transformers import LlamaConfig
/// from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
/// for theta, hd, positions in [(10000.0, 8, [0, 1, 7, 100, 4095]), (1000000.0, 16, [3, 12345])]:
///     cfg = LlamaConfig(hidden_size=2 * hd, num_attention_heads=2, num_key_value_heads=1, head_dim=hd,
///                       rope_theta=theta, max_position_embeddings=16384)
///     q = torch.tensor([[(-1) ** i * (i + 1) / 8 for i in range(hd)]], dtype=torch.float32)
///     k = torch.tensor([[0.25 * (i % 5) - 0.5 for i in range(hd)]], dtype=torch.float32)
///     for p in positions:
///         cos, sin = LlamaRotaryEmbedding(cfg)(q, torch.tensor([[p]]))
///         qr, kr = apply_rotary_pos_emb(q[None, :, None], k[None, :, None], cos, sin)
///         print(theta, hd, p, ", ".join("%.9g" % x for x in qr.flatten().tolist()), "|",
///               ", ".join("%.9g" % x for x in kr.flatten().tolist()))
/// ```
///
/// The values are pasted as printed (`%.9g`: 9 significant digits round-trip every f32), hence the
/// allowed excess precision.
#[allow(clippy::excessive_precision)]
const HF_ROPE: &[(f64, usize, &[f32], &[f32])] = &[
    (
        10000.0,
        0,
        &[0.125, -0.25, 0.375, -0.5, 0.625, -0.75, 0.875, -1.0],
        &[-0.5, -0.25, 0.0, 0.25, 0.5, -0.5, -0.25, 0.0],
    ),
    (
        10000.0,
        1,
        &[
            -0.458381534,
            -0.173875988,
            0.366231412,
            -0.498999774,
            0.442872822,
            -0.771211505,
            0.878706217,
            -1.00049949,
        ],
        &[
            -0.690886617,
            -0.19883433,
            0.00249995827,
            0.249999881,
            -0.15058431,
            -0.522460461,
            -0.249987498,
            0.000249999983,
        ],
    ),
    (
        10000.0,
        7,
        &[
            -0.316378862,
            0.29195267,
            0.312881649,
            -0.492987812,
            0.553312242,
            -0.734686077,
            0.899085701,
            -1.00347543,
        ],
        &[
            -0.705444455,
            0.130898282,
            0.0174857117,
            0.249993876,
            0.0484578311,
            -0.543475509,
            -0.249387756,
            0.00174998573,
        ],
    ),
    (
        10000.0,
        100,
        &[
            0.424268425,
            -0.198247969,
            -0.533673763,
            -0.39766866,
            0.475653589,
            0.765308917,
            0.788316131,
            -1.04492092,
        ],
        &[
            -0.177976608,
            -0.0622426867,
            0.210367739,
            0.248751044,
            0.684342265,
            0.555541039,
            -0.135075584,
            0.0249583554,
        ],
    ),
    (
        10000.0,
        4095,
        &[
            0.615391254,
            0.551026404,
            -0.277318478,
            -0.525938988,
            -0.165962651,
            -0.566894948,
            -0.910683513,
            0.986604333,
        ],
        &[
            0.531898618,
            0.329029024,
            -0.0272696987,
            -0.144726977,
            0.465922594,
            -0.451929092,
            0.248508275,
            -0.203848228,
        ],
    ),
    (
        1e6,
        3,
        &[
            -0.282509059,
            0.420409977,
            0.243065372,
            -0.474624693,
            0.620122194,
            -0.749066293,
            0.87482214,
            -0.999966264,
            -1.09610152,
            -1.20343494,
            1.40433943,
            -1.50822139,
            1.62686777,
            -1.75039983,
            1.87508297,
            -2.00001693,
        ],
        &[
            0.45971626,
            -0.469528198,
            0.0473630466,
            0.254181802,
            0.499997765,
            -0.500133336,
            -0.250047445,
            8.43512044e-06,
            -0.318058133,
            0.303386301,
            -0.497751683,
            -0.245747074,
            0.0014999978,
            0.249733225,
            0.499976277,
            -0.5,
        ],
    ),
    (
        1e6,
        12345,
        &[
            1.1319226,
            0.986367643,
            -0.756414413,
            -0.0249069333,
            0.96654439,
            1.85822034,
            0.0956501961,
            -0.858860731,
            0.00114380568,
            0.807514012,
            1.20792675,
            -1.58094263,
            1.44811678,
            0.414749682,
            2.06690621,
            -2.06454802,
        ],
        &[
            0.192725003,
            -0.124027327,
            0.367518127,
            0.313697845,
            0.48779875,
            0.0895262808,
            -0.421462238,
            0.0346826464,
            0.524744749,
            -0.545084596,
            -0.339013904,
            -0.163075656,
            -0.109783366,
            -0.551801622,
            0.367245972,
            -0.498795658,
        ],
    ),
];

#[test]
fn rope_matches_transformers() {
    for &(theta, p, q_want, k_want) in HF_ROPE {
        let hd = q_want.len();
        let q: Vec<f32> = (0..hd)
            .map(|i| {
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                sign * (i + 1) as f32 / 8.0
            })
            .collect();
        let k: Vec<f32> = (0..hd).map(|i| 0.25 * (i % 5) as f32 - 0.5).collect();
        let rope = Rope::new(16384, hd, hd, theta);
        // Through `apply`: one row [Q (2 heads: q and a copy) | K (1 head) | V], at position p.
        let batch = Batch::from_sequences(&[vec![0u32]]).unwrap();
        let mut row = [q.clone(), q.clone(), k.clone(), vec![7.0; hd]].concat();
        rope.apply(&mut row, &batch, Some(&[p]), 2, 1);
        for (name, got, want) in [
            ("q0", &row[..hd], q_want),
            ("q1", &row[hd..2 * hd], q_want),
            ("k", &row[2 * hd..3 * hd], k_want),
        ] {
            for (d, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() <= 1e-6, "theta {theta} p {p} {name}[{d}]: {g} vs transformers {w}");
            }
        }
        assert_eq!(&row[3 * hd..], &vec![7.0; hd][..], "V must not rotate");
    }
}

#[test]
fn rope_tables_follow_hf_float32_recipe() {
    // inv_freq[0] is exactly 1 and the position is exact in f32, so the angle of pair 0 at
    // position p is exactly p: cos/sin are those of p, correctly rounded from f64.
    let rope = Rope::new(5000, 64, 64, 10_000.0);
    for p in [0usize, 1, 2, 1000, 4095, 4999] {
        assert_eq!(rope.cos_at(p)[0], (p as f64).cos() as f32);
        assert_eq!(rope.sin_at(p)[0], (p as f64).sin() as f32);
    }
    // The f32 angle is what matters at long contexts: at p = 4095 an f64 angle differs from HF's
    // f32 one by far more than the 1e-6 the transformers comparison allows, for some pair.
    let (p, r, theta) = (4095usize, 64usize, 10_000.0f64);
    let worst = (0..r / 2)
        .map(|i| {
            let exact = p as f64 * theta.powf(-2.0 * i as f64 / r as f64);
            (f64::from(rope.cos_at(p)[i]) - exact.cos()).abs()
        })
        .fold(0.0, f64::max);
    assert!(worst > 1e-5, "tables look like exact-angle tables ({worst}), not HF's f32 angles");
    assert_eq!(rope_inv_freq(0, 64, 10_000.0), 1.0);
    // Tables straight from the kernel agree with the layer's.
    let (mut cos, mut sin) = (vec![0.0; 10 * 32], vec![0.0; 10 * 32]);
    rope_tables(64, 10_000.0, &mut cos, &mut sin);
    assert_eq!(&cos[9 * 32..], rope.cos_at(9));
    assert_eq!(&sin[9 * 32..], rope.sin_at(9));
    // Zero rotary dims: nothing rotates.
    let mut x = [1.0f32, 2.0, 3.0];
    rope_rotate(&mut x, &[], &[]);
    assert_eq!(x, [1.0, 2.0, 3.0]);
}

#[test]
#[should_panic(expected = "past the table")]
fn rope_position_past_the_table_panics() {
    let rope = Rope::new(4, 8, 8, 10_000.0);
    let batch = Batch::from_sequences(&[vec![0u32; 2]]).unwrap();
    let mut qkv = vec![0.0; 2 * 3 * 8];
    rope.apply(&mut qkv, &batch, Some(&[3]), 1, 1);
}

// ------------------------------------------------------------------------------------------------
// Grouped-query attention and sliding windows
// ------------------------------------------------------------------------------------------------

/// Naive f64 attention over fused `[Q (heads·hd) | K (kv·hd) | V (kv·hd)]` rows of one sequence
/// (`rows` rows, `valid[j]` for keys, query at index r has position `pos0 + r`, keys `0..`):
/// query r sees key j iff valid, `j ≤ pos0 + r`, and `j > pos0 + r − w`. Returns the context
/// (`rows × heads·hd`; zeros for a query that sees nothing) and, per element, the natural scale
/// `Σ P|v| / Σ P` the error bound is relative to.
struct Naive {
    out: Vec<f64>,
    scale: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn naive_gqa(
    q_rows: &[f32],
    kv_rows: &[f32],
    n_keys: usize,
    valid: &[bool],
    pos0: usize,
    shape: AttentionShape,
    hd: usize,
    scale: f32,
) -> Naive {
    let AttentionShape { heads, kv_heads, window } = shape;
    let q_stride = (heads + 2 * kv_heads) * hd;
    let kv_stride = q_stride;
    let rows = q_rows.len() / q_stride;
    let width = heads * hd;
    let group = heads / kv_heads;
    let (mut out, mut nat) = (vec![0.0; rows * width], vec![0.0; rows * width]);
    for r in 0..rows {
        let p = pos0 + r;
        let keys: Vec<usize> =
            (0..n_keys).filter(|&j| valid[j] && j <= p && window.is_none_or(|w| j + w > p)).collect();
        for h in 0..heads {
            let kvh = h / group;
            let qv = &q_rows[r * q_stride + h * hd..][..hd];
            let s: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let kv = &kv_rows[j * kv_stride + width + kvh * hd..][..hd];
                    qv.iter().zip(kv).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            if s.is_empty() {
                continue;
            }
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (&pj, &j) in e.iter().zip(&keys) {
                let vv = &kv_rows[j * kv_stride + width + kv_heads * hd + kvh * hd..][..hd];
                for d in 0..hd {
                    out[r * width + h * hd + d] += pj / sum * f64::from(vv[d]);
                    nat[r * width + h * hd + d] += pj / sum * f64::from(vv[d]).abs();
                }
            }
        }
    }
    Naive { out, scale: nat }
}

/// The bound of docs/NUMERICS.md for `n` keys (|q|, |k| ≤ 1, so Σ|q·scale·k| ≤ hd·scale), relative
/// to the natural scale, with a floor for outputs whose natural scale is tiny.
fn attention_tol(n: usize, hd: usize, scale: f32) -> f64 {
    let u = EPS32 / 2.0;
    let tiles = n.div_ceil(64) as f64;
    let ds = ((hd as f64 / 8.0).ceil() + 4.0) * u * hd as f64 * f64::from(scale);
    (n as f64 + 9.0 * tiles + 19.0) * u + 2.0 * ds
}

fn assert_close_to(got: &[f32], want: &Naive, n_keys: usize, hd: usize, scale: f32, what: &str) {
    let tol = attention_tol(n_keys, hd, scale);
    for (i, ((&g, &w), &s)) in got.iter().zip(&want.out).zip(&want.scale).enumerate() {
        assert!(g.is_finite(), "{what} [{i}]: {g}");
        assert!(
            (f64::from(g) - w).abs() <= tol * s + 1e-30,
            "{what} [{i}]: {g} vs {w} (scale {s}, tol {tol})"
        );
    }
}

const HD: usize = 8;

#[derive(Debug, Clone)]
struct GqaCase {
    lens: Vec<usize>,
    shape: AttentionShape,
    seed: u64,
}

fn gqa_case() -> impl Strategy<Value = GqaCase> {
    (
        prop::collection::vec(1usize..100, 1..4),
        prop::sample::select(vec![(1usize, 1usize), (2, 1), (4, 1), (4, 2), (3, 3), (6, 2)]),
        0u8..6,
        1usize..12,
        any::<u64>(),
    )
        .prop_map(|(lens, (heads, kv_heads), wmode, w, seed)| {
            let longest = *lens.iter().max().unwrap();
            let window = match wmode {
                0 => None,
                1 => Some(1),
                2 => Some(w),
                3 => Some(w + 60), // across a 64-key tile boundary
                4 => Some(longest.saturating_sub(1).max(1)),
                _ => Some(longest + w), // larger than every sequence
            };
            GqaCase { lens, shape: AttentionShape { heads, kv_heads, window }, seed }
        })
}

fn run_causal(qkv: &[f32], batch: &Batch, shape: AttentionShape, threads: &Threads) -> Vec<f32> {
    let mut ctx = vec![f32::NAN; batch.rows() * shape.heads * HD];
    causal_self_attention_with::<HD>(qkv, batch, shape, None, 1.0 / (HD as f32).sqrt(), &mut ctx, threads);
    ctx
}

proptest! {
    #![proptest_config(config())]

    /// GQA causal attention (with and without windows) over a right-padded batch: equals an f64
    /// naive implementation (bound of docs/NUMERICS.md), equals each sequence run alone (bit for
    /// bit), is the same on two threads (bit for bit), and padding rows are zeros.
    #[test]
    fn gqa_causal_attention_matches_f64_and_each_sequence_alone(c in gqa_case()) {
        let shape = c.shape;
        let stride = shape.qkv_width(HD);
        let seqs: Vec<Vec<u32>> = c.lens.iter().map(|&l| vec![1; l]).collect();
        let batch = Batch::from_sequences(&seqs).unwrap();
        let qkv = values(batch.rows() * stride, c.seed);
        let ctx = run_causal(&qkv, &batch, shape, &Threads::sequential());
        prop_assert_eq!(&ctx, &run_causal(&qkv, &batch, shape, &Threads::new(2).unwrap()));
        let (seq, width) = (batch.seq_len(), shape.heads * HD);
        for (b, &len) in c.lens.iter().enumerate() {
            let rows = &qkv[b * seq * stride..][..len * stride];
            let got = &ctx[b * seq * width..][..seq * width];
            let want = naive_gqa(rows, rows, len, &vec![true; len], 0, shape, HD, 1.0 / (HD as f32).sqrt());
            assert_close_to(&got[..len * width], &want, len, HD, 1.0 / (HD as f32).sqrt(), &format!("seq {b} {shape:?}"));
            prop_assert!(got[len * width..].iter().all(|&x| x == 0.0), "padding rows of seq {} not zero", b);
            let alone = Batch::from_sequences(&[vec![1u32; len]]).unwrap();
            prop_assert_eq!(&got[..len * width], &run_causal(rows, &alone, shape, &Threads::sequential())[..]);
        }
        if shape.window.is_some_and(|w| w >= *c.lens.iter().max().unwrap()) {
            // A window no shorter than every sequence is no window at all (same tiles, same bits).
            prop_assert_eq!(&ctx, &run_causal(&qkv, &batch, AttentionShape { window: None, ..shape }, &Threads::sequential()));
        }
    }
}

#[derive(Debug, Clone)]
struct WindowKernelCase {
    heads: usize,
    kv_heads: usize,
    keys: usize,
    q_rows: usize,
    q_pos0: usize,
    causal: bool,
    window: Option<usize>,
    key_valid: Option<Vec<bool>>,
    seed: u64,
}

fn window_kernel_case() -> impl Strategy<Value = WindowKernelCase> {
    (
        1usize..3,
        1usize..3,
        0usize..150,
        1usize..20,
        0usize..150,
        any::<bool>(),
        0usize..80,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(kv_heads, group, keys, q_rows, q_pos0, causal, w, masked, seed)| {
            prop::collection::vec(prop::bool::weighted(0.8), keys).prop_map(move |bits| WindowKernelCase {
                heads: kv_heads * group,
                kv_heads,
                keys,
                q_rows,
                q_pos0,
                causal,
                window: w.checked_sub(1),
                key_valid: masked.then(|| bits.clone()),
                seed,
            })
        })
}

proptest! {
    #![proptest_config(config())]

    /// The windowed tiled kernel (dispatched and portable) against the naive twin and an f64
    /// evaluation of the same mask, over separate Q/K/V views: random padding masks, causal or not,
    /// windows from 0 (sees nothing) to past two key tiles, queries anywhere.
    #[test]
    fn windowed_kernel_matches_twins(c in window_kernel_case()) {
        let (hq, hk) = (c.heads * HD, c.kv_heads * HD);
        let q = values(c.q_rows * hq, c.seed);
        let k = values(c.keys * hk, c.seed ^ 1);
        let v = values(c.keys * hk, c.seed ^ 2);
        let view = |data, rows, width| HeadRows { data, stride: width, offset: 0, rows };
        let mask = Mask { key_valid: c.key_valid.as_deref(), causal: c.causal, window: c.window, bias: None };
        let scale = 0.35;
        type F = fn(HeadRows<'_>, HeadRows<'_>, HeadRows<'_>, usize, usize, usize, Mask<'_>, f32, &mut [f32]);
        let run = |f: F| {
            let mut out = vec![f32::NAN; c.q_rows * hq];
            f(view(&q, c.q_rows, hq), view(&k, c.keys, hk), view(&v, c.keys, hk), c.heads, c.kv_heads, c.q_pos0, mask, scale, &mut out);
            out
        };
        let naive = run(attention_general_naive::<HD>);
        let group = c.heads / c.kv_heads;
        let tol = attention_tol(c.keys, HD, scale);
        for f in [attention_general::<HD> as F, attention_general_scalar::<HD>] {
            let got = run(f);
            for r in 0..c.q_rows {
                let p = c.q_pos0 + r;
                let visible: Vec<usize> = (0..c.keys).filter(|&j| mask.sees(p, j)).collect();
                for h in 0..c.heads {
                    let kvh = h / group;
                    let s: Vec<f64> = visible.iter().map(|&j| {
                        (0..HD).map(|d| f64::from(q[r * hq + h * HD + d]) * f64::from(k[j * hk + kvh * HD + d])).sum::<f64>() * f64::from(scale)
                    }).collect();
                    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..HD {
                        let at = r * hq + h * HD + d;
                        let (mut want, mut nat) = (0.0, 0.0);
                        for (&pj, &j) in e.iter().zip(&visible) {
                            want += pj / sum * f64::from(v[j * hk + kvh * HD + d]);
                            nat += pj / sum * f64::from(v[j * hk + kvh * HD + d]).abs();
                        }
                        prop_assert!(got[at].is_finite());
                        if visible.is_empty() {
                            prop_assert_eq!(got[at], 0.0);
                        }
                        prop_assert!((f64::from(got[at]) - want).abs() <= tol * nat + 1e-30,
                            "row {} head {} d {}: {} vs {} (window {:?})", r, h, d, got[at], want, c.window);
                        prop_assert!((got[at] - naive[at]).abs() <= 1e-5, "vs naive twin: {} vs {}", got[at], naive[at]);
                    }
                }
            }
        }
    }
}

#[test]
fn windowed_cached_steps_equal_full_recompute() {
    let scale = 1.0 / (HD as f32).sqrt();
    for (heads, kv_heads, window) in
        [(4, 2, Some(5)), (4, 1, Some(70)), (2, 2, Some(1)), (6, 3, None), (4, 2, Some(500))]
    {
        let shape = AttentionShape { heads, kv_heads, window };
        let stride = shape.qkv_width(HD);
        let width = heads * HD;
        // Two sequences of 140 and 97 tokens: a prefill of 75 / 3 tokens, then steps of (2, 1)
        // and (1, 2) tokens (right padding in the step batch), then single tokens to the end.
        // (Every step has a token for each sequence: a cached step has one sequence per cached
        // sequence, and a sequence cannot be empty.)
        let total = [140usize, 97];
        let all: Vec<Vec<f32>> = (0..2).map(|b| values(total[b] * stride, 100 + b as u64)).collect();
        let mut cache = KvCache::new(1, 2, 256, kv_heads * HD);
        let mut done = [0usize; 2];
        let mut plan = vec![[75usize, 3], [2, 1]];
        plan.extend(std::iter::repeat_n([1, 2], 30));
        plan.extend(std::iter::repeat_n([1, 1], 33));
        let mut steps = 0;
        for &n in &plan {
            let seq = n[0].max(n[1]);
            // Padding rows are NaN: the step must never read them.
            let mut qkv = vec![f32::NAN; 2 * seq * stride];
            for b in 0..2 {
                qkv[b * seq * stride..][..n[b] * stride]
                    .copy_from_slice(&all[b][done[b] * stride..][..n[b] * stride]);
            }
            let batch = Batch::from_sequences(&[vec![1u32; n[0]], vec![1u32; n[1]]]).unwrap();
            cache.check_step(&batch).unwrap();
            let mut ctx = vec![f32::NAN; 2 * seq * width];
            cached_causal_attention_with::<HD>(
                &qkv,
                &batch,
                &mut cache,
                0,
                shape,
                None,
                scale,
                &mut ctx,
                &Threads::sequential(),
            );
            for b in 0..2 {
                // The same rows from a full recompute of the sequence so far.
                let upto = done[b] + n[b];
                let full_batch = Batch::from_sequences(&[vec![1u32; upto]]).unwrap();
                let full = run_causal(&all[b][..upto * stride], &full_batch, shape, &Threads::sequential());
                let got = &ctx[b * seq * width..][..n[b] * width];
                let want = &full[done[b] * width..upto * width];
                for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5,
                        "{shape:?} seq {b} step {steps} [{i}]: cached {g} vs full {w}"
                    );
                }
                let rows = &all[b][..upto * stride];
                let naive = naive_gqa(
                    &rows[done[b] * stride..],
                    rows,
                    upto,
                    &vec![true; upto],
                    done[b],
                    shape,
                    HD,
                    scale,
                );
                assert_close_to(
                    got,
                    &naive,
                    upto,
                    HD,
                    scale,
                    &format!("{shape:?} seq {b} step {steps} vs f64"),
                );
                assert!(ctx[(b * seq + n[b]) * width..(b + 1) * seq * width].iter().all(|&x| x == 0.0));
            }
            cache.advance_batch(&batch);
            done = [done[0] + n[0], done[1] + n[1]];
            steps += 1;
        }
        assert_eq!(done, total, "{shape:?}: the plan did not reach the end");
        assert!(steps > 40);
    }
}

#[test]
fn plain_functions_are_the_mha_no_window_case() {
    let (heads, len) = (3, 45);
    let scale = 0.3;
    let batch = Batch::from_sequences(&[vec![1u32; len], vec![1u32; 20]]).unwrap();
    let shape = AttentionShape::mha(heads);
    let qkv = values(batch.rows() * shape.qkv_width(HD), 7);
    let width = heads * HD;
    let (mut a, mut b) = (vec![f32::NAN; batch.rows() * width], vec![f32::NAN; batch.rows() * width]);
    causal_self_attention::<HD>(&qkv, &batch, heads, scale, &mut a, &Threads::sequential());
    causal_self_attention_with::<HD>(&qkv, &batch, shape, None, scale, &mut b, &Threads::sequential());
    assert_eq!(a, b);
    let (mut ca, mut cb) = (KvCache::new(2, 2, 64, width), KvCache::new(2, 2, 64, width));
    cached_causal_attention::<HD>(&qkv, &batch, &mut ca, 1, heads, scale, &mut a, &Threads::sequential());
    cached_causal_attention_with::<HD>(
        &qkv,
        &batch,
        &mut cb,
        1,
        shape,
        None,
        scale,
        &mut b,
        &Threads::sequential(),
    );
    assert_eq!(a, b);
}

/// The sliding window skips the key tiles before it: the tiled kernel's score counter (dot products
/// computed on this thread) stays within `rows · (w + Q_BLOCK − 1)` per head (a block of
/// `Q_BLOCK` queries scans at most `w + Q_BLOCK − 1` keys), where full causal attention computes
/// about `rows² / 2`. Would fail if tiles were only masked instead of skipped.
#[test]
fn sliding_window_skips_tiles_outside_it() {
    let (s, w, heads) = (512usize, 16usize, 2usize);
    let shape = AttentionShape { heads, kv_heads: 1, window: Some(w) };
    let batch = Batch::from_sequences(&[vec![1u32; s]]).unwrap();
    let qkv = values(s * shape.qkv_width(HD), 3);
    let threads = Threads::sequential();

    let before = scores_computed();
    let windowed = run_causal(&qkv, &batch, shape, &threads);
    let windowed_scores = scores_computed() - before;
    let before = scores_computed();
    let full = run_causal(&qkv, &batch, AttentionShape { window: None, ..shape }, &threads);
    let full_scores = scores_computed() - before;
    assert!(windowed.iter().all(|x| x.is_finite()) && full.iter().all(|x| x.is_finite()));

    let bound = (heads * s * (w + Q_BLOCK - 1)) as u64;
    assert!(windowed_scores > 0, "the counter does not count");
    assert!(windowed_scores <= bound, "windowed pass computed {windowed_scores} scores, bound {bound}");
    assert!(full_scores >= (heads * s * s / 2) as u64, "full causal computed only {full_scores} scores");

    // A decode step at position 3000 against a full cache: exactly w keys per head.
    let (len, max) = (3000usize, 3100usize);
    let shape = AttentionShape { heads, kv_heads: 1, window: Some(w) };
    let stride = shape.qkv_width(HD);
    let mut cache = KvCache::new(1, 1, max, HD);
    let prefill = Batch::from_sequences(&[vec![1u32; len]]).unwrap();
    let qkv = values(len * stride, 4);
    let mut ctx = vec![0.0; len * heads * HD];
    cached_causal_attention_with::<HD>(&qkv, &prefill, &mut cache, 0, shape, None, 0.3, &mut ctx, &threads);
    cache.advance_batch(&prefill);
    let step = Batch::from_sequences(&[vec![1u32]]).unwrap();
    let qkv = values(stride, 5);
    let mut ctx = vec![0.0; heads * HD];
    let before = scores_computed();
    cached_causal_attention_with::<HD>(&qkv, &step, &mut cache, 0, shape, None, 0.3, &mut ctx, &threads);
    assert_eq!(
        scores_computed() - before,
        (heads * w) as u64,
        "a decode step scanned keys outside its window"
    );
}
