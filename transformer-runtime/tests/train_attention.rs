//! The backward pass of multi-head attention (`train::attention`):
//!
//! * parity with PyTorch's autograd on the fixtures of `scripts/reference/train_attention.py`
//!   (`tests/fixtures/train/attention/*.json`: grouped-query and multi-head, HD 8 and 16, causal,
//!   padded keys, a row that sees no key, an ALiBi-like bias, a trailing window, cross-attention
//!   with fewer keys than queries), for the blocked functions and for the naive twins;
//! * a perturbed input moves the gradients beyond the tolerance (the parity test can fail);
//! * a property test of the blocked backward against its f64 naive twin over random shapes
//!   crossing the block sizes, strided (fused) input views, and every mask kind;
//! * a central finite-difference check of the gradients on a tiny case.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;
use transformer_runtime::kernels::attention::{attention_general, HeadRows, Mask, PositionBias};
use transformer_runtime::train::attention::{
    attention_backward, attention_backward_naive, attention_backward_scratch_len, attention_train,
    attention_train_naive, ProbDropout, KEY_TILE, Q_BLOCK,
};
use transformer_runtime::train::rng::Stream;

/// Parity tolerance against PyTorch (float64): max |ours − torch| ≤ 1e-4 · max |torch| per
/// tensor. Ours runs in f32 (≈ 6e-8 relative per operation); sums over ≤ 13 keys and 16 head
/// dimensions stay far below 1e-4, while a wrong convention (a missed scale, the wrong kv head, a
/// dropped `−D` term, an unmasked key) moves the gradients by tens of percent.
const PARITY_TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/train/attention")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("expected an integer, got {v}")) as usize
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| if x.is_null() { f32::NEG_INFINITY } else { x.as_f64().expect("a number") as f32 })
        .collect()
}

/// One attention problem: contiguous q `[rows, heads·hd]`, k and v `[keys, kv_heads·hd]`.
#[derive(Clone, Debug)]
struct Problem {
    hd: usize,
    heads: usize,
    kv_heads: usize,
    rows: usize,
    keys: usize,
    causal: bool,
    window: Option<usize>,
    key_valid: Option<Vec<bool>>,
    /// (table, span, center)
    bias: Option<(Vec<f32>, usize, usize)>,
    scale: f32,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d_out: Vec<f32>,
    /// Extra floats per row and a leading offset of the strided views the property test builds.
    pad: usize,
    /// Dropout on the probabilities: (p, seed).
    dropout: Option<(f32, u64)>,
}

/// out, lse, dq, dk, dv.
#[derive(Clone, Debug)]
struct Grads {
    out: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

fn load(path: &Path) -> (Problem, Grads) {
    let c = read_json(path);
    let bias = (!c["bias"].is_null()).then(|| {
        let b = &c["bias"];
        (floats(&b["table"]), usize_of(&b["span"]), usize_of(&b["center"]))
    });
    let key_valid: Vec<bool> =
        c["key_valid"].as_array().expect("key_valid").iter().map(|x| x.as_bool().expect("a flag")).collect();
    let problem = Problem {
        hd: usize_of(&c["hd"]),
        heads: usize_of(&c["heads"]),
        kv_heads: usize_of(&c["kv_heads"]),
        rows: usize_of(&c["rows"]),
        keys: usize_of(&c["keys"]),
        causal: c["causal"].as_bool().expect("causal"),
        window: c["window"].as_u64().map(|w| w as usize),
        key_valid: Some(key_valid),
        bias,
        scale: c["scale"].as_f64().expect("scale") as f32,
        q: floats(&c["q"]),
        k: floats(&c["k"]),
        v: floats(&c["v"]),
        d_out: floats(&c["d_out"]),
        pad: 0,
        dropout: None,
    };
    let torch = Grads {
        out: floats(&c["out"]),
        lse: floats(&c["lse"]),
        dq: floats(&c["dq"]),
        dk: floats(&c["dk"]),
        dv: floats(&c["dv"]),
    };
    (problem, torch)
}

impl Problem {
    /// q with `pad` floats before it and after each row; k and v interleaved as fused `[K | V]`
    /// rows of width `2·kv_width + pad` (when `pad > 0`), as a fused projection would give them.
    fn views(&self) -> (Vec<f32>, usize, Vec<f32>, usize) {
        let width = self.heads * self.hd;
        let kv_width = self.kv_heads * self.hd;
        let q_stride = width + self.pad;
        let mut qs = vec![f32::NAN; self.pad + self.rows * q_stride];
        for r in 0..self.rows {
            qs[self.pad + r * q_stride..][..width].copy_from_slice(&self.q[r * width..][..width]);
        }
        let kv_stride = 2 * kv_width + self.pad;
        let mut kvs = vec![f32::NAN; self.pad + self.keys * kv_stride];
        for j in 0..self.keys {
            kvs[self.pad + j * kv_stride..][..kv_width].copy_from_slice(&self.k[j * kv_width..][..kv_width]);
            kvs[self.pad + j * kv_stride + kv_width..][..kv_width]
                .copy_from_slice(&self.v[j * kv_width..][..kv_width]);
        }
        (qs, q_stride, kvs, kv_stride)
    }
}

/// Runs `$f::<HD>(problem)` for the problem's head width.
macro_rules! with_hd {
    ($p:expr, $f:ident) => {
        match $p.hd {
            4 => $f::<4>($p),
            8 => $f::<8>($p),
            16 => $f::<16>($p),
            hd => panic!("no instantiation for HD = {hd}"),
        }
    };
}

impl Problem {
    /// The probability dropout, drawn as for one sequence of `max(rows, keys)` positions.
    fn prob_dropout(&self) -> Option<ProbDropout> {
        let (p, seed) = self.dropout?;
        let dropout = ProbDropout::new(p, Stream::new(seed, 0, 0)).unwrap().expect("p > 0");
        Some(dropout.for_sequence(0, self.heads, self.rows.max(self.keys)))
    }
}

/// The views, mask and scale of `p`, handed to `body`.
fn with_inputs<const HD: usize, R>(
    p: &Problem,
    body: impl FnOnce(HeadRows<'_>, HeadRows<'_>, HeadRows<'_>, Mask<'_>) -> R,
) -> R {
    assert_eq!(p.hd, HD);
    let kv_width = p.kv_heads * HD;
    let (qs, q_stride, kvs, kv_stride) = p.views();
    let q = HeadRows { data: &qs, stride: q_stride, offset: p.pad, rows: p.rows };
    let k = HeadRows { data: &kvs, stride: kv_stride, offset: p.pad, rows: p.keys };
    let v = HeadRows { data: &kvs, stride: kv_stride, offset: p.pad + kv_width, rows: p.keys };
    let bias =
        p.bias.as_ref().map(|(table, span, center)| PositionBias { table, span: *span, center: *center });
    let mask = Mask { key_valid: p.key_valid.as_deref(), causal: p.causal, window: p.window, bias };
    body(q, k, v, mask)
}

/// The blocked training forward and backward.
fn blocked<const HD: usize>(p: &Problem) -> Grads {
    with_inputs::<HD, _>(p, |q, k, v, mask| {
        let (width, kv_width) = (p.heads * HD, p.kv_heads * HD);
        let mut out = vec![f32::NAN; p.rows * width];
        let mut lse = vec![f32::NAN; p.rows * p.heads];
        let dropout = p.prob_dropout();
        attention_train::<HD>(q, k, v, p.heads, p.kv_heads, mask, p.scale, dropout, &mut out, &mut lse);

        // Without dropout the training forward's output is the inference kernel's, bit for bit.
        if dropout.is_none() {
            let mut inference = vec![0.0; out.len()];
            attention_general::<HD>(q, k, v, p.heads, p.kv_heads, 0, mask, p.scale, &mut inference);
            assert_eq!(out, inference, "attention_train's out differs from attention_general's");
        }

        // Stale scratch and gradient buffers must not leak into the result.
        let mut scratch = vec![f32::NAN; attention_backward_scratch_len(HD) + 3];
        let mut dq = vec![f32::NAN; p.rows * width];
        let mut dk = vec![f32::NAN; p.keys * kv_width];
        let mut dv = vec![f32::NAN; p.keys * kv_width];
        attention_backward::<HD>(
            q,
            k,
            v,
            &out,
            &p.d_out,
            &lse,
            p.heads,
            p.kv_heads,
            mask,
            p.scale,
            dropout,
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
        );
        Grads { out, lse, dq, dk, dv }
    })
}

/// The f64 naive twins.
fn naive<const HD: usize>(p: &Problem) -> Grads {
    with_inputs::<HD, _>(p, |q, k, v, mask| {
        let (width, kv_width) = (p.heads * HD, p.kv_heads * HD);
        let mut out = vec![f32::NAN; p.rows * width];
        let mut lse = vec![f32::NAN; p.rows * p.heads];
        attention_train_naive::<HD>(
            q,
            k,
            v,
            p.heads,
            p.kv_heads,
            mask,
            p.scale,
            p.prob_dropout(),
            &mut out,
            &mut lse,
        );
        let mut dq = vec![f32::NAN; p.rows * width];
        let mut dk = vec![f32::NAN; p.keys * kv_width];
        let mut dv = vec![f32::NAN; p.keys * kv_width];
        attention_backward_naive::<HD>(
            q,
            k,
            v,
            &p.d_out,
            p.heads,
            p.kv_heads,
            mask,
            p.scale,
            p.prob_dropout(),
            &mut dq,
            &mut dk,
            &mut dv,
        );
        Grads { out, lse, dq, dk, dv }
    })
}

/// max |a − b| / max(max |b|, floor), with equal infinities (lse of a row without keys) counted
/// as equal and any NaN as an infinite error.
fn relative_error(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().filter(|x| x.is_finite()).fold(floor, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => 0.0,
            _ if x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() => f32::INFINITY,
            _ => (x - y).abs(),
        })
        .fold(0.0f32, f32::max)
        / scale
}

/// The relative error of each tensor: out, lse, dq, dk, dv.
fn errors(ours: &Grads, reference: &Grads, floor: f32) -> [(&'static str, f32); 5] {
    [
        ("out", relative_error(&ours.out, &reference.out, floor)),
        ("lse", relative_error(&ours.lse, &reference.lse, floor)),
        ("dq", relative_error(&ours.dq, &reference.dq, floor)),
        ("dk", relative_error(&ours.dk, &reference.dk, floor)),
        ("dv", relative_error(&ours.dv, &reference.dv, floor)),
    ]
}

fn fixtures() -> Vec<(String, Problem, Grads)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures/train/attention")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 4, "expected the fixtures of scripts/reference/train_attention.py");
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let (problem, torch) = load(&path);
            (name, problem, torch)
        })
        .collect()
}

#[test]
fn matches_pytorch_autograd() {
    for (name, p, torch) in fixtures() {
        for (which, ours) in [("blocked", with_hd!(&p, blocked)), ("naive", with_hd!(&p, naive))] {
            for (tensor, err) in errors(&ours, &torch, 0.0) {
                eprintln!("{name} {which} {tensor}: max |ours − torch| / max |torch| = {err:.2e}");
                assert!(err <= PARITY_TOLERANCE, "{name} ({which}): {tensor} off by {err:e} (relative)");
            }
        }
    }
}

/// The fixtures cover what they claim: a row without keys (zero gradient, lse −∞) somewhere, a
/// bias, grouped-query attention, a window and cross-attention.
#[test]
fn fixtures_cover_the_cases() {
    let all = fixtures();
    assert!(all.iter().any(|(_, _, t)| t.lse.contains(&f32::NEG_INFINITY)));
    assert!(all.iter().any(|(_, p, _)| p.bias.is_some()));
    assert!(all.iter().any(|(_, p, _)| p.kv_heads < p.heads));
    assert!(all.iter().any(|(_, p, _)| p.window.is_some()));
    assert!(all.iter().any(|(_, p, _)| p.keys != p.rows));
    for (name, p, torch) in &all {
        let ours = with_hd!(p, blocked);
        let width = p.heads * p.hd;
        for r in 0..p.rows {
            for h in 0..p.heads {
                if torch.lse[r * p.heads + h] == f32::NEG_INFINITY {
                    assert_eq!(ours.lse[r * p.heads + h], f32::NEG_INFINITY, "{name}: row {r}");
                    let dq = &ours.dq[r * width + h * p.hd..][..p.hd];
                    assert!(dq.iter().all(|&x| x == 0.0), "{name}: row {r} sees no key but has dq {dq:?}");
                }
            }
        }
    }
}

/// The parity test can fail: nudging one query value by 1e-2 (or the scale by 1 %) moves the
/// gradients beyond the tolerance.
#[test]
fn perturbed_inputs_break_parity() {
    for (name, p, torch) in fixtures() {
        let mut nudged = p.clone();
        // Row 5 sees keys in every fixture.
        nudged.q[5 * p.heads * p.hd] += 1e-2;
        let ours = with_hd!(&nudged, blocked);
        let worst = errors(&ours, &torch, 0.0).iter().map(|&(_, e)| e).fold(0.0, f32::max);
        assert!(worst > PARITY_TOLERANCE, "{name}: a nudged q still within tolerance ({worst:e})");

        let mut rescaled = p.clone();
        rescaled.scale *= 1.01;
        let ours = with_hd!(&rescaled, blocked);
        let worst = errors(&ours, &torch, 0.0).iter().map(|&(_, e)| e).fold(0.0, f32::max);
        assert!(worst > PARITY_TOLERANCE, "{name}: a 1 % scale change still within tolerance ({worst:e})");
    }
}

/// Central differences of `L = Σ d_out ∘ out` (the f32 training forward, summed in f64) against
/// the blocked backward on a tiny grouped-query case with padding, the causal limit and a bias;
/// without dropout (the forward is then the inference kernel) and with dropout on the
/// probabilities (p = 0.3: the same mask in every nudged forward, as it is drawn by position).
#[test]
fn finite_differences() {
    finite_differences_with(None);
    finite_differences_with(Some((0.3, 11)));
}

fn finite_differences_with(dropout: Option<(f32, u64)>) {
    const HD: usize = 4;
    let (heads, kv_heads, rows) = (2, 1, 5);
    let mut rng = Lcg(7);
    let span = 2 * rows - 1;
    let p = Problem {
        hd: HD,
        heads,
        kv_heads,
        rows,
        keys: rows,
        causal: true,
        window: None,
        key_valid: Some(vec![true, true, false, true, true]),
        bias: Some(((0..heads * span).map(|_| rng.next()).collect(), span, rows - 1)),
        scale: 0.5,
        q: (0..rows * heads * HD).map(|_| rng.next()).collect(),
        k: (0..rows * kv_heads * HD).map(|_| rng.next()).collect(),
        v: (0..rows * kv_heads * HD).map(|_| rng.next()).collect(),
        d_out: (0..rows * heads * HD).map(|_| rng.next()).collect(),
        pad: 0,
        dropout,
    };
    let grads = blocked::<HD>(&p);
    let loss = |p: &Problem| -> f64 {
        with_inputs::<HD, _>(p, |q, k, v, mask| {
            let (mut out, mut lse) = (vec![0.0; p.rows * p.heads * HD], vec![0.0; p.rows * p.heads]);
            let dropout = p.prob_dropout();
            attention_train::<HD>(q, k, v, p.heads, p.kv_heads, mask, p.scale, dropout, &mut out, &mut lse);
            out.iter().zip(&p.d_out).map(|(&o, &d)| f64::from(o) * f64::from(d)).sum()
        })
    };
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for (which, grad) in [("q", &grads.dq), ("k", &grads.dk), ("v", &grads.dv)] {
        let n = grad.len();
        for i in 0..n {
            let nudge = |delta: f32| {
                let mut p = p.clone();
                let x = match which {
                    "q" => &mut p.q[i],
                    "k" => &mut p.k[i],
                    _ => &mut p.v[i],
                };
                *x += delta;
                let x = f64::from(*x);
                (loss(&p), x)
            };
            let ((up, x_up), (down, x_down)) = (nudge(h), nudge(-h));
            let fd = (up - down) / (x_up - x_down);
            let err = (fd - f64::from(grad[i])).abs() / (1.0 + fd.abs());
            worst = worst.max(err);
            assert!(err < 2e-3, "d{which}[{i}]: finite difference {fd} vs backward {}", grad[i]);
        }
    }
    eprintln!("finite differences (dropout {dropout:?}): worst |fd − ours| / (1 + |fd|) = {worst:.2e}");
}

/// A small deterministic generator of values in [−1, 1) for the hand-built cases.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Blocked vs naive twin: max |blocked − naive| ≤ 2e-4 · max(1, max |naive|) per tensor. Inputs
/// are in [−2, 2], so scores reach ±16·scale·HD; f32 sums over ≤ 70 keys stay well inside.
const TWIN_TOLERANCE: f32 = 2e-4;

fn problem() -> impl Strategy<Value = Problem> {
    let shape = (
        prop::sample::select(vec![4usize, 8, 16]),
        prop::sample::select(vec![(1usize, 1usize), (2, 1), (2, 2), (3, 1), (3, 3), (4, 2)]),
        1usize..70,
        prop::option::of(1usize..70),
        any::<bool>(),
        prop::option::of(0usize..24),
        any::<bool>(),
        any::<bool>(),
        0usize..3,
        any::<u64>(),
        prop::option::weighted(0.3, 0.05f32..0.6),
    );
    shape.prop_map(
        |(hd, (heads, kv_heads), rows, cross_keys, causal, window, padded, biased, pad, seed, p)| {
            let keys = cross_keys.unwrap_or(rows);
            let mut rng = Lcg(seed);
            let mut values = |n: usize| (0..n).map(|_| 2.0 * rng.next()).collect::<Vec<f32>>();
            let q = values(rows * heads * hd);
            let k = values(keys * kv_heads * hd);
            let v = values(keys * kv_heads * hd);
            let d_out = values(rows * heads * hd);
            let span = rows + keys - 1;
            let bias = biased.then(|| (values(heads * span), span, rows - 1));
            // About one key in five is padding; sometimes every key, so whole rows see nothing.
            let key_valid = padded.then(|| {
                let all_padding = seed % 17 == 0;
                (0..keys).map(|_| !all_padding && rng.next() > -0.6).collect()
            });
            Problem {
                hd,
                heads,
                kv_heads,
                rows,
                keys,
                causal,
                window,
                key_valid,
                bias,
                scale: 1.0 / (hd as f32).sqrt(),
                q,
                k,
                v,
                d_out,
                pad,
                dropout: p.map(|p| (p, seed)),
            }
        },
    )
}

proptest! {
    #![proptest_config(Config::with_cases(96))]

    #[test]
    fn blocked_matches_naive_twin(p in problem()) {
        let ours = with_hd!(&p, blocked);
        let twin = with_hd!(&p, naive);
        for (tensor, err) in errors(&ours, &twin, 1.0) {
            prop_assert!(err <= TWIN_TOLERANCE, "{tensor}: error {err:e}");
        }
    }
}

/// The block sizes the property test's shapes (rows and keys up to 69) cross.
#[test]
fn shapes_cross_the_blocks() {
    const { assert!(2 * KEY_TILE < 69 && 4 * Q_BLOCK < 69) };
}
