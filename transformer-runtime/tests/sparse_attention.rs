//! Centred sliding windows (Longformer's local attention) and block-sparse attention (the Sparse
//! Transformer's strided and fixed layouts): the tiled kernel on every instruction set this CPU
//! has, its naive twin and the layers, each against an f64 attention over a dense mask built from
//! this file's own copy of the predicates (written again from the papers, not calling the
//! library's); the tiles the kernel skips (its score counter equals what the layout predicts); and
//! a check that a deliberately wrong predicate is caught by the same comparison.
//!
//! Tolerances are docs/NUMERICS.md's attention bound (relative to the natural scale `Σ P|v| / Σ P`
//! of each output), as in `seq2seq_kernels.rs`; a masking bug shows up as an O(0.01..1) error.

use std::num::NonZeroUsize;

use ndarray::ArrayView2;
use proptest::prelude::*;
use proptest::test_runner::Config;
use transformer_runtime::kernels::attention::{
    attention_block_sparse, attention_block_sparse_naive, attention_general, attention_general_naive,
    attention_on, scores_computed, AttentionIsa, BlockSize, BlockSparse, HeadRows, Mask, SparsePattern,
    Window, Q_BLOCK,
};
use transformer_runtime::layers::{
    cached_causal_attention_sparse, causal_self_attention_sparse, self_attention_sparse, self_attention_with,
    AttentionShape,
};
use transformer_runtime::{Batch, KvCache, Threads};

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
// The predicates, this file's own copy
// ------------------------------------------------------------------------------------------------

/// A block layout as plain numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Child et al. §4.2, strided: the local band `I − J < ℓ` and the column `(I − J) mod ℓ = 0`.
    Strided { stride: usize },
    /// Child et al. §4.2, fixed: the block's own group `⌊J/ℓ⌋ = ⌊I/ℓ⌋` and the last `c` blocks of
    /// every group, `J mod ℓ ∈ {ℓ − c, …, ℓ − 1}`.
    Fixed { stride: usize, summary: usize },
}

impl Layout {
    fn sparse(self, block: usize) -> BlockSparse {
        let nz = |x| NonZeroUsize::new(x).expect("positive stride");
        let pattern = match self {
            Layout::Strided { stride } => SparsePattern::Strided { stride: nz(stride) },
            Layout::Fixed { stride, summary } => SparsePattern::Fixed { stride: nz(stride), summary },
        };
        BlockSparse::new(pattern, BlockSize::new(block).expect("a multiple of the key tile"))
    }
}

/// Whether query block `i` attends key block `j`.
fn layout_sees(layout: Layout, i: usize, j: usize, causal: bool) -> bool {
    if causal && j > i {
        return false;
    }
    match layout {
        Layout::Strided { stride } => {
            let d = i.abs_diff(j);
            d < stride || d.is_multiple_of(stride)
        }
        Layout::Fixed { stride, summary } => j / stride == i / stride || j % stride + summary >= stride,
    }
}

/// Whether the query at position `p` sees key `j` under the causal limit and the window alone:
/// trailing `p − w < j ≤ p` (causal), centred `2·|j − p| ≤ w` (bidirectional; `|j − p| ≤ w/2`).
fn window_sees(causal: bool, window: Option<usize>, p: usize, j: usize) -> bool {
    if causal && j > p {
        return false;
    }
    match window {
        None => true,
        Some(w) if causal => j + w > p,
        Some(w) => 2 * p.abs_diff(j) <= w,
    }
}

/// The dense mask of a kernel call: padding, causal limit, window and (if any) the block layout.
#[derive(Clone, Debug)]
struct Visibility {
    key_valid: Option<Vec<bool>>,
    causal: bool,
    window: Option<usize>,
    layout: Option<(Layout, usize)>,
}

impl Visibility {
    fn sees(&self, p: usize, j: usize) -> bool {
        self.key_valid.as_ref().is_none_or(|valid| valid[j])
            && window_sees(self.causal, self.window, p, j)
            && self.layout.is_none_or(|(layout, b)| layout_sees(layout, p / b, j / b, self.causal))
    }

    fn mask(&self) -> Mask<'_> {
        Mask { key_valid: self.key_valid.as_deref(), causal: self.causal, window: self.window, bias: None }
    }

    fn sparse(&self) -> Option<BlockSparse> {
        self.layout.map(|(layout, b)| layout.sparse(b))
    }
}

// ------------------------------------------------------------------------------------------------
// f64 reference and tolerance
// ------------------------------------------------------------------------------------------------

/// An f64 reference output (`n_q × heads·HD`; zeros for a query that sees nothing) and, per
/// element, the natural scale `Σ P|v| / Σ P` the error bound is relative to.
struct Reference {
    out: Vec<f64>,
    scale: Vec<f64>,
}

/// Naive f64 attention over contiguous rows (`q`: `heads·HD` wide, `k` and `v`: `kv_heads·HD`):
/// query row `r` sees key `j` iff `sees(r, j)`.
fn reference(
    (q, k, v): (&[f32], &[f32], &[f32]),
    (n_q, n_k): (usize, usize),
    (heads, kv_heads): (usize, usize),
    scale: f32,
    sees: impl Fn(usize, usize) -> bool,
) -> Reference {
    let (width, kv_width, group) = (heads * HD, kv_heads * HD, heads / kv_heads);
    let (mut out, mut nat) = (vec![0.0; n_q * width], vec![0.0; n_q * width]);
    for r in 0..n_q {
        let keys: Vec<usize> = (0..n_k).filter(|&j| sees(r, j)).collect();
        for h in 0..heads {
            let kvh = h / group;
            let qh = &q[r * width + h * HD..][..HD];
            let s: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let kh = &k[j * kv_width + kvh * HD..][..HD];
                    qh.iter().zip(kh).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>()
                        * f64::from(scale)
                })
                .collect();
            if s.is_empty() {
                continue;
            }
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (&p, &j) in e.iter().zip(&keys) {
                for (d, &x) in v[j * kv_width + kvh * HD..][..HD].iter().enumerate() {
                    out[r * width + h * HD + d] += p / sum * f64::from(x);
                    nat[r * width + h * HD + d] += p / sum * f64::from(x).abs();
                }
            }
        }
    }
    Reference { out, scale: nat }
}

/// The bound of docs/NUMERICS.md for `n` keys (|q|, |k| ≤ 1, so Σ|q·scale·k| ≤ HD·scale).
fn attention_tol(n: usize, scale: f32) -> f64 {
    let u = EPS32 / 2.0;
    let tiles = n.div_ceil(64) as f64;
    let ds = ((HD as f64 / 8.0).ceil() + 4.0) * u * HD as f64 * f64::from(scale);
    (n as f64 + 9.0 * tiles + 19.0) * u + 2.0 * ds
}

/// `Ok` iff every output is finite and within `tol` (relative to its natural scale) of the
/// reference; otherwise the first violation.
fn compare(got: &[f32], want: &Reference, tol: f64) -> Result<(), String> {
    if got.len() != want.out.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.out.len()));
    }
    for (i, ((&g, &w), &s)) in got.iter().zip(&want.out).zip(&want.scale).enumerate() {
        if !g.is_finite() || (f64::from(g) - w).abs() > tol * s + 1e-30 {
            return Err(format!("[{i}]: {g} vs {w} (scale {s}, tol {tol})"));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Kernel cases
// ------------------------------------------------------------------------------------------------

/// One kernel call: `q_rows` queries at positions `q_pos0..` against `keys` keys.
#[derive(Clone, Debug)]
struct KernelCase {
    heads: usize,
    kv_heads: usize,
    keys: usize,
    q_rows: usize,
    q_pos0: usize,
    vis: Visibility,
    seed: u64,
}

type Kernel<'a> = &'a dyn Fn(HeadRows<'_>, HeadRows<'_>, HeadRows<'_>, Mask<'_>, &mut [f32]);

impl KernelCase {
    fn data(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (hq, hk) = (self.heads * HD, self.kv_heads * HD);
        (
            values(self.q_rows * hq, self.seed),
            values(self.keys * hk, self.seed ^ 1),
            values(self.keys * hk, self.seed ^ 2),
        )
    }

    /// Runs `f` on the case's views; the output starts as NaN so an unwritten row shows.
    fn run(&self, (q, k, v): (&[f32], &[f32], &[f32]), f: Kernel<'_>) -> Vec<f32> {
        let (hq, hk) = (self.heads * HD, self.kv_heads * HD);
        let view = |data, rows, width| HeadRows { data, stride: width, offset: 0, rows };
        let mut out = vec![f32::NAN; self.q_rows * hq];
        f(
            view(q, self.q_rows, hq),
            view(k, self.keys, hk),
            view(v, self.keys, hk),
            self.vis.mask(),
            &mut out,
        );
        out
    }

    /// The tiled kernel on `isa`, with the case's layout if any.
    fn run_on(&self, data: (&[f32], &[f32], &[f32]), isa: AttentionIsa) -> Vec<f32> {
        let sparse = self.vis.sparse();
        self.run(data, &|q, k, v, mask, out| {
            attention_on::<HD>(isa, q, k, v, self.heads, self.kv_heads, self.q_pos0, mask, sparse, SCALE, out)
        })
    }

    /// The f64 reference under `sees(p, j)` (absolute positions).
    fn reference(&self, data: (&[f32], &[f32], &[f32]), sees: impl Fn(usize, usize) -> bool) -> Reference {
        reference(data, (self.q_rows, self.keys), (self.heads, self.kv_heads), SCALE, |r, j| {
            sees(self.q_pos0 + r, j)
        })
    }

    fn tol(&self) -> f64 {
        attention_tol(self.keys, SCALE)
    }
}

const SCALE: f32 = 0.35;

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        (1usize..6).prop_map(|stride| Layout::Strided { stride }),
        (1usize..6, 0usize..7).prop_map(|(stride, summary)| Layout::Fixed { stride, summary }),
    ]
}

/// Random heads (GQA groups), up to 420 keys (seldom a multiple of a block), queries anywhere
/// (past the keys too), causal or not, padding, and a window or not.
fn kernel_case(sparse: bool) -> impl Strategy<Value = KernelCase> {
    (
        (1usize..3, 1usize..3),
        0usize..420,
        1usize..40,
        0usize..420,
        any::<bool>(),
        prop_oneof![2 => Just(None), 1 => (0usize..300).prop_map(Some)],
        (layout(), prop::sample::select(vec![64usize, 128, 192])),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            move |((kv_heads, group), keys, q_rows, q_pos0, causal, window, layout, masked, seed)| {
                prop::collection::vec(prop::bool::weighted(0.8), keys).prop_map(move |bits| KernelCase {
                    heads: kv_heads * group,
                    kv_heads,
                    keys,
                    q_rows,
                    q_pos0,
                    vis: Visibility {
                        key_valid: masked.then(|| bits.clone()),
                        // Without a layout: the centred window, i.e. bidirectional with a window.
                        causal: causal && sparse,
                        window: if sparse { window } else { Some(window.unwrap_or(q_pos0 % 97)) },
                        layout: sparse.then_some(layout),
                    },
                    seed,
                })
            },
        )
}

/// Every tiled path (each instruction set, the dispatched entry) and the naive twin against the
/// f64 reference under the case's own predicate; every SIMD path against the portable (scalar)
/// twin within 1e-5.
fn check_kernel_case(c: &KernelCase) -> Result<(), TestCaseError> {
    let (q, k, v) = c.data();
    let data = (&q[..], &k[..], &v[..]);
    let want = c.reference(data, |p, j| c.vis.sees(p, j));
    let tol = c.tol();
    let (heads, kv_heads, q_pos0) = (c.heads, c.kv_heads, c.q_pos0);
    let naive = match c.vis.sparse() {
        Some(sparse) => c.run(data, &|q, k, v, mask, out| {
            attention_block_sparse_naive::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, SCALE, out)
        }),
        None => c.run(data, &|q, k, v, mask, out| {
            attention_general_naive::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, SCALE, out)
        }),
    };
    compare(&naive, &want, tol).map_err(|e| TestCaseError::fail(format!("naive twin {e}")))?;
    let dispatched = match c.vis.sparse() {
        Some(sparse) => c.run(data, &|q, k, v, mask, out| {
            attention_block_sparse::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, SCALE, out)
        }),
        None => c.run(data, &|q, k, v, mask, out| {
            attention_general::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, SCALE, out)
        }),
    };
    compare(&dispatched, &want, tol).map_err(|e| TestCaseError::fail(format!("dispatched {e}")))?;
    let scalar = c.run_on(data, AttentionIsa::Portable);
    for isa in AttentionIsa::supported() {
        let got = c.run_on(data, isa);
        compare(&got, &want, tol).map_err(|e| TestCaseError::fail(format!("{isa:?} {e}")))?;
        for (i, (&a, &b)) in got.iter().zip(&scalar).enumerate() {
            prop_assert!((a - b).abs() <= 1e-5, "[{}] {:?} {} vs scalar twin {}", i, isa, a, b);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Block-sparse attention (strided and fixed, causal and bidirectional, blocks of 1 to 3 key
    /// tiles, with and without padding and a window) on every instruction set, dispatched and
    /// naive, against the dense mask of this file's predicates.
    #[test]
    fn block_sparse_kernel_matches_the_dense_mask(c in kernel_case(true)) {
        check_kernel_case(&c)?;
    }

    /// The centred (bidirectional) window, even and odd widths from 0 (itself only) to past four
    /// key tiles, queries anywhere, padding: every path against `2·|j − p| ≤ w`.
    #[test]
    fn centred_window_kernel_matches_the_dense_mask(c in kernel_case(false)) {
        check_kernel_case(&c)?;
    }

    /// `next_visible_block` is the first block at or after `from` that one of the query blocks
    /// attends under this file's predicate (a brute-force scan), for both layouts and directions.
    #[test]
    fn next_visible_block_is_the_first_attended_block(
        layout in layout(),
        first in 0usize..60,
        two in any::<bool>(),
        from in 0usize..80,
        causal in any::<bool>(),
    ) {
        let sparse = layout.sparse(64);
        let last = first + usize::from(two);
        let want = (from..from + 200).find(|&j| (first..=last).any(|i| layout_sees(layout, i, j, causal)));
        prop_assert_eq!(sparse.next_visible_block(first..=last, from, causal), want);
        for i in first..=last {
            for j in 0..120 {
                prop_assert_eq!(sparse.block_sees(i, j, causal), layout_sees(layout, i, j, causal), "block {} {}", i, j);
            }
        }
    }
}

/// The layouts on a few hand-checked rows, read off the definitions in the paper.
#[test]
fn layouts_by_hand() {
    let rows = |layout: Layout, i: usize, causal: bool| -> Vec<usize> {
        let sparse = layout.sparse(64);
        (0..16).filter(|&j| sparse.block_sees(i, j, causal)).collect()
    };
    // Strided ℓ = 3: the band 5, 6, 7 and the columns 4, 1 (7 − 4 = 3, 7 − 1 = 6).
    assert_eq!(rows(Layout::Strided { stride: 3 }, 7, true), [1, 4, 5, 6, 7]);
    // Bidirectionally also 8, 9 (band) and 10, 13 (columns).
    assert_eq!(rows(Layout::Strided { stride: 3 }, 7, false), [1, 4, 5, 6, 7, 8, 9, 10, 13]);
    // Fixed ℓ = 4, c = 1: block 9's group is 8..=11 (causal: 8, 9) plus each earlier group's last block.
    assert_eq!(rows(Layout::Fixed { stride: 4, summary: 1 }, 9, true), [3, 7, 8, 9]);
    assert_eq!(rows(Layout::Fixed { stride: 4, summary: 1 }, 9, false), [3, 7, 8, 9, 10, 11, 15]);
    // c = 2, ℓ = 4: the last two of each group.
    assert_eq!(rows(Layout::Fixed { stride: 4, summary: 2 }, 4, true), [2, 3, 4]);
    // c = 0: the group only; c ≥ ℓ: everything (causal: everything up to I).
    assert_eq!(rows(Layout::Fixed { stride: 4, summary: 0 }, 6, true), [4, 5, 6]);
    assert_eq!(rows(Layout::Fixed { stride: 4, summary: 9 }, 6, true), [0, 1, 2, 3, 4, 5, 6]);
    // ℓ = 1: every block.
    assert_eq!(rows(Layout::Strided { stride: 1 }, 3, true), [0, 1, 2, 3]);
}

#[test]
fn block_sizes_are_whole_key_tiles() {
    assert_eq!(BlockSize::TILE, 64);
    assert_eq!(BlockSize::ONE_TILE.get(), 64);
    assert_eq!(BlockSize::new(192).map(BlockSize::get), Ok(192));
    for bad in [0, 1, 32, 100, 65] {
        let err = BlockSize::new(bad).unwrap_err();
        assert_eq!((err.rows, err.tile), (bad, 64));
        assert!(err.to_string().contains(&format!("block size {bad} is not a positive multiple")), "{err}");
    }
}

#[test]
fn the_window_kind_follows_causality() {
    let mask = |causal| Mask { key_valid: None, causal, window: Some(6), bias: None };
    assert_eq!(mask(true).window_kind(), Some(Window::Trailing(6)));
    assert_eq!(mask(false).window_kind(), Some(Window::Centred(6)));
    assert_eq!(Mask { window: None, ..mask(false) }.window_kind(), None);
    // Centred 6: three either side.
    let seen: Vec<usize> = (0..20).filter(|&j| mask(false).sees(10, j)).collect();
    assert_eq!(seen, [7, 8, 9, 10, 11, 12, 13]);
    let seen: Vec<usize> = (0..20).filter(|&j| mask(true).sees(10, j)).collect();
    assert_eq!(seen, [5, 6, 7, 8, 9, 10]);
}

// ------------------------------------------------------------------------------------------------
// A wrong predicate is caught
// ------------------------------------------------------------------------------------------------

/// The comparison the property tests make fails when the dense mask comes from a predicate that is
/// wrong by one block or one position: the kernel is not merely compared with itself. Each wrong
/// predicate differs from the right one on some (query, key) pair of the case, and the kernel's
/// output is then outside the tolerance of the wrong reference while inside the right one's.
#[test]
fn a_wrong_predicate_is_caught() {
    type Wrong = Box<dyn Fn(usize, usize) -> bool>;
    let cases: Vec<(KernelCase, Wrong, &str)> = {
        let case = |causal, window, layout| KernelCase {
            heads: 2,
            kv_heads: 1,
            keys: 333,
            q_rows: 333,
            q_pos0: 0,
            vis: Visibility { key_valid: None, causal, window, layout },
            seed: 7,
        };
        let b = 64;
        vec![
            (
                case(true, None, Some((Layout::Strided { stride: 3 }, b))),
                // Columns by the key block's index (`J mod ℓ = 0`) instead of the distance.
                Box::new(move |p: usize, j: usize| {
                    j <= p && (p / b - j / b < 3 || (j / b).is_multiple_of(3))
                }),
                "strided columns J mod ℓ = 0",
            ),
            (
                case(true, None, Some((Layout::Strided { stride: 2 }, b))),
                // The strided column forgotten.
                Box::new(move |p: usize, j: usize| j <= p && p / b - j / b < 2),
                "strided without columns",
            ),
            (
                case(false, None, Some((Layout::Fixed { stride: 2, summary: 1 }, b))),
                // Summary blocks taken as the first of each group instead of the last.
                Box::new(move |p: usize, j: usize| j / b / 2 == p / b / 2 || (j / b).is_multiple_of(2)),
                "fixed summary at the group's start",
            ),
            (
                case(true, None, Some((Layout::Fixed { stride: 2, summary: 1 }, b))),
                // Causal only at block granularity (the whole diagonal block visible).
                Box::new(move |p: usize, j: usize| {
                    j / b <= p / b && (j / b / 2 == p / b / 2 || (j / b) % 2 == 1)
                }),
                "fixed without j ≤ p inside the diagonal block",
            ),
            (
                case(false, Some(40), None),
                // Centred window one position short on each side (`<` for `≤`).
                Box::new(|p: usize, j: usize| 2 * p.abs_diff(j) < 40),
                "centred window |j − p| < w/2",
            ),
        ]
    };
    for (c, wrong, what) in cases {
        let (q, k, v) = c.data();
        let data = (&q[..], &k[..], &v[..]);
        let differs = (0..c.q_rows).any(|p| (0..c.keys).any(|j| c.vis.sees(p, j) != wrong(p, j)));
        assert!(differs, "{what}: the wrong predicate gives the same dense mask");
        let right = c.reference(data, |p, j| c.vis.sees(p, j));
        let wrong = c.reference(data, wrong);
        let got = c.run_on(data, AttentionIsa::Portable);
        assert_eq!(compare(&got, &right, c.tol()), Ok(()), "{what}: the right predicate");
        assert!(compare(&got, &wrong, c.tol()).is_err(), "{what}: the wrong predicate was not caught");
    }
}

// ------------------------------------------------------------------------------------------------
// Layers
// ------------------------------------------------------------------------------------------------

/// A right-padded batch of `lens` with an interior masked token in sequences longer than 3; rows
/// at or past a sequence's length are NaN in `qkv` (never read).
fn padded_batch(lens: &[usize], stride: usize, seed: u64) -> (Batch, Vec<f32>) {
    let seq = *lens.iter().max().unwrap();
    let mut flags = vec![0u32; lens.len() * seq];
    for (b, &len) in lens.iter().enumerate() {
        flags[b * seq..b * seq + len].fill(1);
        if len > 3 {
            flags[b * seq + 1] = 0;
        }
    }
    let ids = vec![1u32; lens.len() * seq];
    let view = |data| ArrayView2::from_shape((lens.len(), seq), data).unwrap();
    let batch = Batch::from_padded(view(&ids), view(&flags), None).unwrap();
    let mut qkv = values(batch.rows() * stride, seed);
    for (b, &len) in lens.iter().enumerate() {
        qkv[(b * seq + len) * stride..(b + 1) * seq * stride].fill(f32::NAN);
    }
    (batch, qkv)
}

/// Checks a layer's output per sequence against the f64 reference under `sees(b, r, j)`, padding
/// rows zero.
fn check_layer(
    ctx: &[f32],
    qkv: &[f32],
    batch: &Batch,
    lens: &[usize],
    shape: AttentionShape,
    sees: impl Fn(usize, usize, usize) -> bool,
) -> Result<(), TestCaseError> {
    let AttentionShape { heads, kv_heads, .. } = shape;
    let (seq, width, stride) = (batch.seq_len(), heads * HD, shape.qkv_width(HD));
    let scale = 1.0 / (HD as f32).sqrt();
    for (b, &len) in lens.iter().enumerate() {
        let rows = &qkv[b * seq * stride..][..len * stride];
        let pick = |offset: usize, w: usize| -> Vec<f32> {
            rows.chunks_exact(stride).flat_map(|row| row[offset..offset + w].to_vec()).collect()
        };
        let (q, k, v) =
            (pick(0, width), pick(width, kv_heads * HD), pick(width + kv_heads * HD, kv_heads * HD));
        let want = reference((&q, &k, &v), (len, len), (heads, kv_heads), scale, |r, j| sees(b, r, j));
        let got = &ctx[b * seq * width..(b + 1) * seq * width];
        compare(&got[..len * width], &want, attention_tol(len, scale))
            .map_err(|e| TestCaseError::fail(format!("sequence {b} {shape:?}: {e}")))?;
        prop_assert!(got[len * width..].iter().all(|&x| x == 0.0), "padding rows of sequence {} not zero", b);
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct LayerCase {
    lens: Vec<usize>,
    shape: AttentionShape,
    layout: Layout,
    block: usize,
    seed: u64,
}

fn layer_case() -> impl Strategy<Value = LayerCase> {
    (
        prop::collection::vec(1usize..300, 1..4),
        prop::sample::select(vec![(1usize, 1usize), (2, 1), (4, 2), (3, 3)]),
        prop_oneof![2 => Just(None), 1 => (0usize..80).prop_map(|w| Some(2 * w))],
        layout(),
        prop::sample::select(vec![64usize, 128]),
        any::<u64>(),
    )
        .prop_map(|(lens, (heads, kv_heads), window, layout, block, seed)| LayerCase {
            lens,
            shape: AttentionShape { heads, kv_heads, window },
            layout,
            block,
            seed,
        })
}

fn run_layer(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    f: impl Fn(&[f32], &Batch, &mut [f32], &Threads),
    threads: &Threads,
) -> Vec<f32> {
    let mut ctx = vec![f32::NAN; batch.rows() * shape.heads * HD];
    f(qkv, batch, &mut ctx, threads);
    ctx
}

proptest! {
    #![proptest_config(Config::with_cases(32))]

    /// The layers over padded batches (1–3 sequences up to 300 tokens, an interior padding token,
    /// GQA), with and without an (even) window: bidirectional centred-window self-attention,
    /// bidirectional and causal block-sparse self-attention, each against the f64 reference, and
    /// bit-identical on two threads.
    #[test]
    fn layers_match_the_dense_mask(c in layer_case()) {
        let shape = c.shape;
        let scale = 1.0 / (HD as f32).sqrt();
        let (batch, qkv) = padded_batch(&c.lens, shape.qkv_width(HD), c.seed);
        let sparse = c.layout.sparse(c.block);
        let (b, layout, window) = (c.block, c.layout, shape.window);
        let valid = |s: usize, j: usize| batch.mask_of(s)[j];

        let centred = |qkv: &[f32], batch: &Batch, ctx: &mut [f32], t: &Threads| {
            self_attention_with::<HD>(qkv, batch, shape, None, scale, ctx, t)
        };
        let got = run_layer(&qkv, &batch, shape, centred, &Threads::sequential());
        check_layer(&got, &qkv, &batch, &c.lens, shape, |s, r, j| valid(s, j) && window_sees(false, window, r, j))?;
        prop_assert_eq!(&got, &run_layer(&qkv, &batch, shape, centred, &Threads::new(2).unwrap()));

        for causal in [false, true] {
            let f = |qkv: &[f32], batch: &Batch, ctx: &mut [f32], t: &Threads| {
                if causal {
                    causal_self_attention_sparse::<HD>(qkv, batch, shape, sparse, None, scale, ctx, t)
                } else {
                    self_attention_sparse::<HD>(qkv, batch, shape, sparse, None, scale, ctx, t)
                }
            };
            let got = run_layer(&qkv, &batch, shape, f, &Threads::sequential());
            check_layer(&got, &qkv, &batch, &c.lens, shape, |s, r, j| {
                valid(s, j) && window_sees(causal, window, r, j) && layout_sees(layout, r / b, j / b, causal)
            })?;
            prop_assert_eq!(&got, &run_layer(&qkv, &batch, shape, f, &Threads::new(2).unwrap()));
        }
    }
}

#[test]
#[should_panic(expected = "centred) window must be even")]
fn an_odd_centred_window_is_rejected() {
    let shape = AttentionShape { heads: 2, kv_heads: 2, window: Some(5) };
    let batch = Batch::from_sequences(&[vec![1u32; 5]]).unwrap();
    let qkv = values(5 * shape.qkv_width(HD), 1);
    let mut ctx = vec![0.0; 5 * 2 * HD];
    self_attention_with::<HD>(&qkv, &batch, shape, None, 0.5, &mut ctx, &Threads::sequential());
}

/// Cached block-sparse steps (a prefill, multi-token steps with right padding, single tokens; two
/// sequences at different lengths, so query rows straddle block boundaries) equal the full causal
/// recompute of each whole sequence within 1e-6, for both layouts and with a window.
#[test]
fn cached_sparse_steps_equal_full_recompute() {
    let scale = 1.0 / (HD as f32).sqrt();
    let max_positions = 420;
    let layouts = [
        (Layout::Strided { stride: 2 }, 64, None),
        (Layout::Fixed { stride: 3, summary: 1 }, 64, None),
        (Layout::Fixed { stride: 2, summary: 1 }, 128, Some(150)),
    ];
    for (layout, block, window) in layouts {
        let shape = AttentionShape { heads: 4, kv_heads: 2, window };
        let sparse = layout.sparse(block);
        let stride = shape.qkv_width(HD);
        let totals = [400usize, 333];
        let rows: Vec<Vec<f32>> =
            totals.iter().enumerate().map(|(b, &n)| values(n * stride, 90 + b as u64)).collect();
        // Steps: (new tokens of sequence 0, of sequence 1).
        let steps = [(130usize, 70usize), (1, 1), (67, 2), (1, 64), (200, 195), (1, 1)];
        let mut cache = KvCache::new(1, 2, max_positions, shape.kv_heads * HD);
        let mut done = [0usize; 2];
        let mut outs: [Vec<f32>; 2] = [vec![], vec![]];
        for (n0, n1) in steps {
            let news = [n0, n1];
            let seq = n0.max(n1);
            let mut qkv = vec![f32::NAN; 2 * seq * stride];
            let mut flags = vec![0u32; 2 * seq];
            for b in 0..2 {
                let n = news[b];
                qkv[b * seq * stride..][..n * stride]
                    .copy_from_slice(&rows[b][done[b] * stride..][..n * stride]);
                flags[b * seq..b * seq + n].fill(1);
            }
            let ids = vec![1u32; 2 * seq];
            let view = |data| ArrayView2::from_shape((2, seq), data).unwrap();
            let batch = Batch::from_padded(view(&ids), view(&flags), None).unwrap();
            let mut ctx = vec![f32::NAN; 2 * seq * shape.heads * HD];
            let t = Threads::sequential();
            cached_causal_attention_sparse::<HD>(
                &qkv, &batch, &mut cache, 0, shape, sparse, None, scale, &mut ctx, &t,
            );
            cache.advance_batch(&batch);
            for b in 0..2 {
                let width = shape.heads * HD;
                outs[b].extend_from_slice(&ctx[b * seq * width..][..news[b] * width]);
                done[b] += news[b];
            }
        }
        for b in 0..2 {
            assert_eq!(done[b], totals[b]);
            let batch = Batch::from_sequences(&[vec![1u32; totals[b]]]).unwrap();
            let mut full = vec![f32::NAN; totals[b] * shape.heads * HD];
            let t = Threads::sequential();
            causal_self_attention_sparse::<HD>(&rows[b], &batch, shape, sparse, None, scale, &mut full, &t);
            for (i, (&x, &y)) in outs[b].iter().zip(&full).enumerate() {
                assert!((x - y).abs() <= 1e-6, "{layout:?} b {block} seq {b} [{i}]: cached {x} vs full {y}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Skipped tiles
// ------------------------------------------------------------------------------------------------

/// Scores the kernel computes for `q_rows` rows from `q_pos0` (a multiple of [`Q_BLOCK`], so its
/// blocks of query rows never straddle two query blocks of a layout) when it visits exactly the
/// keys some row of each block of `Q_BLOCK` rows sees: `Σ_blocks rows · |⋃_rows visible(row)|`,
/// per head.
fn predicted_scores(
    heads: usize,
    q_pos0: usize,
    q_rows: usize,
    keys: usize,
    sees: impl Fn(usize, usize) -> bool,
) -> u64 {
    let mut total = 0;
    for r0 in (0..q_rows).step_by(Q_BLOCK) {
        let rows = q_pos0 + r0..q_pos0 + (r0 + Q_BLOCK).min(q_rows);
        let union = (0..keys).filter(|&j| rows.clone().any(|p| sees(p, j))).count();
        total += (rows.len() * union) as u64;
    }
    total * heads as u64
}

/// Runs `f` and returns the scores it computed on this thread.
fn scores_of(f: impl FnOnce()) -> u64 {
    let before = scores_computed();
    f();
    scores_computed() - before
}

/// The score counter equals the layout's prediction, on every instruction set, for both layouts,
/// both directions, blocks of one and two key tiles, with a length that is no multiple of a
/// block and padding inside, and is below dense attention's. Would fail if the kernel scored
/// blocks outside the layout and only masked them.
#[test]
fn block_sparse_visits_only_the_layout() {
    let (heads, kv_heads, s) = (2usize, 1usize, 1000usize);
    let key_valid: Vec<bool> = (0..s).map(|j| j % 37 != 5).collect();
    let (q, k, v) = (values(s * heads * HD, 11), values(s * HD, 12), values(s * HD, 13));
    let view = |data, width| HeadRows { data, stride: width, offset: 0, rows: s };
    for (layout, block) in [
        (Layout::Strided { stride: 3 }, 64),
        (Layout::Fixed { stride: 4, summary: 1 }, 64),
        (Layout::Strided { stride: 2 }, 128),
        (Layout::Fixed { stride: 2, summary: 1 }, 128),
    ] {
        for causal in [true, false] {
            let vis = Visibility {
                key_valid: Some(key_valid.clone()),
                causal,
                window: None,
                layout: Some((layout, block)),
            };
            let want = predicted_scores(heads, 0, s, s, |p, j| vis.sees(p, j));
            let dense = predicted_scores(heads, 0, s, s, |p, j| key_valid[j] && (!causal || j <= p));
            for isa in AttentionIsa::supported() {
                let mut out = vec![0.0; s * heads * HD];
                let got = scores_of(|| {
                    let (q, k, v) = (view(&q, heads * HD), view(&k, HD), view(&v, HD));
                    attention_on::<HD>(
                        isa,
                        q,
                        k,
                        v,
                        heads,
                        kv_heads,
                        0,
                        vis.mask(),
                        vis.sparse(),
                        0.3,
                        &mut out,
                    );
                });
                assert_eq!(got, want, "{layout:?} b {block} causal {causal} {isa:?}");
            }
            assert!(want < dense, "{layout:?} b {block} causal {causal}: {want} scores vs dense {dense}");
        }
    }
}

/// With the paper's stride `ℓ ≈ √(S / b)` (in blocks) the strided layout is sub-quadratic: from
/// S = 1024 (ℓ = 4) to S = 4096 (ℓ = 8) its counted scores grow 9.1 times (4^1.5 = 8 plus the
/// band's share at small S), where dense causal attention's grow 16 times; each count is exactly the
/// layout's prediction.
#[test]
fn strided_layout_with_root_stride_is_sub_quadratic() {
    let (heads, block) = (1usize, 64usize);
    let count = |s: usize, stride: usize| {
        let layout = Layout::Strided { stride };
        let vis = Visibility { key_valid: None, causal: true, window: None, layout: Some((layout, block)) };
        let (q, k, v) = (values(s * HD, 21), values(s * HD, 22), values(s * HD, 23));
        let view = |data| HeadRows { data, stride: HD, offset: 0, rows: s };
        let mut out = vec![0.0; s * HD];
        let got = scores_of(|| {
            let mask = vis.mask();
            attention_block_sparse::<HD>(
                view(&q),
                view(&k),
                view(&v),
                heads,
                heads,
                0,
                mask,
                layout.sparse(block),
                0.3,
                &mut out,
            )
        });
        assert_eq!(got, predicted_scores(heads, 0, s, s, |p, j| vis.sees(p, j)), "S {s}");
        got as f64
    };
    let growth = count(4096, 8) / count(1024, 4);
    assert!(growth < 10.0, "strided scores grew {growth:.2}× from S = 1024 to 4096");
}

/// The layers count the same: a causal fixed layout over 2048 tokens scores each block's group and
/// the earlier summary blocks only; a decode step at position 3000 against the cache scores exactly
/// the keys its query block attends.
#[test]
fn sparse_layers_and_decode_steps_visit_only_the_layout() {
    let (heads, s, block) = (2usize, 2048usize, 64usize);
    let layout = Layout::Fixed { stride: 4, summary: 1 };
    let sparse = layout.sparse(block);
    let shape = AttentionShape { heads, kv_heads: 1, window: None };
    let stride = shape.qkv_width(HD);
    let t = Threads::sequential();
    let batch = Batch::from_sequences(&[vec![1u32; s]]).unwrap();
    let qkv = values(s * stride, 3);
    let mut ctx = vec![0.0; s * heads * HD];
    let got = scores_of(|| {
        causal_self_attention_sparse::<HD>(&qkv, &batch, shape, sparse, None, 0.3, &mut ctx, &t)
    });
    let sees = |p: usize, j: usize| j <= p && layout_sees(layout, p / block, j / block, true);
    assert_eq!(got, predicted_scores(heads, 0, s, s, sees));
    // Dense causal is about s²/2 per head; this layout about s·(2.5 + s/(4·64)/2)·64.
    assert!(got < (heads * s * s / 4) as u64, "{got} scores");

    let (len, max) = (3000usize, 3100usize);
    let mut cache = KvCache::new(1, 1, max, HD);
    let prefill = Batch::from_sequences(&[vec![1u32; len]]).unwrap();
    let qkv = values(len * stride, 4);
    let mut ctx = vec![0.0; len * heads * HD];
    cached_causal_attention_sparse::<HD>(
        &qkv, &prefill, &mut cache, 0, shape, sparse, None, 0.3, &mut ctx, &t,
    );
    cache.advance_batch(&prefill);
    let step = Batch::from_sequences(&[vec![1u32]]).unwrap();
    let qkv = values(stride, 5);
    let mut ctx = vec![0.0; heads * HD];
    let got = scores_of(|| {
        cached_causal_attention_sparse::<HD>(
            &qkv, &step, &mut cache, 0, shape, sparse, None, 0.3, &mut ctx, &t,
        )
    });
    let want = (0..=len).filter(|&j| sees(len, j)).count() * heads;
    assert_eq!(got, want as u64, "a decode step scanned blocks outside its layout");
}

/// A centred window skips the tiles outside it on both sides: exactly the prediction, within
/// `rows · (w + Q_BLOCK)` per head (a block of Q_BLOCK queries spans w + Q_BLOCK keys), where bidirectional
/// attention computes rows². Would fail if only the lower side were skipped.
#[test]
fn centred_window_skips_tiles_on_both_sides() {
    let (heads, s, w) = (2usize, 1500usize, 100usize);
    let shape = AttentionShape { heads, kv_heads: 1, window: Some(w) };
    let batch = Batch::from_sequences(&[vec![1u32; s]]).unwrap();
    let qkv = values(s * shape.qkv_width(HD), 6);
    let mut ctx = vec![0.0; s * heads * HD];
    let t = Threads::sequential();
    let got = scores_of(|| self_attention_with::<HD>(&qkv, &batch, shape, None, 0.3, &mut ctx, &t));
    assert_eq!(got, predicted_scores(heads, 0, s, s, |p, j| window_sees(false, Some(w), p, j)));
    assert!(got <= (heads * s * (w + Q_BLOCK)) as u64, "{got} scores");
    let full = AttentionShape { window: None, ..shape };
    let dense = scores_of(|| self_attention_with::<HD>(&qkv, &batch, full, None, 0.3, &mut ctx, &t));
    assert_eq!(dense, (heads * s * s) as u64);
}
