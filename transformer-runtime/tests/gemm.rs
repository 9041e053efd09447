//! The packed GEMM (`matmul_packed`) on every instruction set this CPU supports, including the
//! portable twin, and `Linear::forward` built on it, against a naive f64 product + epilogue.
//!
//! Tolerance. Each output is a length-k f32 dot product plus a bias add; its rounding error is
//! bounded by ~k·ε·Σ|aᵢbᵢ| (FMA or not, any summation order), so before the activation we allow
//! `T = (k + 2)·ε·(Σ|aᵢ·bᵢ| + |bias|)`. The activations are 1-Lipschitz up to GELU's maximum slope
//! of ~1.13 and add their own error (≤ 1e-6 absolute plus 4 ulps, as `tests/kernels.rs` states for
//! them), so after the activation we allow `1.13·T + 1e-6 + 4ε·|reference|`. An indexing, packing
//! or edge-handling bug produces errors of order |aᵢbᵢ| = O(1), far above this.

use proptest::prelude::*;
use proptest::test_runner::Config;
use transformer_runtime::kernels::activation::Activation;
use transformer_runtime::kernels::gemm::{
    matmul_packed, matmul_packed_cols, matmul_packed_sums, Blocking, CacheSizes, Epilogue, GemmIsa, PackedB,
};
use transformer_runtime::layers::Linear;
use transformer_runtime::{Threads, WeightLoader};

const EPS32: f64 = f32::EPSILON as f64;

const ACTIVATIONS: [Activation; 5] =
    [Activation::Identity, Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu];

fn activation_f64(act: Activation, x: f64) -> f64 {
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

/// `act(A·B + bias)` in f64, with the per-element error bound described at the top.
/// Returns (reference, tolerance), both m×n row-major.
fn reference(
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    (m, k, n): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let mut want = vec![0.0; m * n];
    let mut tol = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut sum = bias.map_or(0.0, |b| f64::from(b[j]));
            let mut magnitude = sum.abs();
            for p in 0..k {
                let t = f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                sum += t;
                magnitude += t.abs();
            }
            let y = activation_f64(act, sum);
            want[i * n + j] = y;
            tol[i * n + j] = 1.13 * (k as f64 + 2.0) * EPS32 * magnitude + 1e-6 + 4.0 * EPS32 * y.abs();
        }
    }
    (want, tol)
}

fn check(got: &[f32], want: &[f64], tol: &[f64], what: &str, n: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (idx, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        let err = (f64::from(g) - w).abs();
        prop_assert!(
            err <= t,
            "{}: C[{},{}] = {}, expected {} (error {:e} > tol {:e})",
            what,
            idx / n,
            idx % n,
            g,
            w,
            err,
            t
        );
    }
    Ok(())
}

/// Random (m, k, n), A, B, bias in [-2, 2), whether to use the bias, and an activation.
#[allow(clippy::type_complexity)]
fn gemm_case(
) -> impl Strategy<Value = ((usize, usize, usize), Vec<f32>, Vec<f32>, Option<Vec<f32>>, Activation)> {
    (0usize..70, 0usize..90, 0usize..70).prop_flat_map(|(m, k, n)| {
        (
            Just((m, k, n)),
            prop::collection::vec(-2.0f32..2.0, m * k),
            prop::collection::vec(-2.0f32..2.0, k * n),
            prop::option::of(prop::collection::vec(-2.0f32..2.0, n)),
            prop::sample::select(ACTIVATIONS.to_vec()),
        )
    })
}

proptest! {
    #![proptest_config(Config::with_cases(96))]

    /// Every supported ISA (the portable twin always among them) against the f64 reference, and
    /// each SIMD path against the portable twin (within the sum of both tolerances).
    #[test]
    fn matmul_packed_matches_f64_on_every_isa(((m, k, n), a, b, bias, act) in gemm_case()) {
        let (want, tol) = reference(&a, &b, bias.as_deref(), act, (m, k, n));
        let epilogue = Epilogue::new(bias.as_deref(), act);
        let mut twin = vec![f32::NAN; m * n];
        matmul_packed(&a, m, &PackedB::pack_for(GemmIsa::Portable, &b, k, n), &mut twin, epilogue);
        check(&twin, &want, &tol, "Portable", n)?;
        for isa in GemmIsa::supported() {
            let packed = PackedB::pack_for(isa, &b, k, n);
            prop_assert_eq!((packed.k(), packed.n(), packed.isa()), (k, n, isa));
            // C starts as NaN: the kernel must overwrite every element and never read C.
            let mut c = vec![f32::NAN; m * n];
            matmul_packed(&a, m, &packed, &mut c, epilogue);
            let what = format!("{isa:?} m={m} k={k} n={n} bias={} {act:?}", bias.is_some());
            check(&c, &want, &tol, &what, n)?;
            let twin_f64: Vec<f64> = twin.iter().map(|&x| f64::from(x)).collect();
            let tol2: Vec<f64> = tol.iter().map(|t| 2.0 * t).collect();
            check(&c, &twin_f64, &tol2, &format!("{what} vs twin"), n)?;
        }
    }
}

proptest! {
    #![proptest_config(Config::with_cases(64))]

    /// `C += A·B` on every ISA: C's prior value (random) is the chain's head, every element is
    /// written, and the tolerance is the product's plus C's own rounding. B is packed by `refill`
    /// into one reused `PackedB`, after a larger matrix, so stale panels must not leak in.
    #[test]
    fn accumulate_adds_to_c_and_refill_reuses_storage(
        ((m, k, n), a, b, _, _) in gemm_case(),
        seed in prop::collection::vec(-2.0f32..2.0, 70 * 70),
    ) {
        let (product, tol) = reference(&a, &b, None, Activation::Identity, (m, k, n));
        let c0 = &seed[..m * n];
        let want: Vec<f64> = product.iter().zip(c0).map(|(p, &c)| p + f64::from(c)).collect();
        let tol: Vec<f64> = tol.iter().zip(&want).map(|(t, w)| t + 2.0 * EPS32 * w.abs()).collect();
        for isa in GemmIsa::supported() {
            let mut packed = PackedB::empty();
            packed.refill(isa, 90, 70, |kk, j| (kk * 70 + j) as f32);
            packed.refill(isa, k, n, |kk, j| b[kk * n + j]);
            prop_assert_eq!((packed.k(), packed.n(), packed.isa()), (k, n, isa));
            let mut c = c0.to_vec();
            matmul_packed_sums(&a, m, &packed, &mut c, None, true);
            check(&c, &want, &tol, &format!("{isa:?} accumulate m={m} k={k} n={n}"), n)?;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Cache blocking
// ------------------------------------------------------------------------------------------------

/// Blocks far smaller than any cache's, so that small random shapes cross every block edge: k not
/// a multiple of kc, several row blocks with a short last one, column blocks ending mid-matrix.
fn small_blocks() -> impl Strategy<Value = Blocking> {
    (1usize..40, 1usize..30, 1usize..100).prop_map(|(kc, mc, nc)| Blocking { kc, mc, nc })
}

proptest! {
    #![proptest_config(Config::with_cases(96))]

    /// Any blocking, on every ISA: within the f64 reference's tolerance and bit-identical to the
    /// same product packed with this CPU's blocks (every output is one multiply-add chain over k in
    /// order, however k, the rows and the columns are cut), and so is a column-range split of it.
    #[test]
    fn blocked_products_match_f64_and_the_default_blocks(
        ((m, k, n), a, b, bias, act) in gemm_case(),
        blocks in small_blocks(),
        cut in 0.0f64..1.0,
    ) {
        let (want, tol) = reference(&a, &b, bias.as_deref(), act, (m, k, n));
        let epilogue = Epilogue::new(bias.as_deref(), act);
        for isa in GemmIsa::supported() {
            let what = format!("{isa:?} m={m} k={k} n={n} {blocks:?} bias={} {act:?}", bias.is_some());
            let mut default = vec![f32::NAN; m * n];
            matmul_packed(&a, m, &PackedB::pack_for(isa, &b, k, n), &mut default, epilogue);
            let packed = PackedB::pack_blocked(isa, blocks, &b, k, n);
            let mut c = vec![f32::NAN; m * n];
            matmul_packed(&a, m, &packed, &mut c, epilogue);
            check(&c, &want, &tol, &what, n)?;
            prop_assert_eq!(bits(&c), bits(&default), "{} vs the default blocks", what);

            let panels = packed.panel_count();
            let mid = (cut * panels as f64) as usize;
            let mut split = vec![f32::NAN; m * n];
            for range in [0..mid, mid..panels] {
                let cols = packed.panel_cols(range.clone());
                let mut rows: Vec<&mut [f32]> = if n == 0 {
                    (0..m).map(|_| Default::default()).collect()
                } else {
                    split.chunks_exact_mut(n).map(|r| &mut r[cols.clone()]).collect()
                };
                matmul_packed_cols(&a, m, &packed, range, &mut rows, epilogue);
            }
            prop_assert_eq!(bits(&split), bits(&default), "{} split at panel {}", what, mid);
        }
    }
}

/// Reductions longer than the tests' random ones, against exact small-integer sums: k = 1000 in
/// blocks of ≤ 96 (11 blocks, the last shorter), and one block over all of k; rows and columns
/// straddling the tile edges of every ISA.
#[test]
fn long_reductions_across_blocks_are_exact() {
    for isa in GemmIsa::supported() {
        for (m, k, n) in [(13, 1000, 37), (1, 1000, 16), (7, 257, 65)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
            for blocks in [Blocking { kc: 96, mc: 5, nc: 20 }, Blocking { kc: 4096, mc: 4096, nc: 4096 }] {
                let packed = PackedB::pack_blocked(isa, blocks, &b, k, n);
                let mut c = vec![f32::NAN; m * n];
                matmul_packed(&a, m, &packed, &mut c, Epilogue::new(Some(&bias), Activation::Relu));
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                        assert_eq!(
                            c[i * n + j],
                            (dot + bias[j]).max(0.0),
                            "{isa:?} {blocks:?} C[{i},{j}] k={k}"
                        );
                    }
                }
            }
        }
    }
}

/// The layout balances the reduction blocks, and the detected blocks are what `pack` uses.
#[test]
fn packed_blocks_are_balanced_and_detected() {
    let blocks = |kc, k| {
        PackedB::pack_blocked(GemmIsa::Portable, Blocking { kc, mc: 8, nc: 64 }, &vec![0.0; k * 3], k, 3)
            .blocking()
    };
    assert_eq!(blocks(256, 384).kc, 192, "384 under 256: two blocks of 192");
    assert_eq!(blocks(256, 256).kc, 256);
    assert_eq!(blocks(256, 257).kc, 129);
    assert_eq!(blocks(256, 0).kc, 0);
    for isa in GemmIsa::supported() {
        let caches = CacheSizes::detected();
        assert_eq!(isa.blocking(), Blocking::new(caches, isa.tile_rows(), isa.panel_width()));
        for k in [1, 384, 3072] {
            let want = Blocking::for_reduction(caches, isa.tile_rows(), isa.panel_width(), k);
            assert_eq!(isa.blocking_for(k), want);
            assert_eq!(PackedB::pack_for(isa, &vec![0.0; k * 2], k, 2).blocking(), want, "{isa:?} k={k}");
        }
    }
    println!("caches: {:?}; blocks: {:?}", CacheSizes::detected(), GemmIsa::detected().blocking());
}

#[test]
fn detected_isa_is_supported_and_default() {
    let isa = GemmIsa::detected();
    assert!(isa.is_supported());
    assert!(GemmIsa::supported().contains(&GemmIsa::Portable));
    assert_eq!(PackedB::pack(&[1.0; 6], 2, 3).isa(), isa);
    println!("gemm ISA: {isa:?} (supported: {:?})", GemmIsa::supported());
}

/// Sizes straddling every tile and cache-block edge (MR ∈ {4, 6, 8}, NR ∈ {16, 32}, MC = 64), with
/// exact small-integer data so every ISA must agree bit for bit with the f64 result.
#[test]
fn tile_and_block_edges_are_exact() {
    for isa in GemmIsa::supported() {
        for (m, k, n) in [(1, 1, 1), (65, 3, 33), (64, 7, 32), (130, 2, 17), (7, 300, 47), (9, 0, 5)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
            let mut c = vec![f32::NAN; m * n];
            matmul_packed(
                &a,
                m,
                &PackedB::pack_for(isa, &b, k, n),
                &mut c,
                Epilogue::new(Some(&bias), Activation::Relu),
            );
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    assert_eq!(
                        c[i * n + j],
                        (dot + bias[j]).max(0.0),
                        "{isa:?} C[{i},{j}] m={m} k={k} n={n}"
                    );
                }
            }
        }
    }
}

#[test]
fn empty_reduction_gives_activation_of_bias() {
    let bias = [-1.0f32, 0.5, 2.0];
    let mut c = [f32::NAN; 6];
    matmul_packed(&[], 2, &PackedB::pack(&[], 0, 3), &mut c, Epilogue::new(Some(&bias), Activation::Relu));
    assert_eq!(c, [0.0, 0.5, 2.0, 0.0, 0.5, 2.0]);
    let mut c = [f32::NAN; 6];
    matmul_packed(&[], 2, &PackedB::pack(&[], 0, 3), &mut c, Epilogue::NONE);
    assert_eq!(c, [0.0; 6]);
}

#[test]
#[should_panic(expected = "matmul_packed: A has")]
fn matmul_packed_rejects_bad_a() {
    let b = PackedB::pack(&[0.0; 6], 2, 3);
    matmul_packed(&[0.0; 5], 2, &b, &mut [0.0; 6], Epilogue::NONE);
}

#[test]
#[should_panic(expected = "matmul_packed: C has")]
fn matmul_packed_rejects_bad_c() {
    let b = PackedB::pack(&[0.0; 6], 2, 3);
    matmul_packed(&[0.0; 4], 2, &b, &mut [0.0; 5], Epilogue::NONE);
}

#[test]
#[should_panic(expected = "matmul_packed: bias has")]
fn matmul_packed_rejects_bad_bias() {
    let b = PackedB::pack(&[0.0; 6], 2, 3);
    matmul_packed(&[0.0; 4], 2, &b, &mut [0.0; 6], Epilogue::new(Some(&[0.0; 2]), Activation::Identity));
}

#[test]
#[should_panic(expected = "PackedB: B has")]
fn pack_rejects_bad_b() {
    PackedB::pack(&[0.0; 5], 2, 3);
}

// ------------------------------------------------------------------------------------------------
// Linear
// ------------------------------------------------------------------------------------------------

fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn check_linear<const IN: usize, const OUT: usize>(
    rows: usize,
    with_bias: bool,
    act: Activation,
    threads: &Threads,
) {
    let w_t = pseudo_random(IN * OUT, (IN * 31 + OUT) as u64);
    let bias = with_bias.then(|| pseudo_random(OUT, 7));
    let layer = Linear::<IN, OUT>::from_parts(w_t.clone(), bias.clone());
    let x_flat = pseudo_random(rows * IN, rows as u64 + 1);
    let x: Vec<[f32; IN]> =
        x_flat.chunks_exact(IN.max(1)).take(rows).map(|r| r.try_into().unwrap()).collect();
    let x: Vec<[f32; IN]> = if IN == 0 { vec![[0.0; IN]; rows] } else { x };
    let mut out = vec![[f32::NAN; OUT]; rows];
    layer.forward(&x, &mut out, act, threads);
    let (want, tol) = reference(x.as_flattened(), &w_t, bias.as_deref(), act, (rows, IN, OUT));
    let what = format!("Linear<{IN},{OUT}> rows={rows} bias={with_bias} {act:?} threads={}", threads.count());
    check(out.as_flattened(), &want, &tol, &what, OUT).unwrap();
}

#[test]
fn linear_forward_matches_f64() {
    let pool = Threads::new(2).unwrap();
    for threads in [&Threads::sequential(), &pool] {
        for act in ACTIVATIONS {
            for with_bias in [false, true] {
                // 0, 1, a tile edge, and more than two ROW_BLOCKs.
                for rows in [0, 1, 13, 130] {
                    check_linear::<3, 5>(rows, with_bias, act, threads);
                    check_linear::<48, 96>(rows, with_bias, act, threads);
                }
                check_linear::<96, 48>(70, with_bias, act, threads);
                check_linear::<37, 70>(65, with_bias, act, threads);
            }
        }
    }
}

/// `load_fused` packs each `[part, IN]` PyTorch weight as columns `p·part ..` of Wᵀ.
#[test]
fn load_fused_matches_separate_layers() {
    const IN: usize = 10;
    const PART: usize = 7;
    let names = ["q", "k", "v"];
    let mut header = String::from("{");
    let mut data = Vec::new();
    let mut tensors = Vec::new();
    for (p, name) in names.iter().enumerate() {
        tensors.push((format!("{name}.weight"), vec![PART, IN], pseudo_random(PART * IN, p as u64 + 10)));
        tensors.push((format!("{name}.bias"), vec![PART], pseudo_random(PART, p as u64 + 20)));
    }
    for (i, (name, shape, values)) in tensors.iter().enumerate() {
        let start = data.len();
        values.iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes()));
        let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
        header.push_str(if i > 0 { "," } else { "" });
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            shape.join(","),
            data.len()
        ));
    }
    header.push('}');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);

    let mut loader = WeightLoader::from_bytes(bytes.clone(), "fused").unwrap();
    let fused = Linear::<IN, { 3 * PART }>::load_fused(&mut loader, &names, true);
    loader.finish().unwrap();
    let x: Vec<[f32; IN]> = (0..9).map(|r| pseudo_random(IN, r + 100).try_into().unwrap()).collect();
    let mut got = vec![[0.0; 3 * PART]; x.len()];
    fused.forward(&x, &mut got, Activation::GeluErf, &Threads::sequential());

    let mut loader = WeightLoader::from_bytes(bytes, "separate").unwrap();
    for (p, name) in names.iter().enumerate() {
        let single = Linear::<IN, PART>::load(&mut loader, name, true);
        let mut want = vec![[0.0; PART]; x.len()];
        single.forward(&x, &mut want, Activation::GeluErf, &Threads::sequential());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(&g[p * PART..(p + 1) * PART], w, "part {name}");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Column split (few rows across threads)
// ------------------------------------------------------------------------------------------------

/// Bit patterns, so NaN-vs-NaN and ±0 differences count.
fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(Config::with_cases(64))]

    /// `matmul_packed_cols` over an arbitrary partition of the panels into ranges (each written
    /// through per-row sub-slices of one output) is bit-identical to `matmul_packed`, on every ISA.
    #[test]
    fn matmul_packed_cols_partition_is_bit_identical(
        ((m, k, n), a, b, bias, act) in gemm_case(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..4),
    ) {
        let epilogue = Epilogue::new(bias.as_deref(), act);
        for isa in GemmIsa::supported() {
            let packed = PackedB::pack_for(isa, &b, k, n);
            let mut want = vec![f32::NAN; m * n];
            matmul_packed(&a, m, &packed, &mut want, epilogue);
            let panels = packed.panel_count();
            let mut bounds: Vec<usize> = cuts.iter().map(|c| (c * panels as f64) as usize).collect();
            bounds.extend([0, panels]);
            bounds.sort_unstable();
            let mut got = vec![f32::NAN; m * n];
            for range in bounds.windows(2).map(|w| w[0]..w[1]) {
                let cols = packed.panel_cols(range.clone());
                let mut rows: Vec<&mut [f32]> =
                    got.chunks_exact_mut(n.max(1)).take(m).map(|r| &mut r[cols.clone()]).collect();
                if n == 0 {
                    rows = (0..m).map(|_| Default::default()).collect();
                }
                matmul_packed_cols(&a, m, &packed, range, &mut rows, epilogue);
            }
            prop_assert_eq!(bits(&got), bits(&want), "{:?} m={} k={} n={} cuts={:?}", isa, m, k, n, bounds);
        }
    }
}

/// `Linear::forward` on `threads` (the column split for m ≤ 64) against the sequential row path,
/// bit for bit.
fn check_split_identical<const IN: usize, const OUT: usize>(
    rows: usize,
    with_bias: bool,
    act: Activation,
    threads: &Threads,
    seed: u64,
) -> Result<(), TestCaseError> {
    let layer = Linear::<IN, OUT>::from_parts(
        pseudo_random(IN * OUT, seed),
        with_bias.then(|| pseudo_random(OUT, seed + 1)),
    );
    let x_flat = pseudo_random(rows * IN, seed + 2);
    let x: Vec<[f32; IN]> = (0..rows).map(|r| std::array::from_fn(|i| x_flat[r * IN + i])).collect();
    let mut want = vec![[f32::NAN; OUT]; rows];
    layer.forward(&x, &mut want, act, &Threads::sequential());
    let mut got = vec![[f32::NAN; OUT]; rows];
    layer.forward(&x, &mut got, act, threads);
    prop_assert_eq!(
        bits(got.as_flattened()),
        bits(want.as_flattened()),
        "Linear<{},{}> rows={} bias={} {:?} threads={}",
        IN,
        OUT,
        rows,
        with_bias,
        act,
        threads.count()
    );
    Ok(())
}

proptest! {
    #![proptest_config(Config::with_cases(48))]

    /// Few rows (the decode case) on 1–3 threads: bit-identical to the single-threaded row path
    /// for every activation, with and without bias, over shapes around the panel widths (16, 32).
    #[test]
    fn linear_column_split_is_bit_identical(
        rows in 1usize..=8,
        threads in 1usize..=3,
        shape in 0usize..8,
        act in prop::sample::select(ACTIVATIONS.to_vec()),
        with_bias: bool,
        seed in 0u64..1000,
    ) {
        let pool = Threads::new(threads).unwrap();
        let t = &pool;
        match shape {
            0 => check_split_identical::<1, 1>(rows, with_bias, act, t, seed)?,
            1 => check_split_identical::<7, 33>(rows, with_bias, act, t, seed)?,
            2 => check_split_identical::<0, 50>(rows, with_bias, act, t, seed)?,
            3 => check_split_identical::<19, 64>(rows, with_bias, act, t, seed)?,
            4 => check_split_identical::<40, 97>(rows, with_bias, act, t, seed)?,
            5 => check_split_identical::<64, 16>(rows, with_bias, act, t, seed)?,
            6 => check_split_identical::<3, 200>(rows, with_bias, act, t, seed)?,
            _ => check_split_identical::<77, 129>(rows, with_bias, act, t, seed)?,
        }
    }
}

/// Row counts around the column-split limit (64) and tile edges, 2 and 3 threads.
#[test]
fn linear_column_split_edges_are_bit_identical() {
    for threads in [2, 3] {
        let pool = Threads::new(threads).unwrap();
        for rows in [0, 1, 5, 6, 8, 9, 63, 64, 65] {
            for with_bias in [false, true] {
                check_split_identical::<24, 100>(rows, with_bias, Activation::GeluTanh, &pool, 3).unwrap();
                check_split_identical::<5, 300>(rows, with_bias, Activation::Relu, &pool, 4).unwrap();
            }
        }
    }
}

#[test]
#[should_panic(expected = "matmul_packed_cols: C row 1 has")]
fn matmul_packed_cols_rejects_bad_row() {
    let b = PackedB::pack(&[0.0; 2 * 40], 2, 40);
    let cols = b.panel_cols(0..1).len();
    let (mut r0, mut r1) = (vec![0.0; cols], vec![0.0; cols + 1]);
    matmul_packed_cols(&[0.0; 4], 2, &b, 0..1, &mut [&mut r0[..], &mut r1[..]], Epilogue::NONE);
}

#[test]
#[should_panic(expected = "panel range")]
fn matmul_packed_cols_rejects_bad_range() {
    let b = PackedB::pack(&[0.0; 2 * 40], 2, 40);
    let mut r0 = [0.0; 40];
    let end = b.panel_count() + 1;
    matmul_packed_cols(&[0.0; 2], 1, &b, 0..end, &mut [&mut r0[..]], Epilogue::NONE);
}
