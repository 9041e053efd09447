//! The encoder-decoder building blocks: the attention kernel's additive position bias, T5's
//! relative buckets and ALiBi's slopes (against transformers via tests/fixtures/position_bias.json,
//! written by scripts/reference/position_bias.py), bidirectional and causal self-attention with a
//! bias (full and cached), cross-attention, and the gated feed-forward activations — each against
//! an f64 twin over random shapes.
//!
//! Tolerances follow docs/NUMERICS.md's attention bound (relative to the natural scale
//! `Σ P|v| / Σ P` of each output), widened by the rounding of the bias add; an indexing, offset or
//! masking bug shows up as an O(0.01..1) error.

use std::path::Path;

use ndarray::ArrayView2;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
use transformer_runtime::kernels::activation::{gated, swiglu};
use transformer_runtime::kernels::attention::{
    attention_general, attention_general_naive, attention_general_scalar, HeadRows, Mask, PositionBias,
};
use transformer_runtime::layers::{
    cached_causal_attention_with, causal_self_attention_with, cross_attention, self_attention,
    self_attention_with, t5_bucket, Alibi, AttentionShape, RelativeBias,
};
use transformer_runtime::{Activation, Batch, KvCache, Threads};

const EPS32: f64 = f32::EPSILON as f64;
const HD: usize = 8;

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
// f64 reference
// ------------------------------------------------------------------------------------------------

/// Strided rows of one operand: row `r`, head `h` is `data[r * stride + offset + h * HD..][..HD]`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    offset: usize,
}

impl Rows<'_> {
    fn head(&self, r: usize, h: usize) -> &[f32] {
        &self.data[r * self.stride + self.offset + h * HD..][..HD]
    }
}

/// An f64 reference output (`n_q × heads·HD`; zeros for a query that sees nothing) and, per
/// element, the natural scale `Σ P|v| / Σ P` the error bound is relative to.
struct Reference {
    out: Vec<f64>,
    scale: Vec<f64>,
}

/// Naive f64 attention: query `r` sees key `j` iff `sees(r, j)`, score
/// `q·k·scale + bias(h, r, j)`; query head `h` reads key/value head `h / (heads / kv_heads)`.
#[allow(clippy::too_many_arguments)]
fn reference(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    (n_q, n_k): (usize, usize),
    (heads, kv_heads): (usize, usize),
    scale: f32,
    sees: impl Fn(usize, usize) -> bool,
    bias: impl Fn(usize, usize, usize) -> f64,
) -> Reference {
    let width = heads * HD;
    let group = heads / kv_heads;
    let (mut out, mut nat) = (vec![0.0; n_q * width], vec![0.0; n_q * width]);
    for r in 0..n_q {
        let keys: Vec<usize> = (0..n_k).filter(|&j| sees(r, j)).collect();
        for h in 0..heads {
            let kvh = h / group;
            let s: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let dot: f64 = q
                        .head(r, h)
                        .iter()
                        .zip(k.head(j, kvh))
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    dot * f64::from(scale) + bias(h, r, j)
                })
                .collect();
            if s.is_empty() {
                continue;
            }
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (&p, &j) in e.iter().zip(&keys) {
                for (d, &x) in v.head(j, kvh).iter().enumerate() {
                    out[r * width + h * HD + d] += p / sum * f64::from(x);
                    nat[r * width + h * HD + d] += p / sum * f64::from(x).abs();
                }
            }
        }
    }
    Reference { out, scale: nat }
}

/// The bound of docs/NUMERICS.md for `n` keys (|q|, |k| ≤ 1, so Σ|q·scale·k| ≤ HD·scale), plus
/// the bias add: one more rounding of a score of magnitude ≤ HD·scale + |bias| (twice: the score
/// and the running max it is compared with).
fn attention_tol(n: usize, scale: f32, bias_max: f64) -> f64 {
    let u = EPS32 / 2.0;
    let tiles = n.div_ceil(64) as f64;
    let ds = ((HD as f64 / 8.0).ceil() + 4.0) * u * HD as f64 * f64::from(scale);
    (n as f64 + 9.0 * tiles + 19.0) * u + 2.0 * ds + 4.0 * u * (bias_max + HD as f64 * f64::from(scale))
}

fn assert_close(got: &[f32], want: &Reference, tol: f64, what: &str) {
    assert_eq!(got.len(), want.out.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(&want.out).zip(&want.scale).enumerate() {
        assert!(g.is_finite(), "{what} [{i}]: {g}");
        assert!(
            (f64::from(g) - w).abs() <= tol * s + 1e-30,
            "{what} [{i}]: {g} vs {w} (scale {s}, tol {tol})"
        );
    }
}

/// A random bias table for `heads` heads covering the offsets `−back..=forward`, with `slack`
/// extra offsets on each side and `extra` floats past the last row (the kernel must only read the
/// entries of the offsets it needs; everything else is NaN so a wrong index poisons the output).
struct Table {
    table: Vec<f32>,
    span: usize,
    center: usize,
}

impl Table {
    fn new(heads: usize, back: usize, forward: usize, slack: (usize, usize), mag: f32, seed: u64) -> Self {
        let center = back + slack.0;
        let span = center + forward + slack.1 + 1;
        let mut table: Vec<f32> = values(heads * span, seed).into_iter().map(|x| x * mag).collect();
        for row in table.chunks_exact_mut(span) {
            row[..slack.0].fill(f32::NAN);
            row[span - slack.1..].fill(f32::NAN);
        }
        table.extend(std::iter::repeat_n(f32::NAN, 3));
        Self { table, span, center }
    }

    fn bias(&self) -> PositionBias<'_> {
        PositionBias { table: &self.table, span: self.span, center: self.center }
    }
}

// ------------------------------------------------------------------------------------------------
// The kernel's position bias
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct BiasKernelCase {
    heads: usize,
    kv_heads: usize,
    keys: usize,
    q_rows: usize,
    q_pos0: usize,
    causal: bool,
    window: Option<usize>,
    key_valid: Option<Vec<bool>>,
    slack: (usize, usize),
    mag: f32,
    seed: u64,
}

fn bias_kernel_case() -> impl Strategy<Value = BiasKernelCase> {
    (
        (1usize..4, 1usize..3),
        0usize..150,
        1usize..20,
        0usize..150,
        (any::<bool>(), 0usize..6, 1usize..80),
        any::<bool>(),
        (0usize..3, 0usize..3),
        prop::sample::select(vec![0.5f32, 4.0, 30.0]),
        any::<u64>(),
    )
        .prop_flat_map(
            |((kv_heads, group), keys, q_rows, q_pos0, (causal, wmode, w), masked, slack, mag, seed)| {
                prop::collection::vec(prop::bool::weighted(0.8), keys).prop_map(move |bits| BiasKernelCase {
                    heads: kv_heads * group,
                    kv_heads,
                    keys,
                    q_rows,
                    q_pos0,
                    causal,
                    window: match wmode {
                        0 | 1 => None,
                        2 => Some(w % 5),
                        _ => Some(w),
                    },
                    key_valid: masked.then(|| bits.clone()),
                    slack,
                    mag,
                    seed,
                })
            },
        )
}

type AttentionFn =
    fn(HeadRows<'_>, HeadRows<'_>, HeadRows<'_>, usize, usize, usize, Mask<'_>, f32, &mut [f32]);

proptest! {
    #![proptest_config(config())]

    /// The tiled kernel with a random bias table (dispatched SIMD path and portable twin) against an
    /// f64 evaluation and the naive twin, and SIMD against the scalar twin: random heads / kv_heads,
    /// queries anywhere, causal or not, windows, padding masks (which switch the bias add from the
    /// contiguous to the gathered path), biases up to ±30 (they decide the running max). The table
    /// covers exactly what the call may touch (or a little more) and is NaN elsewhere.
    #[test]
    fn biased_kernel_matches_twins(c in bias_kernel_case()) {
        let (hq, hk) = (c.heads * HD, c.kv_heads * HD);
        let q = values(c.q_rows * hq, c.seed);
        let k = values(c.keys * hk, c.seed ^ 1);
        let v = values(c.keys * hk, c.seed ^ 2);
        // Offsets from the last query back to key 0 and from the first query to the last key.
        let back = c.q_pos0 + c.q_rows - 1;
        let forward = c.keys.saturating_sub(1).saturating_sub(c.q_pos0);
        let table = Table::new(c.heads, back, forward, c.slack, c.mag, c.seed ^ 3);
        let mask = Mask { key_valid: c.key_valid.as_deref(), causal: c.causal, window: c.window, bias: Some(table.bias()) };
        let view = |data, rows, width| HeadRows { data, stride: width, offset: 0, rows };
        let scale = 0.35;
        let run = |f: AttentionFn, mask: Mask<'_>| {
            let mut out = vec![f32::NAN; c.q_rows * hq];
            f(view(&q, c.q_rows, hq), view(&k, c.keys, hk), view(&v, c.keys, hk), c.heads, c.kv_heads, c.q_pos0, mask, scale, &mut out);
            out
        };
        let want = reference(
            Rows { data: &q, stride: hq, offset: 0 },
            Rows { data: &k, stride: hk, offset: 0 },
            Rows { data: &v, stride: hk, offset: 0 },
            (c.q_rows, c.keys),
            (c.heads, c.kv_heads),
            scale,
            |r, j| mask.sees(c.q_pos0 + r, j),
            |h, r, j| f64::from(table.bias().at(h, c.q_pos0 + r, j)),
        );
        let tol = attention_tol(c.keys, scale, f64::from(c.mag));
        let naive = run(attention_general_naive::<HD>, mask);
        assert_close(&naive, &want, tol, "naive twin");
        let simd = run(attention_general::<HD>, mask);
        let scalar = run(attention_general_scalar::<HD>, mask);
        assert_close(&simd, &want, tol, &format!("dispatched {c:?}"));
        assert_close(&scalar, &want, tol, &format!("scalar {c:?}"));
        for (i, ((&a, &b), &n)) in simd.iter().zip(&scalar).zip(&naive).enumerate() {
            prop_assert!((a - b).abs() <= 1e-5, "[{}] SIMD {} vs scalar twin {}", i, a, b);
            prop_assert!((a - n).abs() <= 1e-5, "[{}] SIMD {} vs naive twin {}", i, a, n);
        }
        // An all-zero table changes nothing, bit for bit (x + 0 = x): the bias is added, not mixed
        // into the arithmetic of the scores.
        let zeros = vec![0.0; table.table.len()];
        let zero = PositionBias { table: &zeros, ..table.bias() };
        let unbiased = Mask { bias: None, ..mask };
        prop_assert_eq!(run(attention_general::<HD>, Mask { bias: Some(zero), ..mask }), run(attention_general::<HD>, unbiased));
        prop_assert_eq!(run(attention_general_scalar::<HD>, Mask { bias: Some(zero), ..mask }), run(attention_general_scalar::<HD>, unbiased));
    }
}

/// A bias that is a constant per head (zero slope) shifts every score of a row equally: the
/// output equals the unbiased one up to rounding; a steep ALiBi-like slope makes each query attend
/// almost only to its nearest visible key.
#[test]
fn bias_shifts_and_steep_slopes() {
    let (heads, keys) = (2usize, 100usize);
    let q = values(keys * heads * HD, 1);
    let kv = values(keys * heads * HD, 2);
    let view = |data, rows| HeadRows { data, stride: heads * HD, offset: 0, rows };
    let run = |bias: Option<PositionBias<'_>>| {
        let mut out = vec![f32::NAN; keys * heads * HD];
        let mask = Mask { key_valid: None, causal: true, window: None, bias };
        attention_general::<HD>(
            view(&q, keys),
            view(&kv, keys),
            view(&kv, keys),
            heads,
            heads,
            0,
            mask,
            0.3,
            &mut out,
        );
        out
    };
    let span = 2 * keys - 1;
    let constant: Vec<f32> = (0..heads * span).map(|i| if i < span { 7.5 } else { -3.0 }).collect();
    let plain = run(None);
    let shifted = run(Some(PositionBias { table: &constant, span, center: keys - 1 }));
    for (i, (&a, &b)) in plain.iter().zip(&shifted).enumerate() {
        assert!((a - b).abs() <= 1e-5, "[{i}] {a} vs {b}");
    }
    let steep: Vec<f32> =
        (0..heads * span).map(|i| 100.0 * ((i % span) as f32 - (keys - 1) as f32)).collect();
    let nearest = run(Some(PositionBias { table: &steep, span, center: keys - 1 }));
    for r in 0..keys {
        for (d, &x) in nearest[r * heads * HD..][..heads * HD].iter().enumerate() {
            let want = kv[r * heads * HD + d];
            assert!((x - want).abs() <= 1e-5, "row {r} [{d}]: {x} vs its own value {want}");
        }
    }
}

fn run_kernel_with(bias: PositionBias<'_>, heads: usize, keys: usize, q_rows: usize, q_pos0: usize) {
    let q = vec![0.0; q_rows * heads * HD];
    let kv = vec![0.0; keys * heads * HD];
    let view = |data, rows| HeadRows { data, stride: heads * HD, offset: 0, rows };
    let mask = Mask { key_valid: None, causal: false, window: None, bias: Some(bias) };
    let mut out = vec![0.0; q_rows * heads * HD];
    attention_general::<HD>(
        view(&q, q_rows),
        view(&kv, keys),
        view(&kv, keys),
        heads,
        heads,
        q_pos0,
        mask,
        1.0,
        &mut out,
    );
}

#[test]
fn a_table_that_covers_the_call_exactly_is_accepted() {
    // 5 queries at 3..8, 10 keys: offsets −7..=6.
    let table = vec![0.0; 2 * 14];
    run_kernel_with(PositionBias { table: &table, span: 14, center: 7 }, 2, 10, 5, 3);
    // No keys or no queries: nothing is read, any center will do.
    run_kernel_with(PositionBias { table: &table, span: 14, center: 0 }, 2, 0, 5, 3);
    run_kernel_with(PositionBias { table: &table, span: 14, center: 0 }, 2, 10, 0, 3);
}

#[test]
#[should_panic(expected = "fewer than heads × span")]
fn a_table_with_too_few_rows_panics() {
    let table = vec![0.0; 2 * 14 - 1];
    run_kernel_with(PositionBias { table: &table, span: 14, center: 7 }, 2, 10, 5, 3);
}

#[test]
#[should_panic(expected = "before the last query position 7")]
fn a_table_that_does_not_reach_back_panics() {
    let table = vec![0.0; 2 * 14];
    run_kernel_with(PositionBias { table: &table, span: 14, center: 6 }, 2, 10, 5, 3);
}

#[test]
#[should_panic(expected = "does not reach offset 6")]
fn a_table_that_does_not_reach_forward_panics() {
    let table = vec![0.0; 2 * 13];
    run_kernel_with(PositionBias { table: &table, span: 13, center: 7 }, 2, 10, 5, 3);
}

// ------------------------------------------------------------------------------------------------
// T5 buckets and ALiBi slopes against transformers
// ------------------------------------------------------------------------------------------------

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/position_bias.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn t5_buckets_match_transformers() {
    let fixture = fixture();
    let settings = fixture["t5_buckets"].as_array().unwrap();
    assert!(settings.len() >= 5);
    for s in settings {
        let (buckets, max_distance) = (usize_of(&s["num_buckets"]), usize_of(&s["max_distance"]));
        let bidirectional = s["bidirectional"].as_bool().unwrap();
        let first = s["first"].as_i64().unwrap();
        let want = s["buckets"].as_array().unwrap();
        assert_eq!(want.len(), 601);
        for (i, w) in want.iter().enumerate() {
            let rel = first + i as i64;
            assert_eq!(
                t5_bucket(rel, bidirectional, buckets, max_distance),
                usize_of(w),
                "bucket of {rel} ({buckets} buckets, max distance {max_distance}, bidirectional {bidirectional})"
            );
        }
    }
}

/// T5's defaults put distances 16, 32 and 64 exactly on bin boundaries: the float32 quotient and
/// the exact one truncate the same way there (checked against torch by the fixture), and the bins
/// are monotone in the distance and saturate at the last bucket.
#[test]
fn t5_buckets_are_monotone_and_saturate() {
    for (buckets, max_distance, bidirectional) in [(32, 128, true), (32, 128, false), (8, 20, true)] {
        let n = if bidirectional { buckets / 2 } else { buckets };
        let mut last = 0;
        for d in 0..5000i64 {
            let b = t5_bucket(-d, bidirectional, buckets, max_distance);
            assert!(b >= last && b < n, "distance {d}: bucket {b} after {last}");
            last = b;
            if bidirectional {
                assert_eq!(t5_bucket(d, true, buckets, max_distance), if d == 0 { 0 } else { n + b });
            } else {
                assert_eq!(t5_bucket(d, false, buckets, max_distance), 0, "keys ahead share bucket 0");
            }
        }
        assert_eq!(last, n - 1);
        assert_eq!(t5_bucket(i64::MIN, bidirectional, buckets, max_distance), n - 1);
    }
}

#[test]
#[should_panic(expected = "need at least 2 buckets per direction")]
fn t5_buckets_reject_a_degenerate_configuration() {
    t5_bucket(5, true, 2, 128);
}

#[test]
fn t5_relative_bias_matches_compute_bias() {
    let fixture = fixture();
    for case in fixture["t5_bias"].as_array().unwrap() {
        let (heads, buckets) = (usize_of(&case["heads"]), usize_of(&case["num_buckets"]));
        let max_distance = usize_of(&case["max_distance"]);
        let bidirectional = case["bidirectional"].as_bool().unwrap();
        let (q_len, k_len) = (usize_of(&case["q_len"]), usize_of(&case["k_len"]));
        let weight = f32s(&case["weight"]);
        let want = f32s(&case["bias"]); // [heads, q, k]
        let rel = RelativeBias::from_weight(&weight, heads, buckets, max_distance, bidirectional, 16);
        assert_eq!(rel.heads(), heads);
        let bias = rel.bias();
        assert_eq!((bias.span, bias.center), (31, 15));
        for h in 0..heads {
            for p in 0..q_len {
                for j in 0..k_len {
                    assert_eq!(
                        bias.at(h, p, j),
                        want[(h * q_len + p) * k_len + j],
                        "head {h} query {p} key {j} (bidirectional {bidirectional})"
                    );
                }
            }
        }
    }
}

#[test]
fn relative_bias_loads_its_weight() {
    use transformer_runtime::WeightLoader;
    let (heads, buckets) = (2usize, 8usize);
    let weight: Vec<f32> = (0..heads * buckets).map(|i| i as f32).collect();
    let header = format!(
        r#"{{"enc.relative_attention_bias.weight":{{"dtype":"F32","shape":[{buckets},{heads}],"data_offsets":[0,{}]}}}}"#,
        weight.len() * 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(weight.iter().flat_map(|x| x.to_le_bytes()));
    let mut loader = WeightLoader::from_bytes(bytes, "t5").unwrap();
    let rel =
        RelativeBias::load(&mut loader, "enc.relative_attention_bias.weight", heads, buckets, 12, true, 5);
    loader.finish().unwrap();
    assert_eq!(rel.bias().table.len(), heads * 9);
    let direct = RelativeBias::from_weight(&weight, heads, buckets, 12, true, 5);
    assert_eq!(rel.bias().table, direct.bias().table);
    // Offset −1: bucket 1 (exact); offset +1: bucket 4 + 1.
    assert_eq!(rel.bias().at(1, 3, 2), weight[heads + 1]);
    assert_eq!(rel.bias().at(0, 2, 3), weight[5 * heads]);
    // A missing tensor is reported by `finish`, not a panic.
    let mut loader = WeightLoader::from_bytes(
        {
            let header = "{}";
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend(header.as_bytes());
            b
        },
        "empty",
    )
    .unwrap();
    let _ = RelativeBias::load(&mut loader, "missing.weight", heads, buckets, 12, true, 5);
    assert!(loader.finish().is_err());
}

#[test]
fn alibi_slopes_match_transformers() {
    let fixture = fixture();
    let cases = fixture["alibi"].as_array().unwrap();
    for case in cases {
        let heads = usize_of(&case["heads"]);
        let want = f32s(&case["slopes"]);
        let got = Alibi::slopes(heads);
        assert_eq!(got.len(), heads);
        for (h, (&g, &w)) in got.iter().zip(&want).enumerate() {
            // Exact up to 31 heads; torch's vectorised powf may be 1 ulp off the correctly rounded
            // power beyond (see `Alibi::slopes`).
            let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
            let allowed = if heads < 32 { 0 } else { 1 };
            assert!(ulps <= allowed, "{heads} heads, slope {h}: {g} vs transformers {w} ({ulps} ulp)");
        }
    }
    assert!(cases.iter().any(|c| usize_of(&c["heads"]) == 16));
    let alibi = Alibi::new(12, 50);
    assert_eq!(alibi.heads(), 12);
    let slopes = Alibi::slopes(12);
    let bias = alibi.bias();
    assert_eq!((bias.span, bias.center, bias.table.len()), (99, 49, 12 * 99));
    for h in 0..12 {
        for (p, j) in [(0, 0), (49, 0), (10, 3), (3, 10), (0, 49)] {
            assert_eq!(bias.at(h, p, j), slopes[h] * (j as f32 - p as f32));
        }
    }
}

/// MosaicBERT's bidirectional ALiBi: `−slope · |j − p|` on both sides of the query, and on keys at
/// or before it the same bits as BLOOM's table.
#[test]
fn symmetric_alibi_penalises_distance_both_ways() {
    let (alibi, symmetric) = (Alibi::new(6, 40), Alibi::symmetric(6, 40));
    let slopes = Alibi::slopes(6);
    let (causal, bias) = (alibi.bias(), symmetric.bias());
    assert_eq!((bias.span, bias.center, bias.table.len()), (79, 39, 6 * 79));
    for h in 0..6 {
        for p in 0..40 {
            for j in 0..40 {
                let want = -(slopes[h] * (j as f32 - p as f32).abs());
                assert_eq!(bias.at(h, p, j), want, "head {h}, query {p}, key {j}");
                if j <= p {
                    assert_eq!(bias.at(h, p, j).to_bits(), causal.at(h, p, j).to_bits());
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Self-attention with a bias, full and cached
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct LayerCase {
    lens: Vec<usize>,
    shape: AttentionShape,
    mag: f32,
    seed: u64,
}

fn layer_case(windows: bool) -> impl Strategy<Value = LayerCase> {
    (
        prop::collection::vec(1usize..90, 1..4),
        prop::sample::select(vec![(1usize, 1usize), (2, 1), (4, 2), (3, 3), (6, 2)]),
        0usize..4,
        1usize..70,
        prop::sample::select(vec![0.5f32, 4.0, 30.0]),
        any::<u64>(),
    )
        .prop_map(move |(lens, (heads, kv_heads), wmode, w, mag, seed)| LayerCase {
            lens,
            shape: AttentionShape { heads, kv_heads, window: (windows && wmode == 0).then_some(w) },
            mag,
            seed,
        })
}

/// A right-padded batch of `lens` whose rows at or past a sequence's length are NaN in `qkv`
/// (never read), plus an interior masked token in sequences longer than 3 (a padding key the
/// kernel must skip; its query row is still computed).
fn padded_batch(lens: &[usize], stride: usize, seed: u64) -> (Batch, Vec<f32>) {
    let seq = *lens.iter().max().unwrap();
    let mut mask = vec![false; lens.len() * seq];
    for (b, &len) in lens.iter().enumerate() {
        mask[b * seq..b * seq + len].fill(true);
        if len > 3 {
            mask[b * seq + 1] = false;
        }
    }
    let batch = masked_batch(&mask, lens.len(), seq);
    let mut qkv = values(batch.rows() * stride, seed);
    for (b, &len) in lens.iter().enumerate() {
        qkv[(b * seq + len) * stride..(b + 1) * seq * stride].fill(f32::NAN);
    }
    (batch, qkv)
}

/// A batch of `batch` sequences of `seq` tokens with the padding mask `mask`.
fn masked_batch(mask: &[bool], batch: usize, seq: usize) -> Batch {
    let ids = vec![1u32; batch * seq];
    let flags: Vec<u32> = mask.iter().map(|&m| u32::from(m)).collect();
    let view = |data| ArrayView2::from_shape((batch, seq), data).unwrap();
    Batch::from_padded(view(&ids), view(&flags), None).unwrap()
}

fn run_self(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    bias: Option<PositionBias<'_>>,
    t: &Threads,
) -> Vec<f32> {
    let mut ctx = vec![f32::NAN; batch.rows() * shape.heads * HD];
    self_attention_with::<HD>(qkv, batch, shape, bias, 1.0 / (HD as f32).sqrt(), &mut ctx, t);
    ctx
}

fn run_causal(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    bias: Option<PositionBias<'_>>,
    t: &Threads,
) -> Vec<f32> {
    let mut ctx = vec![f32::NAN; batch.rows() * shape.heads * HD];
    causal_self_attention_with::<HD>(qkv, batch, shape, bias, 1.0 / (HD as f32).sqrt(), &mut ctx, t);
    ctx
}

/// Checks one layer output per sequence against the f64 reference (`causal`: keys `j ≤ r` and
/// inside the window), padding rows zero.
fn check_layer(
    ctx: &[f32],
    qkv: &[f32],
    batch: &Batch,
    lens: &[usize],
    shape: AttentionShape,
    table: &Table,
    mag: f32,
    causal: bool,
) {
    let AttentionShape { heads, kv_heads, window } = shape;
    let (seq, width, stride) = (batch.seq_len(), heads * HD, shape.qkv_width(HD));
    let scale = 1.0 / (HD as f32).sqrt();
    for (b, &len) in lens.iter().enumerate() {
        let rows = &qkv[b * seq * stride..][..len * stride];
        let mask = batch.mask_of(b);
        let sees = |r: usize, j: usize| mask[j] && (!causal || (j <= r && window.is_none_or(|w| j + w > r)));
        let want = reference(
            Rows { data: rows, stride, offset: 0 },
            Rows { data: rows, stride, offset: width },
            Rows { data: rows, stride, offset: width + kv_heads * HD },
            (len, len),
            (heads, kv_heads),
            scale,
            sees,
            |h, r, j| f64::from(table.bias().at(h, r, j)),
        );
        let got = &ctx[b * seq * width..(b + 1) * seq * width];
        assert_close(
            &got[..len * width],
            &want,
            attention_tol(len, scale, f64::from(mag)),
            &format!("seq {b} {shape:?}"),
        );
        assert!(got[len * width..].iter().all(|&x| x == 0.0), "padding rows of seq {b} not zero");
    }
}

proptest! {
    #![proptest_config(config())]

    /// Bidirectional GQA self-attention with a bias over a padded batch: equals the f64 reference
    /// per sequence, is bit-identical on two threads and for each sequence run alone, and without a
    /// bias equals `self_attention` on the real rows (MHA).
    #[test]
    fn biased_self_attention_matches_f64(c in layer_case(false)) {
        let shape = c.shape;
        let (batch, qkv) = padded_batch(&c.lens, shape.qkv_width(HD), c.seed);
        let longest = batch.seq_len();
        let table = Table::new(shape.heads, longest - 1, longest - 1, (1, 2), c.mag, c.seed ^ 9);
        let ctx = run_self(&qkv, &batch, shape, Some(table.bias()), &Threads::sequential());
        check_layer(&ctx, &qkv, &batch, &c.lens, shape, &table, c.mag, false);
        prop_assert_eq!(&ctx, &run_self(&qkv, &batch, shape, Some(table.bias()), &Threads::new(2).unwrap()));
        let (seq, width, stride) = (batch.seq_len(), shape.heads * HD, shape.qkv_width(HD));
        for (b, &len) in c.lens.iter().enumerate() {
            let alone = masked_batch(&batch.mask_of(b)[..len], 1, len);
            let rows = &qkv[b * seq * stride..][..len * stride];
            prop_assert_eq!(&ctx[b * seq * width..][..len * width], &run_self(rows, &alone, shape, Some(table.bias()), &Threads::sequential())[..]);
        }
        if shape.kv_heads == shape.heads {
            let plain = run_self(&qkv, &batch, shape, None, &Threads::sequential());
            let clean: Vec<f32> = qkv.iter().map(|&x| if x.is_nan() { 0.0 } else { x }).collect();
            let mut want = vec![f32::NAN; batch.rows() * width];
            self_attention::<HD>(&clean, &batch, shape.heads, 1.0 / (HD as f32).sqrt(), &mut want, &Threads::sequential());
            for (b, &len) in c.lens.iter().enumerate() {
                prop_assert_eq!(&plain[b * seq * width..][..len * width], &want[b * seq * width..][..len * width]);
            }
        }
    }

    /// Causal GQA self-attention (with windows) and a bias: equals the f64 reference, and is the
    /// same on two threads.
    #[test]
    fn biased_causal_attention_matches_f64(c in layer_case(true)) {
        let shape = c.shape;
        let (batch, qkv) = padded_batch(&c.lens, shape.qkv_width(HD), c.seed);
        let longest = batch.seq_len();
        let table = Table::new(shape.heads, longest - 1, longest - 1, (0, 0), c.mag, c.seed ^ 5);
        let ctx = run_causal(&qkv, &batch, shape, Some(table.bias()), &Threads::sequential());
        check_layer(&ctx, &qkv, &batch, &c.lens, shape, &table, c.mag, true);
        prop_assert_eq!(&ctx, &run_causal(&qkv, &batch, shape, Some(table.bias()), &Threads::new(2).unwrap()));
    }
}

/// Cached steps with a bias (T5's unidirectional buckets and ALiBi) equal a full recompute
/// (≤ 1e-6) and the f64 reference: prefill, multi-token steps with right padding, single tokens.
#[test]
fn biased_cached_steps_equal_full_recompute() {
    let scale = 1.0 / (HD as f32).sqrt();
    let max_positions = 160;
    let weight = values(32 * 4, 77).into_iter().map(|x| 3.0 * x).collect::<Vec<_>>();
    let t5 = RelativeBias::from_weight(&weight, 4, 32, 128, false, max_positions);
    let alibi = Alibi::new(4, max_positions);
    for (shape, bias) in [
        (AttentionShape { heads: 4, kv_heads: 2, window: None }, t5.bias()),
        (AttentionShape { heads: 4, kv_heads: 4, window: None }, alibi.bias()),
        (AttentionShape { heads: 4, kv_heads: 1, window: Some(9) }, t5.bias()),
    ] {
        let (stride, width) = (shape.qkv_width(HD), shape.heads * HD);
        let total = [140usize, 97];
        let all: Vec<Vec<f32>> = (0..2).map(|b| values(total[b] * stride, 300 + b as u64)).collect();
        let mut cache = KvCache::new(1, 2, max_positions, shape.kv_heads * HD);
        let mut done = [0usize; 2];
        let mut plan = vec![[75usize, 3], [2, 1]];
        plan.extend(std::iter::repeat_n([1, 2], 30));
        plan.extend(std::iter::repeat_n([1, 1], 33));
        for (step, &n) in plan.iter().enumerate() {
            let seq = n[0].max(n[1]);
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
                Some(bias),
                scale,
                &mut ctx,
                &Threads::sequential(),
            );
            for b in 0..2 {
                let upto = done[b] + n[b];
                let full_batch = Batch::from_sequences(&[vec![1u32; upto]]).unwrap();
                let full = run_causal(
                    &all[b][..upto * stride],
                    &full_batch,
                    shape,
                    Some(bias),
                    &Threads::sequential(),
                );
                let got = &ctx[b * seq * width..][..n[b] * width];
                for (i, (&g, &w)) in got.iter().zip(&full[done[b] * width..upto * width]).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-6,
                        "{shape:?} seq {b} step {step} [{i}]: cached {g} vs full {w}"
                    );
                }
                let rows = &all[b][..upto * stride];
                let window = shape.window;
                let want = reference(
                    Rows { data: rows, stride, offset: done[b] * stride },
                    Rows { data: rows, stride, offset: width },
                    Rows { data: rows, stride, offset: width + shape.kv_heads * HD },
                    (n[b], upto),
                    (shape.heads, shape.kv_heads),
                    scale,
                    |r, j| j <= done[b] + r && window.is_none_or(|w| j + w > done[b] + r),
                    |h, r, j| f64::from(bias.at(h, done[b] + r, j)),
                );
                let bias_max = bias.table.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
                assert_close(
                    got,
                    &want,
                    attention_tol(upto, scale, bias_max),
                    &format!("{shape:?} seq {b} step {step}"),
                );
                assert!(ctx[(b * seq + n[b]) * width..(b + 1) * seq * width].iter().all(|&x| x == 0.0));
            }
            cache.advance_batch(&batch);
            done = [done[0] + n[0], done[1] + n[1]];
        }
        assert_eq!(done, total);
    }
}

#[test]
#[should_panic(expected = "more positions than the table was built for")]
fn a_bias_table_shorter_than_the_batch_panics_in_the_layer() {
    let alibi = Alibi::new(2, 4);
    let shape = AttentionShape::mha(2);
    let batch = Batch::from_sequences(&[vec![1u32; 5]]).unwrap();
    let qkv = values(5 * shape.qkv_width(HD), 1);
    run_self(&qkv, &batch, shape, Some(alibi.bias()), &Threads::sequential());
}

// A bidirectional window is centred (Longformer: w / 2 keys on either side), so it must be even;
// `tests/sparse_attention.rs` checks the even ones against a dense mask.
#[test]
#[should_panic(expected = "a bidirectional (centred) window must be even")]
fn bidirectional_attention_rejects_an_odd_window() {
    let shape = AttentionShape { heads: 2, kv_heads: 2, window: Some(3) };
    let batch = Batch::from_sequences(&[vec![1u32; 5]]).unwrap();
    let qkv = values(5 * shape.qkv_width(HD), 1);
    run_self(&qkv, &batch, shape, None, &Threads::sequential());
}

// ------------------------------------------------------------------------------------------------
// Cross-attention
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct CrossCase {
    q_lens: Vec<usize>,
    m_lens: Vec<usize>,
    heads: usize,
    seed: u64,
}

fn cross_case() -> impl Strategy<Value = CrossCase> {
    (1usize..4, 1usize..4, any::<u64>()).prop_flat_map(|(batch, heads, seed)| {
        (prop::collection::vec(1usize..80, batch), prop::collection::vec(1usize..140, batch))
            .prop_map(move |(q_lens, m_lens)| CrossCase { q_lens, m_lens, heads, seed })
    })
}

fn run_cross(q: &[f32], batch: &Batch, kv: &[f32], memory: &Batch, heads: usize, t: &Threads) -> Vec<f32> {
    let mut ctx = vec![f32::NAN; batch.rows() * heads * HD];
    cross_attention::<HD>(q, batch, kv, memory, heads, 0.4, &mut ctx, t);
    ctx
}

proptest! {
    #![proptest_config(config())]

    /// Cross-attention over padded queries and padded memory (with an interior masked memory
    /// token): each real query row against the f64 reference over its own sequence's valid memory
    /// rows, padding query rows zero, padding rows of both never read (NaN), bit-identical on two
    /// threads.
    #[test]
    fn cross_attention_matches_f64(c in cross_case()) {
        let width = c.heads * HD;
        // Interior masked query rows (finite) are still computed; rows past a length are NaN.
        let (batch, q) = padded_batch(&c.q_lens, width, c.seed);
        let (memory, kv) = padded_batch(&c.m_lens, 2 * width, c.seed ^ 1);
        let ctx = run_cross(&q, &batch, &kv, &memory, c.heads, &Threads::sequential());
        prop_assert_eq!(&ctx, &run_cross(&q, &batch, &kv, &memory, c.heads, &Threads::new(2).unwrap()));
        let (seq, mseq) = (batch.seq_len(), memory.seq_len());
        for (b, (&len, &mlen)) in c.q_lens.iter().zip(&c.m_lens).enumerate() {
            let mask = memory.mask_of(b);
            let kv_seq = &kv[b * mseq * 2 * width..];
            let want = reference(
                Rows { data: &q[b * seq * width..], stride: width, offset: 0 },
                Rows { data: kv_seq, stride: 2 * width, offset: 0 },
                Rows { data: kv_seq, stride: 2 * width, offset: width },
                (len, mlen),
                (c.heads, c.heads),
                0.4,
                |_, j| mask[j],
                |_, _, _| 0.0,
            );
            let got = &ctx[b * seq * width..(b + 1) * seq * width];
            assert_close(&got[..len * width], &want, attention_tol(mlen, 0.4, 0.0), &format!("seq {b}"));
            prop_assert!(got[len * width..].iter().all(|&x| x == 0.0), "padding query rows of seq {} not zero", b);
        }
    }
}

#[test]
#[should_panic(expected = "2 query sequences but 1 memory sequences")]
fn cross_attention_needs_one_memory_per_sequence() {
    let batch = Batch::from_sequences(&[vec![1u32; 2], vec![1u32; 2]]).unwrap();
    let memory = Batch::from_sequences(&[vec![1u32; 3]]).unwrap();
    run_cross(&[0.0; 4 * HD], &batch, &[0.0; 6 * HD], &memory, 1, &Threads::sequential());
}

// ------------------------------------------------------------------------------------------------
// Gated feed-forward activations
// ------------------------------------------------------------------------------------------------

fn act_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => x,
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

const ACTIVATIONS: [Activation; 5] =
    [Activation::Identity, Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu];

proptest! {
    #![proptest_config(config())]

    /// `gated` against `act(gate)·up` in f64: the activation's own bound (1e-6 absolute for the
    /// GELUs, which tests/kernels.rs checks; 4 ulps relative for SiLU) times |up|, plus the
    /// product's rounding. `gated(.., Silu)` is `swiglu`, bit for bit.
    #[test]
    fn gated_matches_f64(
        rows in 0usize..5,
        f in 1usize..40,
        mag in prop::sample::select(vec![0.5f32, 4.0, 10.0]),
        seed in any::<u64>(),
    ) {
        let gate_up: Vec<f32> = values(rows * 2 * f, seed).into_iter().map(|x| x * mag).collect();
        for act in ACTIVATIONS {
            let mut out = vec![f32::NAN; rows * f];
            gated(&gate_up, &mut out, f, act);
            for r in 0..rows {
                for i in 0..f {
                    let (g, u) = (gate_up[r * 2 * f + i], gate_up[r * 2 * f + f + i]);
                    let a = act_f64(act, f64::from(g));
                    let want = a * f64::from(u);
                    let got = f64::from(out[r * f + i]);
                    let tol = (1e-6 + 4.0 * EPS32 * a.abs()) * f64::from(u).abs() + EPS32 * want.abs();
                    prop_assert!((got - want).abs() <= tol, "{:?}: act({}) · {} = {} vs {}", act, g, u, got, want);
                }
            }
        }
        let (mut a, mut b) = (vec![0.0; rows * f], vec![0.0; rows * f]);
        gated(&gate_up, &mut a, f, Activation::Silu);
        swiglu(&gate_up, &mut b, f);
        prop_assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }
}

#[test]
fn gated_gelu_is_t5s_gelu_new() {
    // T5 v1.1 "gated-gelu": gelu_new(wi_0 x) · wi_1 x, gelu_new = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).
    let gate_up = [1.0f32, -2.0, 0.5, 3.0, 2.0, -1.0];
    let mut out = [0.0; 3];
    gated(&gate_up, &mut out, 3, Activation::GeluTanh);
    for i in 0..3 {
        let want = act_f64(Activation::GeluTanh, f64::from(gate_up[i])) * f64::from(gate_up[3 + i]);
        assert!((f64::from(out[i]) - want).abs() <= 1e-6, "{i}: {} vs {want}", out[i]);
    }
    gated(&[], &mut [], 0, Activation::GeluErf);
}

#[test]
#[should_panic(expected = "gated: gate_up has 5 floats")]
fn gated_checks_its_shapes() {
    gated(&[0.0; 5], &mut [0.0; 2], 2, Activation::Relu);
}
