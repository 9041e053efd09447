//! The part of the runtime's tests that Miri can run in a few minutes (`bash scripts/miri.sh`):
//! every `unsafe` block and every indexing-heavy kernel on small shapes, through the portable
//! (scalar / auto-vectorised) paths only. It runs as an ordinary test too.
//!
//! Covered, each against a naive twin or a hand-computed value:
//!
//! - packed GEMM: `PackedB::pack_for(GemmIsa::Portable, …)` + `matmul_packed` (the raw-pointer
//!   microkernel) with edge tiles in both directions, zero-sized `m`, `k`, `n`, every epilogue;
//! - attention: `attention_general_scalar` (separate Q/K/V views, causal and padding masks,
//!   grouped-query heads, more than one 64-key tile, a query that sees no key) and
//!   `attention_scalar` (fused `[Q | K | V]` rows, a query block in the middle);
//! - `layer_norm`, `add_layer_norm`, every `Activation` (`apply_slice`, `bias_activation`,
//!   `activation_only`), `exp_f32`, `mean_pool`, `l2_normalize`;
//! - `WeightLoader::from_bytes` on a valid file (F32/F16/BF16, a scalar, a zero-sized tensor) and
//!   on corrupt buffers (truncations, a huge header length, offsets past the end, overlapping and
//!   gapped offsets, integers that overflow, bad JSON, byte counts that disagree with the shape);
//! - `Batch` constructors and accessors, `KvCache` checks;
//! - the LLaMA / Mistral kernels: `rms_norm` / `rms_norm_into` (a zero row, squares that overflow),
//!   `swiglu` / `silu`, RoPE tables and `Rope::apply` (partial rotary dims, starts, padding rows),
//!   and `attention_general_scalar` under sliding windows across two key tiles;
//! - the encoder-decoder pieces: `attention_general_scalar` with a `PositionBias` (contiguous and
//!   gathered adds, two key tiles), the `RelativeBias` / `Alibi` tables, `self_attention_with`
//!   (bias, GQA, padding) and `cross_attention` against the naive twin, and `gated` for every
//!   activation.
//!
//! Not covered: the SIMD paths (`GemmIsa::Avx2Fma`/`Avx512`, the AVX2 attention shim; Miri does
//! not run AVX), `matmul` (matrixmultiply's own unsafe code and SIMD), thread pools (rayon under
//! Miri is slow), and whole models (too many floating-point operations for the interpreter).
//! Under Miri the runtime CPU-feature checks report no AVX, so the dispatching entry points pick
//! the portable code; `dispatch_is_portable_under_miri` checks exactly that, and the tests below
//! call the explicitly portable twins regardless.

use transformer_runtime::kernels::activation::{activation_only, bias_activation, Activation};
use transformer_runtime::kernels::attention::{
    attention_general_naive, attention_general_scalar, attention_naive, attention_scalar, HeadRows, Mask,
};
use transformer_runtime::kernels::exp_f32;
use transformer_runtime::kernels::gemm::{matmul_packed, Epilogue, GemmIsa, PackedB};
use transformer_runtime::kernels::norm::{add_layer_norm, layer_norm};
use transformer_runtime::kernels::pooling::{l2_normalize, mean_pool};
use transformer_runtime::weights::{WeightError, WeightLoader, WeightProblem};
use transformer_runtime::{Batch, Error, KvCache};

/// The signature shared by the attention kernel and its twins.
type AttentionFn =
    fn(HeadRows<'_>, HeadRows<'_>, HeadRows<'_>, usize, usize, usize, Mask<'_>, f32, &mut [f32]);

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

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

// ------------------------------------------------------------------------------------------------
// Dispatch
// ------------------------------------------------------------------------------------------------

#[test]
#[cfg(miri)]
fn dispatch_is_portable_under_miri() {
    use transformer_runtime::kernels::attention::attention_isa;
    assert_eq!(attention_isa(), "portable", "the attention entry point would run AVX under Miri");
    assert_eq!(GemmIsa::detected(), GemmIsa::Portable, "PackedB::pack would pick a SIMD GEMM under Miri");
}

// ------------------------------------------------------------------------------------------------
// GEMM
// ------------------------------------------------------------------------------------------------

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
        }
    }
    c
}

#[test]
fn packed_gemm_portable_matches_naive_on_edge_shapes() {
    let (mr, nr) = (GemmIsa::Portable.tile_rows(), GemmIsa::Portable.panel_width());
    for &(m, k, n) in &[(1, 1, 1), (mr + 1, 3, nr + 1), (2 * mr - 1, 5, 2 * nr + 3), (3, 7, nr - 1)] {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let bias = values(n, 3);
        let packed = PackedB::pack_for(GemmIsa::Portable, &b, k, n);
        assert_eq!((packed.k(), packed.n(), packed.isa()), (k, n, GemmIsa::Portable));
        let want = naive_matmul(&a, &b, m, k, n);
        for act in [Activation::Identity, Activation::GeluErf, Activation::GeluTanh, Activation::Relu] {
            // Stale (even NaN) output contents must not leak in: C is only written.
            let mut c = vec![f32::NAN; m * n];
            matmul_packed(&a, m, &packed, &mut c, Epilogue::new(Some(&bias), act));
            for (idx, (&got, &w)) in c.iter().zip(&want).enumerate() {
                let expect = act.apply(w + bias[idx % n]);
                assert!(close(got, expect, 1e-5), "{m}×{k}×{n} {act:?} [{idx}]: {got} vs {expect}");
            }
        }
        let mut c = vec![f32::NAN; m * n];
        matmul_packed(&a, m, &packed, &mut c, Epilogue::NONE);
        assert!(c.iter().zip(&want).all(|(&x, &y)| close(x, y, 1e-5)));
    }
}

#[test]
fn packed_gemm_portable_handles_empty_dimensions() {
    // k = 0: an empty inner product is 0 (plus the bias).
    let packed = PackedB::pack_for(GemmIsa::Portable, &[], 0, 5);
    let mut c = vec![f32::NAN; 3 * 5];
    let bias = [1.0, 2.0, 3.0, 4.0, 5.0];
    matmul_packed(&[], 3, &packed, &mut c, Epilogue::new(Some(&bias), Activation::Identity));
    assert_eq!(c, [bias; 3].concat());
    // m = 0 and n = 0: nothing to do, nothing touched.
    let packed = PackedB::pack_for(GemmIsa::Portable, &values(4 * 3, 4), 4, 3);
    matmul_packed(&[], 0, &packed, &mut [], Epilogue::NONE);
    let packed = PackedB::pack_for(GemmIsa::Portable, &[], 4, 0);
    matmul_packed(&values(8, 5), 2, &packed, &mut [], Epilogue::NONE);
}

#[test]
fn packed_b_from_fn_packs_a_transpose() {
    let (k, n) = (3, GemmIsa::Portable.panel_width() + 2);
    let w = values(n * k, 6); // [n, k], as an nn.Linear weight
    let packed = PackedB::from_fn(GemmIsa::Portable, k, n, |kk, j| w[j * k + kk]);
    let a = values(2 * k, 7);
    let mut c = vec![0.0; 2 * n];
    matmul_packed(&a, 2, &packed, &mut c, Epilogue::NONE);
    for i in 0..2 {
        for j in 0..n {
            let want: f32 = (0..k).map(|kk| a[i * k + kk] * w[j * k + kk]).sum();
            assert!(close(c[i * n + j], want, 1e-5));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Attention
// ------------------------------------------------------------------------------------------------

const HD: usize = 4;

#[test]
fn attention_general_scalar_matches_naive_with_masks_tiles_and_groups() {
    // 70 keys: two key tiles (64 + 6). 6 queries at positions 62..68: the causal limit falls inside
    // both tiles. Keys 0..3 and 65 masked.
    let (heads, keys, queries, q_pos0) = (2, 70, 6, 62);
    let key_valid: Vec<bool> = (0..keys).map(|j| j > 3 && j != 65).collect();
    for kv_heads in [1, 2] {
        let q = values(queries * heads * HD, 10);
        let (k, v) = (values(keys * kv_heads * HD, 11), values(keys * kv_heads * HD, 12));
        for causal in [false, true] {
            let mask = Mask { key_valid: Some(&key_valid), causal, window: None, bias: None };
            let run = |f: AttentionFn| {
                let mut out = vec![f32::NAN; queries * heads * HD];
                f(
                    view(&q, queries, heads * HD),
                    view(&k, keys, kv_heads * HD),
                    view(&v, keys, kv_heads * HD),
                    heads,
                    kv_heads,
                    q_pos0,
                    mask,
                    0.5,
                    &mut out,
                );
                out
            };
            let got = run(attention_general_scalar::<HD>);
            let want = run(attention_general_naive::<HD>);
            for (i, (&x, &y)) in got.iter().zip(&want).enumerate() {
                assert!(close(x, y, 1e-5), "kv_heads {kv_heads} causal {causal} [{i}]: {x} vs {y}");
            }
        }
    }
}

/// `rows` contiguous rows of `width` floats.
fn view(data: &[f32], rows: usize, width: usize) -> HeadRows<'_> {
    HeadRows { data, stride: width, offset: 0, rows }
}

#[test]
fn a_query_that_sees_no_key_gets_zeros() {
    let (heads, keys) = (1, 3);
    let q = values(2 * HD, 20);
    let kv = values(keys * HD, 21);
    let view = |data, rows| HeadRows { data, stride: HD, offset: 0, rows };
    let mut out = vec![f32::NAN; 2 * HD];
    let all_masked = [false; 3];
    let mask = Mask { key_valid: Some(&all_masked), causal: false, window: None, bias: None };
    attention_general_scalar::<HD>(
        view(&q, 2),
        view(&kv, keys),
        view(&kv, keys),
        heads,
        heads,
        0,
        mask,
        1.0,
        &mut out,
    );
    assert_eq!(out, vec![0.0; 2 * HD]);
    // No keys at all.
    let mut out = vec![f32::NAN; HD];
    let none = Mask { key_valid: None, causal: true, window: None, bias: None };
    attention_general_scalar::<HD>(
        view(&q[..HD], 1),
        view(&[], 0),
        view(&[], 0),
        1,
        1,
        0,
        none,
        1.0,
        &mut out,
    );
    assert_eq!(out, vec![0.0; HD]);
}

#[test]
fn fused_attention_scalar_matches_naive_for_a_middle_query_block() {
    let (heads, seq) = (3, 9);
    let qkv = values(seq * 3 * heads * HD, 30);
    let key_valid: Vec<bool> = (0..seq).map(|j| j != 2 && j < 8).collect();
    let (q_start, rows) = (3, 4);
    let (mut got, mut want) = (vec![f32::NAN; rows * heads * HD], vec![0.0; rows * heads * HD]);
    attention_scalar::<HD>(&qkv, seq, heads, &key_valid, q_start, 0.5, &mut got);
    attention_naive::<HD>(&qkv, seq, heads, &key_valid, q_start, 0.5, &mut want);
    assert!(got.iter().zip(&want).all(|(&x, &y)| close(x, y, 1e-5)), "{got:?} vs {want:?}");
}

#[test]
fn huge_scores_do_not_overflow_the_online_softmax() {
    // Scores of ±1e30: the running max rescaling must keep every exponent ≤ 0.
    let (keys, heads) = (5, 1);
    let q = [1e15f32, 0.0, 0.0, 0.0];
    let mut k = vec![0.0f32; keys * HD];
    for (j, row) in k.chunks_exact_mut(HD).enumerate() {
        row[0] = if j % 2 == 0 { 1e15 } else { -1e15 };
    }
    let v: Vec<f32> = (0..keys * HD).map(|i| i as f32).collect();
    let view = |data, rows| HeadRows { data, stride: HD, offset: 0, rows };
    let mask = Mask { key_valid: None, causal: false, window: None, bias: None };
    let mut out = vec![f32::NAN; HD];
    attention_general_scalar::<HD>(
        view(&q, 1),
        view(&k, keys),
        view(&v, keys),
        heads,
        heads,
        0,
        mask,
        1.0,
        &mut out,
    );
    assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
    // Keys 0, 2, 4 tie at the maximum; the rest weigh exp(-2e30) = 0.
    for (d, &x) in out.iter().enumerate() {
        let want = (2 * HD + d) as f32; // mean of v[0][d], v[2][d], v[4][d]
        assert!(close(x, want, 1e-6), "{d}: {x} vs {want}");
    }
}

// ------------------------------------------------------------------------------------------------
// Norm, activations, pooling, exp
// ------------------------------------------------------------------------------------------------

fn layer_norm_f64<const D: usize>(row: &[f32; D], gamma: &[f32; D], beta: &[f32; D], eps: f32) -> [f32; D] {
    let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / D as f64;
    let var = row.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / D as f64;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    std::array::from_fn(|i| {
        ((f64::from(row[i]) - mean) * inv * f64::from(gamma[i]) + f64::from(beta[i])) as f32
    })
}

#[test]
fn layer_norms_match_f64_and_a_constant_row_gives_beta() {
    const D: usize = 11;
    let rows: Vec<[f32; D]> = values(3 * D, 40).as_chunks::<D>().0.to_vec();
    let sub: Vec<[f32; D]> = values(3 * D, 41).as_chunks::<D>().0.to_vec();
    let gamma: [f32; D] = std::array::from_fn(|i| 1.0 + i as f32 * 0.1);
    let beta: [f32; D] = std::array::from_fn(|i| i as f32 * -0.05);
    let mut normed = rows.clone();
    layer_norm(&mut normed, &gamma, &beta, 1e-5);
    let mut fused = rows.clone();
    add_layer_norm(&mut fused, &sub, &gamma, &beta, 1e-12);
    for r in 0..3 {
        let want = layer_norm_f64(&rows[r], &gamma, &beta, 1e-5);
        assert!(normed[r].iter().zip(&want).all(|(&x, &y)| close(x, y, 1e-5)), "{:?} vs {want:?}", normed[r]);
        let summed: [f32; D] = std::array::from_fn(|i| rows[r][i] + sub[r][i]);
        let want = layer_norm_f64(&summed, &gamma, &beta, 1e-12);
        assert!(fused[r].iter().zip(&want).all(|(&x, &y)| close(x, y, 1e-5)), "{:?} vs {want:?}", fused[r]);
    }
    let mut constant = vec![[3.25f32; D]];
    layer_norm(&mut constant, &gamma, &beta, 1e-12);
    assert_eq!(constant[0], beta);
}

fn activation_f64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::GeluErf => 0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2)),
        // 0.5·x·(1 + tanh(u)) written as x / (1 + e^(−2u)): the same function without the
        // cancellation in 1 + tanh(u) for u ≪ 0, which Miri's deliberately perturbed f64 `tanh`
        // would turn into a wrong reference (−22204 instead of −0 at x = −1e20).
        Activation::GeluTanh => {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            x / (1.0 + (-2.0 * u).exp())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// erf by its Taylor series / continued fraction is overkill here: A&S 7.1.26 in f64 is within
/// 1.5e-7, plenty for a 1e-5 comparison.
fn libm_erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

#[test]
fn activations_match_f64_and_stay_finite() {
    let xs: Vec<f32> = [-50.0, -9.0, -3.0, -1.0, -0.1, -0.0, 0.0, 0.1, 1.0, 3.0, 9.0, 50.0, 1e20, -1e20]
        .into_iter()
        .chain(values(10, 50).into_iter().map(|x| x * 4.0))
        .collect();
    for act in
        [Activation::Identity, Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu]
    {
        let mut out = xs.clone();
        act.apply_slice(&mut out);
        let mut only = xs.clone();
        activation_only(&mut only, act);
        assert_eq!(out, only);
        for (&x, &y) in xs.iter().zip(&out) {
            let want = activation_f64(act, f64::from(x)) as f32;
            assert!(y.is_finite(), "{act:?}({x}) = {y}");
            assert!((y - want).abs() <= 1e-5 * (1.0 + want.abs()), "{act:?}({x}) = {y}, want {want}");
        }
        let bias = [0.5f32, -0.5];
        let mut rows = xs[..6].to_vec();
        bias_activation(&mut rows, &bias, act);
        for (i, (&x, &y)) in xs[..6].iter().zip(&rows).enumerate() {
            assert_eq!(y, act.apply(x + bias[i % 2]));
        }
    }
    // NaN propagates through ReLU (it is not silently zeroed).
    assert!(Activation::Relu.apply(f32::NAN).is_nan());
}

#[test]
fn exp_f32_is_accurate_and_saturates() {
    for x in [-100.0f32, -87.0, -10.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 10.0, 88.0] {
        let want = f64::from(x).exp();
        let got = f64::from(exp_f32(x));
        // Relative 2 ulp in the normal range; below it (x < -87.34) the result is flushed to 0.
        assert!(
            (got - want).abs() <= 4.0 * f64::from(f32::EPSILON) * want + f64::from(f32::MIN_POSITIVE),
            "{x}"
        );
    }
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(100.0), f32::INFINITY);
    assert!(exp_f32(f32::NAN).is_nan());
}

#[test]
fn pooling_means_valid_rows_and_normalizes_safely() {
    let rows = [[1.0f32, 2.0, 3.0], [3.0, 4.0, 5.0], [100.0, 100.0, 100.0]];
    let mut out = [0.0f32; 3];
    mean_pool(&rows, &[true, true, false], &mut out);
    assert_eq!(out, [2.0, 3.0, 4.0]);
    mean_pool(&rows, &[false; 3], &mut out);
    assert_eq!(out, [0.0; 3]);
    let mut v = [3.0f32, 4.0, 0.0];
    l2_normalize(&mut v);
    assert_eq!(v, [0.6, 0.8, 0.0]);
    let mut zero = [0.0f32; 3];
    l2_normalize(&mut zero);
    assert_eq!(zero, [0.0; 3]);
    let mut big = [1e30f32, 1e30, 0.0];
    l2_normalize(&mut big);
    assert!(big.iter().all(|x| x.is_finite()) && close(big[0], std::f32::consts::FRAC_1_SQRT_2, 1e-6));
}

// ------------------------------------------------------------------------------------------------
// Weight loader
// ------------------------------------------------------------------------------------------------

/// 8-byte little-endian header length, the header, the data.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn valid_file() -> Vec<u8> {
    let mut data = Vec::new();
    data.extend(f32::to_le_bytes(1.5));
    data.extend(f32::to_le_bytes(-2.0));
    data.extend(half::f16::from_f32(0.25).to_le_bytes());
    data.extend(half::bf16::from_f32(-4.0).to_le_bytes());
    data.extend(f32::to_le_bytes(7.0));
    raw(
        r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[10,12]},"s":{"dtype":"F32","shape":[],"data_offsets":[12,16]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]}}"#,
        &data,
    )
}

#[test]
fn the_loader_reads_a_valid_file_and_lists_every_problem() {
    let mut loader = WeightLoader::from_bytes(valid_file(), "valid").unwrap();
    assert_eq!(loader.names(), ["a", "b", "h", "s", "z"]);
    assert_eq!(loader.take("a", &[1, 2]), [1.5, -2.0]);
    assert_eq!(loader.take("h", &[1]), [0.25]);
    assert_eq!(loader.take("b", &[1]), [-4.0]);
    assert_eq!(loader.take("s", &[]), [7.0]);
    assert_eq!(loader.take("z", &[0, 3]), Vec::<f32>::new());
    assert_eq!(loader.take("a", &[2]), [0.0, 0.0]);
    assert_eq!(loader.take("missing", &[3]), [0.0; 3]);
    assert_eq!(loader.take_optional("absent", &[3]), None);
    let problems = loader.finish().unwrap_err().problems().to_vec();
    assert_eq!(
        problems,
        [
            WeightProblem::ShapeMismatch { name: "a".into(), expected: vec![2], found: vec![1, 2] },
            WeightProblem::Missing { name: "missing".into(), expected_shape: vec![3] },
        ]
    );
}

#[test]
fn the_loader_rejects_corrupt_buffers_without_panicking() {
    let valid = valid_file();
    let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let f32_tensor = |offsets: &str, shape: &str| {
        format!(r#"{{"t":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    let mut corrupt: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("short prefix".into(), vec![1, 0, 0]),
        ("header past the end".into(), {
            let mut b = valid.clone();
            b[..8].copy_from_slice(&(header_len as u64 + 1000).to_le_bytes());
            b
        }),
        ("huge header length".into(), {
            let mut b = valid.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("not json".into(), raw("{not json", &[])),
        ("not utf-8".into(), {
            let mut b = raw("{\"x\":1}", &[]);
            b[9] = 0xff;
            b
        }),
        ("offsets past the end".into(), raw(&f32_tensor("[0,8]", "[2]"), &[0; 4])),
        ("gap before the data".into(), raw(&f32_tensor("[4,8]", "[1]"), &[0; 8])),
        ("bytes disagree with the shape".into(), raw(&f32_tensor("[0,8]", "[3]"), &[0; 8])),
        ("overflowing offset".into(), raw(&f32_tensor("[0,18446744073709551615]", "[1]"), &[0; 4])),
        ("overflowing dimension".into(), raw(&f32_tensor("[0,4]", "[4611686018427387904,4]"), &[0; 4])),
        ("reversed offsets".into(), raw(&f32_tensor("[4,0]", "[1]"), &[0; 4])),
    ];
    for cut in [9, header_len, header_len + 8 + 3, valid.len() - 1] {
        corrupt.push((format!("truncated at {cut}"), valid[..cut].to_vec()));
    }
    for (what, bytes) in corrupt {
        match WeightLoader::from_bytes(bytes, "corrupt") {
            Err(err @ WeightError::Format { .. }) => {
                assert!(err.to_string().contains("corrupt"), "{what}: {err}");
            }
            other => panic!("{what}: expected a format error, got {other:?}"),
        }
    }
}

#[test]
fn the_loader_reports_non_finite_and_unsupported_tensors() {
    let mut data = f32::NAN.to_le_bytes().to_vec();
    data.extend(1i32.to_le_bytes());
    let header = r#"{"n":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"i":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},"x":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#;
    let mut loader = WeightLoader::from_bytes(raw(header, &data), "odd").unwrap();
    assert_eq!(loader.take("n", &[1]), [0.0]);
    assert_eq!(loader.take("i", &[1]), [0.0]);
    let problems = loader.finish().unwrap_err().problems().to_vec();
    assert_eq!(
        problems,
        [
            WeightProblem::NonFinite { name: "n".into(), index: 0 },
            WeightProblem::UnsupportedDtype { name: "i".into(), dtype: "I32".into() },
            WeightProblem::Unexpected { name: "x".into() },
        ]
    );
    let mut loader = WeightLoader::from_bytes(raw(header, &data), "odd").unwrap();
    loader.allow_non_finite(true);
    assert!(loader.take("n", &[1])[0].is_nan());
}

// ------------------------------------------------------------------------------------------------
// Batch, KvCache
// ------------------------------------------------------------------------------------------------

#[test]
fn batch_constructors_pad_mask_and_validate() {
    let batch = Batch::from_sequences(&[vec![5u32, 6, 7], vec![8]]).unwrap();
    assert_eq!((batch.batch_size(), batch.seq_len(), batch.rows()), (2, 3, 6));
    assert_eq!(batch.ids(), [5, 6, 7, 8, 0, 0]);
    assert_eq!(batch.mask(), [true, true, true, true, false, false]);
    assert_eq!((batch.len_of(1), batch.extent_of(1), batch.position(5)), (1, 1, 0));
    assert!(batch.validate(9, 3, None).is_ok());
    assert!(matches!(batch.validate(8, 3, None), Err(Error::TokenOutOfRange { token: 8, .. })));
    assert!(matches!(
        batch.validate(9, 2, None),
        Err(Error::SequenceTooLong { sequence: 0, len: 3, max: 2 })
    ));

    let typed = batch.clone().with_token_types(&[vec![0, 1, 1], vec![1]]).unwrap();
    assert_eq!((typed.type_id(2), typed.type_id(3), typed.type_id(4)), (1, 1, 0));
    assert!(matches!(typed.validate(9, 3, None), Err(Error::TokenTypesNotSupported)));
    assert!(matches!(typed.validate(9, 3, Some(1)), Err(Error::TokenTypeOutOfRange { type_id: 1, .. })));

    let started = batch.with_starts(&[4, 0]).unwrap();
    assert_eq!((started.start_of(0), started.position(2)), (4, 6));
    assert!(matches!(
        started.validate(9, 6, None),
        Err(Error::ContextFull { sequence: 0, needed: 7, max: 6 })
    ));
    let huge = Batch::from_sequences(&[[1u32]]).unwrap().with_starts(&[usize::MAX]).unwrap();
    assert!(matches!(huge.validate(9, 6, None), Err(Error::ContextFull { .. })));

    let ids = ndarray::array![[1u32, 2, 3], [4, 5, 6]];
    let mask = ndarray::array![[1u32, 0, 1], [1, 1, 0]];
    let padded = Batch::from_padded(ids.view(), mask.view(), Some(ids.view())).unwrap();
    assert_eq!((padded.len_of(0), padded.extent_of(0), padded.extent_of(1)), (2, 3, 2));
    let bad = ndarray::array![[1u32, 7, 1], [1, 1, 0]];
    assert!(matches!(
        Batch::from_padded(ids.view(), bad.view(), None),
        Err(Error::BadMaskValue { sequence: 0, position: 1, value: 7 })
    ));

    let uniform = Batch::uniform(2, 3).unwrap();
    assert!(uniform.mask().iter().all(|&m| m));
    assert!(matches!(Batch::uniform(0, 3), Err(Error::EmptyBatch)));
    assert!(matches!(Batch::uniform(2, 0), Err(Error::EmptySequence { .. })));
}

#[test]
fn kv_cache_checks_steps_before_they_run() {
    let mut cache = KvCache::new(2, 2, 4, 3);
    let step = Batch::from_sequences(&[vec![1u32, 2, 3], vec![1]]).unwrap();
    cache.check_step(&step).unwrap();
    cache.advance_batch(&step);
    assert_eq!(cache.lens(), [3, 1]);
    assert!(matches!(cache.check_step(&step), Err(Error::ContextFull { sequence: 0, needed: 6, max: 4 })));
    let one = Batch::from_sequences(&[[1u32]]).unwrap();
    assert!(matches!(cache.check_step(&one), Err(Error::BatchSizeMismatch { expected: 2, found: 1, .. })));
    let layer: Vec<_> = cache.layer_mut(1).collect();
    assert_eq!(layer.len(), 2);
    assert!(layer.iter().all(|(k, v)| k.len() == 12 && v.len() == 12));
    cache.reset();
    assert_eq!(cache.lens(), [0, 0]);
}

// ------------------------------------------------------------------------------------------------
// LLaMA / Mistral kernels: RMSNorm, SwiGLU, RoPE, sliding-window attention
// ------------------------------------------------------------------------------------------------

#[test]
fn rms_norm_matches_f64_and_a_zero_row_gives_zeros() {
    use transformer_runtime::kernels::norm::{rms_norm, rms_norm_into};
    const D: usize = 5;
    let w = [1.0f32, -0.5, 2.0, 0.25, 1.5];
    // An ordinary row, a zero row, a row whose squares overflow f32 (the f64 fallback).
    let input = [[0.5f32, -1.0, 2.0, 0.0, 3.0], [0.0; D], [1e30, -2e30, 0.5e30, 1e30, 3e30]];
    for eps in [0.0f32, 1e-6] {
        let mut got = input;
        rms_norm(&mut got, &w, eps);
        let mut into = [[f32::NAN; D]; 3];
        rms_norm_into(&input, &mut into, &w, eps);
        assert_eq!(got, into);
        for (x, y) in input.iter().zip(&got) {
            let ms = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / D as f64 + f64::from(eps);
            let inv = if ms > 0.0 { 1.0 / ms.sqrt() } else { 0.0 };
            for ((&v, &g), &o) in x.iter().zip(&w).zip(y) {
                let want = f64::from(v) * inv * f64::from(g);
                assert!(
                    o.is_finite() && (f64::from(o) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{o} vs {want}"
                );
            }
        }
        assert_eq!(got[1], [0.0; D]);
    }
}

#[test]
fn swiglu_matches_f64_and_stays_finite() {
    use transformer_runtime::kernels::activation::{silu, swiglu};
    // Two rows of [gate (3) | up (3)].
    let gate_up = [0.5f32, -100.0, 100.0, 2.0, 3.0, -1.0, -1.5, 1e30, -1e30, 0.25, -4.0, 8.0];
    let mut out = [f32::NAN; 6];
    swiglu(&gate_up, &mut out, 3);
    for r in 0..2 {
        for i in 0..3 {
            let (g, u) = (f64::from(gate_up[r * 6 + i]), f64::from(gate_up[r * 6 + 3 + i]));
            let want = g / (1.0 + (-g).exp()) * u;
            let got = out[r * 3 + i];
            assert!(got.is_finite() && close(got, want as f32, 1e-6), "[{r}, {i}] {got} vs {want}");
        }
    }
    assert!(silu(-100.0) == 0.0 && silu(-100.0).is_sign_negative());
    assert_eq!(silu(100.0), 100.0);
}

#[test]
fn rope_rotates_query_and_key_heads_only() {
    use transformer_runtime::kernels::rope::rope_tables;
    use transformer_runtime::layers::Rope;
    // HD = 5 with 4 rotary dims: dim 4 passes through. Rows [Q (2 heads) | K (1) | V (1)].
    let (hd, r, theta) = (5usize, 4usize, 10_000.0f64);
    let rope = Rope::new(6, hd, r, theta);
    let (mut cos, mut sin) = (vec![0.0; 6 * 2], vec![0.0; 6 * 2]);
    rope_tables(r, theta, &mut cos, &mut sin);
    assert_eq!((rope.cos_at(5), rope.sin_at(5)), (&cos[10..], &sin[10..]));
    let batch = Batch::from_sequences(&[vec![1u32, 2], vec![3]]).unwrap().with_starts(&[1, 0]).unwrap();
    let stride = 4 * hd;
    let qkv = values(batch.rows() * stride, 40);
    let mut got = qkv.clone();
    rope.apply(&mut got, &batch, Some(&[2, 3]), 2, 1);
    for row in 0..batch.rows() {
        // Positions: sequence 0 starts at 1 (+2 from `starts`), sequence 1 at 0 (+3); the padding
        // row of sequence 1 repeats its last real position.
        let p = [3usize, 4, 3, 3][row];
        for h in 0..4 {
            let at = row * stride + h * hd;
            for d in 0..hd {
                let want = if h < 3 && d < r {
                    let i = d % 2;
                    let angle = f64::from(p as f32 * (1.0 / (theta as f32).powf((2 * i) as f32 / r as f32)));
                    let (x0, x1) = (f64::from(qkv[at + i]), f64::from(qkv[at + i + 2]));
                    if d < 2 {
                        x0 * angle.cos() - x1 * angle.sin()
                    } else {
                        x1 * angle.cos() + x0 * angle.sin()
                    }
                } else {
                    f64::from(qkv[at + d])
                };
                assert!(
                    close(got[at + d], want as f32, 1e-6),
                    "row {row} head {h} dim {d}: {} vs {want}",
                    got[at + d]
                );
            }
        }
    }
}

#[test]
fn windowed_attention_scalar_matches_naive_across_tiles() {
    // 70 keys (tiles of 64 + 6), 6 queries at positions 62..68, keys 0..3 and 65 masked; windows
    // inside one tile, across the tile boundary, wider than everything, and empty.
    let (heads, keys, queries, q_pos0) = (2, 70, 6, 62);
    let key_valid: Vec<bool> = (0..keys).map(|j| j > 3 && j != 65).collect();
    let kv_heads = 1;
    let q = values(queries * heads * HD, 50);
    let (k, v) = (values(keys * kv_heads * HD, 51), values(keys * kv_heads * HD, 52));
    for window in [Some(0), Some(1), Some(3), Some(10), Some(100)] {
        let mask = Mask { key_valid: Some(&key_valid), causal: true, window, bias: None };
        let run = |f: AttentionFn| {
            let mut out = vec![f32::NAN; queries * heads * HD];
            f(
                view(&q, queries, heads * HD),
                view(&k, keys, kv_heads * HD),
                view(&v, keys, kv_heads * HD),
                heads,
                kv_heads,
                q_pos0,
                mask,
                0.5,
                &mut out,
            );
            out
        };
        let got = run(attention_general_scalar::<HD>);
        let want = run(attention_general_naive::<HD>);
        for (i, (&x, &y)) in got.iter().zip(&want).enumerate() {
            assert!(close(x, y, 1e-5), "window {window:?} [{i}]: {x} vs {y}");
        }
        if window == Some(0) {
            assert!(got.iter().all(|&x| x == 0.0), "a zero window sees no key");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Encoder-decoder: position bias, seq2seq layers, gated activations
// ------------------------------------------------------------------------------------------------

#[test]
fn biased_attention_scalar_matches_naive_across_tiles() {
    use transformer_runtime::kernels::attention::PositionBias;
    // 70 keys (tiles of 64 + 6), 6 queries at positions 62..68; with and without masked keys (the
    // gathered and the contiguous bias add), causal or not, with a window. The table covers offsets
    // −67..=7 exactly.
    let (heads, keys, queries, q_pos0) = (2, 70, 6, 62);
    let (center, span) = (67, 67 + 7 + 1);
    let table: Vec<f32> = values(heads * span, 60).into_iter().map(|x| 4.0 * x).collect();
    let bias = PositionBias { table: &table, span, center };
    let masked: Vec<bool> = (0..keys).map(|j| j > 3 && j != 65).collect();
    let q = values(queries * heads * HD, 61);
    let (k, v) = (values(keys * HD, 62), values(keys * HD, 63));
    for key_valid in [None, Some(&masked[..])] {
        for (causal, window) in [(false, None), (true, None), (true, Some(10))] {
            let mask = Mask { key_valid, causal, window, bias: Some(bias) };
            let run = |f: AttentionFn| {
                let mut out = vec![f32::NAN; queries * heads * HD];
                f(
                    view(&q, queries, heads * HD),
                    view(&k, keys, HD),
                    view(&v, keys, HD),
                    heads,
                    1,
                    q_pos0,
                    mask,
                    0.5,
                    &mut out,
                );
                out
            };
            let got = run(attention_general_scalar::<HD>);
            let want = run(attention_general_naive::<HD>);
            for (i, (&x, &y)) in got.iter().zip(&want).enumerate() {
                assert!(
                    close(x, y, 1e-5),
                    "masked {} causal {causal} [{i}]: {x} vs {y}",
                    key_valid.is_some()
                );
            }
        }
    }
}

#[test]
fn position_bias_tables_index_by_offset() {
    use transformer_runtime::layers::{t5_bucket, Alibi, RelativeBias};
    // 8 buckets bidirectional: 4 per direction, exact distances 0 and 1, then log bins up to 6
    // (no distance lands near a bin boundary, so Miri's perturbed `ln` cannot flip one).
    let (heads, buckets) = (2, 8);
    let weight: Vec<f32> = (0..heads * buckets).map(|i| i as f32).collect();
    let rel = RelativeBias::from_weight(&weight, heads, buckets, 6, true, 5);
    let bias = rel.bias();
    assert_eq!((bias.span, bias.center, bias.table.len()), (9, 4, 18));
    let want_buckets = [3, 2, 2, 1, 0, 5, 6, 6, 7]; // offsets −4..=4
    for (i, &b) in want_buckets.iter().enumerate() {
        assert_eq!(t5_bucket(i as i64 - 4, true, buckets, 6), b, "offset {}", i as i64 - 4);
        for h in 0..heads {
            assert_eq!(bias.table[h * 9 + i], weight[b * heads + h]);
        }
    }
    assert_eq!(bias.at(1, 2, 0), weight[2 * heads + 1]);
    let alibi = Alibi::new(3, 4);
    let slopes = Alibi::slopes(3);
    assert!(
        close(slopes[0], 0.0625, 1e-6)
            && close(slopes[1], 0.003_906_25, 1e-6)
            && close(slopes[2], 0.25, 1e-6)
    );
    for h in 0..3 {
        assert_eq!(alibi.bias().at(h, 3, 1), -2.0 * slopes[h]);
        assert_eq!(alibi.bias().at(h, 0, 3), 3.0 * slopes[h]);
    }
}

#[test]
fn seq2seq_layers_match_the_naive_kernel() {
    use transformer_runtime::kernels::attention::PositionBias;
    use transformer_runtime::layers::{cross_attention, self_attention_with, AttentionShape};
    use transformer_runtime::Threads;
    // Self-attention with a bias over a padded batch of 3 and 2 tokens, GQA 2:1.
    let shape = AttentionShape { heads: 2, kv_heads: 1, window: None };
    let (stride, width) = (shape.qkv_width(HD), 2 * HD);
    let batch = Batch::from_sequences(&[vec![1u32; 3], vec![1u32; 2]]).unwrap();
    let qkv = values(batch.rows() * stride, 70);
    let table = values(2 * 5, 71);
    let bias = PositionBias { table: &table, span: 5, center: 2 };
    let mut ctx = vec![f32::NAN; batch.rows() * width];
    self_attention_with::<HD>(&qkv, &batch, shape, Some(bias), 0.5, &mut ctx, &Threads::sequential());
    for (b, len) in [(0usize, 3usize), (1, 2)] {
        let rows = &qkv[b * 3 * stride..];
        let view = |offset| HeadRows { data: rows, stride, offset, rows: len };
        let mask = Mask { key_valid: None, causal: false, window: None, bias: Some(bias) };
        let mut want = vec![0.0; len * width];
        attention_general_naive::<HD>(view(0), view(width), view(width + HD), 2, 1, 0, mask, 0.5, &mut want);
        let got = &ctx[b * 3 * width..(b + 1) * 3 * width];
        assert!(got[..len * width].iter().zip(&want).all(|(&x, &y)| close(x, y, 1e-5)), "seq {b}");
        assert!(got[len * width..].iter().all(|&x| x == 0.0));
    }
    // Cross-attention: 2 and 1 query rows against 1 and 3 memory rows.
    let memory = Batch::from_sequences(&[vec![1u32; 1], vec![1u32; 3]]).unwrap();
    let queries = Batch::from_sequences(&[vec![1u32; 2], vec![1u32; 1]]).unwrap();
    let q = values(queries.rows() * width, 72);
    let kv = values(memory.rows() * 2 * width, 73);
    let mut ctx = vec![f32::NAN; queries.rows() * width];
    cross_attention::<HD>(&q, &queries, &kv, &memory, 2, 0.5, &mut ctx, &Threads::sequential());
    for (b, len, mlen) in [(0usize, 2usize, 1usize), (1, 1, 3)] {
        let view = |data, stride, offset, rows| HeadRows { data, stride, offset, rows };
        let mask = Mask { key_valid: None, causal: false, window: None, bias: None };
        let mut want = vec![0.0; len * width];
        let kv_seq = &kv[b * 3 * 2 * width..];
        attention_general_naive::<HD>(
            view(&q[b * 2 * width..], width, 0, len),
            view(kv_seq, 2 * width, 0, mlen),
            view(kv_seq, 2 * width, width, mlen),
            2,
            2,
            0,
            mask,
            0.5,
            &mut want,
        );
        let got = &ctx[b * 2 * width..(b + 1) * 2 * width];
        assert!(got[..len * width].iter().zip(&want).all(|(&x, &y)| close(x, y, 1e-5)), "seq {b}");
        assert!(got[len * width..].iter().all(|&x| x == 0.0));
    }
}

#[test]
fn gated_matches_f64_for_every_activation() {
    use transformer_runtime::kernels::activation::gated;
    let gate_up = [0.5f32, -3.0, 2.0, 2.0, 3.0, -1.0, -1.5, 9.0, -0.25, 0.25, -4.0, 8.0];
    for act in
        [Activation::Identity, Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu]
    {
        let mut out = [f32::NAN; 6];
        gated(&gate_up, &mut out, 3, act);
        for r in 0..2 {
            for i in 0..3 {
                let (g, u) = (f64::from(gate_up[r * 6 + i]), f64::from(gate_up[r * 6 + 3 + i]));
                let want = (activation_f64(act, g) * u) as f32;
                let got = out[r * 3 + i];
                assert!(close(got, want, 1e-5), "{act:?} [{r}, {i}] {got} vs {want}");
            }
        }
    }
}
