//! Multi-head scaled-dot-product attention with a streaming ("online") softmax.
//!
//! The kernel fuses `QKᵀ·scale`, the key mask, the softmax and the product with `V` into one pass
//! over the keys, FlashAttention-style: keys are visited in fixed-size tiles, each query keeps a
//! running maximum `m`, a running normaliser `l` and an unnormalised accumulator `acc[HD]`, and the
//! accumulator is rescaled by `exp(m_old − m_new)` whenever the maximum grows. No `seq×seq` score
//! matrix is materialised and nothing is heap-allocated; all scratch is fixed-size stack arrays,
//! so the working set per call is fixed (tens of KiB: a packed key tile, a block of queries, scores
//! and outputs) regardless of sequence length.
//!
//! The work is two small matrix products per (block of query rows × key tile), FlashAttention-2's
//! loop order: up to [`Q_BLOCK`] query rows of one head against a tile of [`KEY_TILE`] keys. The
//! tile's keys are packed once per block (transposed into `[HD][KEY_TILE]`, values compacted into
//! `[KEY_TILE][HD]`), so packing costs `1/Q_BLOCK` of the arithmetic; then `S = Q·Kᵀ` and
//! `O += P·V` run as register-blocked microkernels (an `R × W` block of accumulators held for the
//! whole reduction, `R` and `W` per instruction set), with the mask, the bias and the softmax update
//! applied to `S` while it is in L1 in between. Masked keys are compacted out of each tile before
//! any arithmetic, so padding costs nothing beyond reading its flag.
//!
//! Q, K and V are separate strided views ([`HeadRows`]), so the same kernel reads an encoder's
//! fused `[Q | K | V]` rows and a decoder's key/value cache alike; the mask ([`Mask`]) combines a
//! key-validity (padding) flag per key with an optional causal limit. Under a causal mask the key
//! tiles past the last query of a block are never visited, and inside the diagonal tile each query
//! row sees only the prefix of the (ascending) compacted key list at or before its own position.
//! A sliding window ([`Mask::window`]) bounds the keys from below as well: a block's key tiles start
//! at its first query's lowest visible key, so tiles wholly before the window are never visited
//! and a windowed causal pass costs O(S·window) rather than O(S²); inside a tile each row sees a
//! contiguous range of the compacted keys. Without the causal limit the window is centred
//! (Longformer's local attention, [`Window::Centred`]) and bounds the keys from above too: a block's
//! tiles end at its last query's highest visible key, so tiles wholly outside the window on either
//! side are never visited and a centred pass also costs O(S·window).
//! A block-sparse layout ([`BlockSparse`], the Sparse Transformer's strided and fixed patterns;
//! [`attention_block_sparse`]) restricts the tiles further to the key blocks the query block
//! attends: the tile loop steps from one visible key block to the next, so blocks outside the
//! layout cost nothing.
//! With `kv_heads < heads`, consecutive groups of query heads share one key/value head
//! (grouped-query attention).
//! An optional additive position bias ([`PositionBias`], T5's relative buckets or ALiBi) is added
//! to each score after the scale and before the running max; it is looked up per (head, key − query
//! offset) in a table, so it costs one load and add per score and nothing when absent (the branch
//! is taken once per key tile).
//!
//! Each score is one multiply-add chain over `d = 0..HD` in order, and each output one chain over
//! the tile's keys in order, whichever rows share its register block: without a window, a row's
//! result does not depend on how rows are split into blocks (or across threads); under a window the
//! tiles start at each block's first window, so the online softmax's steps (not its value) depend
//! on the block. A row's keys outside its own range
//! (the causal limit or a window inside the tile) enter the `P·V` product of a block with weight
//! exactly 0, which leaves the sum unchanged for finite values.
//!
//! The two microkernels are written once, generic over an `Isa` marker, and instantiated for a
//! portable baseline and (on x86_64) inside `avx2,fma` and `avx512f,avx2,fma` `#[target_feature]`
//! shims chosen at runtime.

#[cfg(target_arch = "x86_64")]
use super::gemm::lanes::x86::{Avx2 as Avx2Lanes, Avx512 as Avx512Lanes};
use super::gemm::lanes::Lanes;
use super::{exp_f32, exp_with, lane_sum, LANES};

pub use super::sparse::{BlockSize, BlockSizeError, BlockSparse, SparsePattern};

/// Keys per tile: the compacted score row (`Q_BLOCK × KEY_TILE` floats) stays small enough to
/// live in registers/L1 next to the accumulators. A block-sparse layout's block is a multiple of
/// it ([`BlockSize`]).
pub(crate) const KEY_TILE: usize = 64;
/// Query rows that share each packed key tile (a multiple of every microkernel's row block, and
/// at most [`KEY_TILE`], so a block of rows spans at most two blocks of a sparse layout). Public
/// for the tests that predict the work of a masked call ([`scores_computed`]).
#[doc(hidden)]
pub const Q_BLOCK: usize = 32;

/// Rows of one operand: row `r`, head `h` is `data[r * stride + offset + h * HD..][..HD]`.
#[derive(Clone, Copy, Debug)]
pub struct HeadRows<'a> {
    pub data: &'a [f32],
    /// Floats from one row to the next.
    pub stride: usize,
    /// Where row 0, head 0 starts.
    pub offset: usize,
    /// Number of rows.
    pub rows: usize,
}

/// A per-head additive bias on the attention scores that depends only on the offset key − query:
/// score(h, p, j) = q·k·scale + table[h * span + center + j − p].
///
/// One table serves every query position because the bias of T5's relative buckets and of ALiBi
/// depends on `j − p` only; building it once at load keeps the hot loop a plain load and add (no
/// bucket logarithm per score). Head `h`'s row covers the offsets `−center..span − center`. The
/// kernel asserts that the table covers every (query, key) pair of a call (see
/// [`attention_general`]).
#[derive(Clone, Copy, Debug)]
pub struct PositionBias<'a> {
    /// `heads` rows of `span` floats; entry `center + d` of row `h` is head `h`'s bias at offset `d`.
    pub table: &'a [f32],
    /// Offsets per head.
    pub span: usize,
    /// Index of offset 0 within a head's row.
    pub center: usize,
}

impl PositionBias<'_> {
    /// The bias of head `head` for the query at `query_pos` and the key at `key_pos`:
    /// `table[head * span + center + key_pos − query_pos]`. Panics if that lies outside the table.
    #[inline]
    pub fn at(&self, head: usize, query_pos: usize, key_pos: usize) -> f32 {
        let at =
            (self.center + key_pos).checked_sub(query_pos).filter(|&i| i < self.span).unwrap_or_else(|| {
                panic!(
                    "position bias: offset {key_pos} − {query_pos} outside the table (span {}, center {})",
                    self.span, self.center
                )
            });
        self.table[head * self.span + at]
    }
}

/// Which keys a query sees: key `j` is visible to the query at position `p` iff `key_valid[j]`
/// (when given), if `causal` `j <= p`, and under `window = Some(w)` `j` lies in the window, whose
/// kind follows from `causal` ([`Mask::window_kind`]):
///
/// - causal: a trailing window, `p − w < j` ([`Window::Trailing`]). With the causal limit this is
///   the sliding window of Mistral and transformers (`sliding_window_causal_mask_function`:
///   `kv_idx > q_idx - sliding_window` and `kv_idx <= q_idx`): each query sees itself and the
///   `w − 1` keys before it. `Some(0)` sees no key (outputs are zeros).
/// - bidirectional: a centred window, `|j − p| ≤ ⌊w / 2⌋` ([`Window::Centred`]): Longformer's local
///   attention with `attention_window = w` (even), `w / 2` keys on either side and the query
///   itself. `Some(0)` sees only the query's own position; an odd `w` acts as `w − 1` (the layers
///   accept even windows only, as Longformer does).
///
/// The kind is not a separate switch because the other two combinations add nothing: a centred
/// window under the causal limit is the trailing window `w / 2 + 1`, and a trailing bound without
/// the causal limit is no model's mask.
#[derive(Clone, Copy, Debug)]
pub struct Mask<'a> {
    /// One flag per key; `None` means every key is valid.
    pub key_valid: Option<&'a [bool]>,
    pub causal: bool,
    /// Sliding window of `w` positions, trailing when `causal`, centred otherwise. `None`: every
    /// key the other conditions allow.
    pub window: Option<usize>,
    /// Additive bias on the scores of the visible keys (T5 relative buckets, ALiBi). It does not
    /// change which keys are visible.
    pub bias: Option<PositionBias<'a>>,
}

/// The sliding window of a [`Mask`], with its kind made explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// Causal (Mistral): the query at `p` sees `p − w < j ≤ p`.
    Trailing(usize),
    /// Bidirectional (Longformer): the query at `p` sees `|j − p| ≤ ⌊w / 2⌋`.
    Centred(usize),
}

impl Mask<'_> {
    /// Whether the query at `pos` sees key `j` (all three conditions).
    #[inline]
    pub fn sees(&self, pos: usize, j: usize) -> bool {
        self.key_valid.is_none_or(|valid| valid[j]) && (!self.causal || j <= pos) && self.in_window(pos, j)
    }

    /// The window and its kind: trailing under the causal limit, centred otherwise.
    #[inline]
    pub fn window_kind(&self) -> Option<Window> {
        self.window.map(|w| if self.causal { Window::Trailing(w) } else { Window::Centred(w) })
    }

    /// Whether key `j` is inside the query at `pos`'s window (without underflow).
    #[inline]
    fn in_window(&self, pos: usize, j: usize) -> bool {
        match self.window_kind() {
            None => true,
            Some(Window::Trailing(w)) => j > pos || pos - j < w,
            Some(Window::Centred(w)) => pos.abs_diff(j) <= w / 2,
        }
    }

    /// The first key the query at `pos` may see under the window: `pos + 1 − w` (trailing) or
    /// `pos − w / 2` (centred), saturating at 0.
    #[inline]
    fn window_start(&self, pos: usize) -> usize {
        match self.window_kind() {
            None => 0,
            Some(Window::Trailing(w)) => (pos + 1).saturating_sub(w),
            Some(Window::Centred(w)) => pos.saturating_sub(w / 2),
        }
    }

    /// One past the last key the query at `pos` may see: `pos + 1` under the causal limit,
    /// `pos + w / 2 + 1` under a centred window, unbounded (`usize::MAX`) otherwise.
    #[inline]
    fn row_end(&self, pos: usize) -> usize {
        match self.window_kind() {
            _ if self.causal => pos + 1,
            Some(Window::Centred(w)) => pos.saturating_add(w / 2).saturating_add(1),
            _ => usize::MAX,
        }
    }
}

thread_local! {
    /// Query-key scores computed by the tiled kernel on this thread (see [`scores_computed`]).
    static SCORES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Number of query·key scores (dot products) the tiled kernel ([`attention_general`] and its
/// scalar twin) has computed on the calling thread since it started: a work counter for tests that
/// check which tiles are skipped (a sliding window must not visit keys far outside it). One
/// thread-local add per (head, block of query rows); the naive twin does not count.
#[doc(hidden)]
pub fn scores_computed() -> u64 {
    SCORES.with(|c| c.get())
}

/// Multi-head scaled-dot-product attention over separate Q, K and V views, with an online
/// (streaming) softmax over key tiles: no score matrix is materialised and nothing is allocated.
///
/// `out` receives `q.rows` rows of `heads * HD` floats (heads concatenated); query row `r` sits at
/// position `q_pos0 + r`, keys are the `k.rows` (= `v.rows`) positions `0..`. `kv_heads` divides
/// `heads`, and query head `h` uses key/value head `h / (heads / kv_heads)`; K and V rows are
/// `kv_heads * HD` wide. `scale` is usually `1/sqrt(HD)`. A query row that sees no key gets an
/// output row of zeros (never NaN). With `mask.bias`, the score of head `h`, query position `p`,
/// key `j` is `q·k·scale + bias.at(h, p, j)`; the table must cover every pair of the call:
/// `heads·span ≤ table.len()`, `center ≥ q_pos0 + q.rows − 1` and
/// `center + k.rows − 1 − q_pos0 < span`. Panics on inconsistent shapes or a bias table that does
/// not cover the call (caller bugs).
pub fn attention_general<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    scale: f32,
    out: &mut [f32],
) {
    attention_masked::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, None, scale, out);
}

/// [`attention_general`] under a block-sparse layout: the query at position `p` sees key `j` iff
/// `sparse.sees(&mask, p, j)`, i.e. `mask.sees(p, j)` and `sparse.block_sees(p / b, j / b,
/// mask.causal)` (the predicates are on [`SparsePattern`]). Only the key tiles inside key blocks
/// visible to some row of the current block of query rows are loaded and scored, so the work is
/// the layout's visible blocks (see [`scores_computed`]). A window and a bias in `mask` combine
/// with the layout as they do without it.
pub fn attention_block_sparse<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: BlockSparse,
    scale: f32,
    out: &mut [f32],
) {
    attention_masked::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, Some(sparse), scale, out);
}

/// [`attention_general`] (`sparse: None`) or [`attention_block_sparse`] on the best instruction
/// set this CPU has.
pub(crate) fn attention_masked<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: Option<BlockSparse>,
    scale: f32,
    out: &mut [f32],
) {
    check_general::<HD>(&q, &k, &v, heads, kv_heads, q_pos0, &mask, out);
    #[cfg(target_arch = "x86_64")]
    if Avx512::detected() {
        // SAFETY: `attention_avx512` only requires the `avx512f`, `avx2` and `fma` target
        // features, and `Avx512::detected()` has just confirmed at runtime that this CPU has them.
        unsafe { attention_avx512::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if Avx2Fma::detected() {
        // SAFETY: `attention_avx2_fma` only requires the `avx2` and `fma` target features, and
        // `Avx2Fma::detected()` has just confirmed at runtime that this CPU has both.
        unsafe { attention_avx2_fma::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out) };
        return;
    }
    attention_body::<HD, Portable>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out);
}

/// Scalar twin of [`attention_general`]: the same tiled algorithm compiled for the baseline target
/// only (no runtime-selected SIMD). Tests compare it with the dispatched version.
#[doc(hidden)]
pub fn attention_general_scalar<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    scale: f32,
    out: &mut [f32],
) {
    attention_on::<HD>(AttentionIsa::Portable, q, k, v, heads, kv_heads, q_pos0, mask, None, scale, out);
}

/// The instruction sets the tiled kernel is compiled for (for tests and benches that run each).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionIsa {
    /// The baseline target: the scalar twin.
    Portable,
    Avx2Fma,
    Avx512,
}

impl AttentionIsa {
    /// Every instruction set this CPU runs, the portable baseline first.
    pub fn supported() -> Vec<Self> {
        [Self::Portable, Self::Avx2Fma, Self::Avx512].into_iter().filter(|isa| isa.available()).collect()
    }

    /// Whether this CPU runs `self`.
    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => Avx2Fma::detected(),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => Avx512::detected(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2Fma | Self::Avx512 => false,
        }
    }
}

/// The tiled kernel ([`attention_general`] when `sparse` is `None`, [`attention_block_sparse`]
/// otherwise) on the instruction set `isa` rather than the best one: how tests compare every SIMD
/// path this CPU has with the portable (scalar) twin. Panics if the CPU lacks `isa`.
#[doc(hidden)]
pub fn attention_on<const HD: usize>(
    isa: AttentionIsa,
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: Option<BlockSparse>,
    scale: f32,
    out: &mut [f32],
) {
    check_general::<HD>(&q, &k, &v, heads, kv_heads, q_pos0, &mask, out);
    assert!(isa.available(), "attention: this CPU does not support {isa:?}");
    match isa {
        AttentionIsa::Portable => {
            attention_body::<HD, Portable>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out)
        }
        #[cfg(target_arch = "x86_64")]
        AttentionIsa::Avx2Fma => {
            // SAFETY: `attention_avx2_fma` only requires the `avx2` and `fma` target features, and
            // the assertion above (`isa.available()`, i.e. `Avx2Fma::detected()`) has just
            // confirmed at runtime that this CPU has both.
            unsafe { attention_avx2_fma::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out) }
        }
        #[cfg(target_arch = "x86_64")]
        AttentionIsa::Avx512 => {
            // SAFETY: `attention_avx512` only requires the `avx512f`, `avx2` and `fma` target
            // features, and the assertion above (`isa.available()`, i.e. `Avx512::detected()`) has
            // just confirmed at runtime that this CPU has them.
            unsafe { attention_avx512::<HD>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        AttentionIsa::Avx2Fma | AttentionIsa::Avx512 => {
            unreachable!("only the portable set is supported here")
        }
    }
}

/// Reference twin of [`attention_general`]: materialises each query's score row over its visible
/// keys, subtracts the max, exponentiates and normalises. Allocates; for tests only.
#[doc(hidden)]
pub fn attention_general_naive<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    scale: f32,
    out: &mut [f32],
) {
    check_general::<HD>(&q, &k, &v, heads, kv_heads, q_pos0, &mask, out);
    naive_body::<HD>(q, k, v, heads, kv_heads, q_pos0, &mask, |p, j| mask.sees(p, j), scale, out);
}

/// Reference twin of [`attention_block_sparse`]: [`attention_general_naive`] over the keys that
/// `sparse.sees(&mask, p, j)` (a dense mask built from the block predicate, key by key).
#[doc(hidden)]
pub fn attention_block_sparse_naive<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: BlockSparse,
    scale: f32,
    out: &mut [f32],
) {
    check_general::<HD>(&q, &k, &v, heads, kv_heads, q_pos0, &mask, out);
    naive_body::<HD>(q, k, v, heads, kv_heads, q_pos0, &mask, |p, j| sparse.sees(&mask, p, j), scale, out);
}

/// The naive twins' body: each query's score row over the keys `sees(p, j)` admits.
fn naive_body<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: &Mask<'_>,
    sees: impl Fn(usize, usize) -> bool,
    scale: f32,
    out: &mut [f32],
) {
    let width = heads * HD;
    let group = heads / kv_heads;
    let mut scores = Vec::with_capacity(k.rows);
    for r in 0..q.rows {
        let pos = q_pos0 + r;
        let visible: Vec<usize> = (0..k.rows).filter(|&j| sees(pos, j)).collect();
        for h in 0..heads {
            let kvh = h / group;
            let qv = &q.data[r * q.stride + q.offset + h * HD..][..HD];
            let dst = &mut out[r * width + h * HD..][..HD];
            dst.fill(0.0);
            if visible.is_empty() {
                continue;
            }
            scores.clear();
            for &j in &visible {
                let kv = &k.data[j * k.stride + k.offset + kvh * HD..][..HD];
                let bias = mask.bias.map_or(0.0, |b| b.at(h, pos, j));
                scores.push(qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale + bias);
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (&p, &j) in scores.iter().zip(&visible) {
                let vv = &v.data[j * v.stride + v.offset + kvh * HD..][..HD];
                for (o, &x) in dst.iter_mut().zip(vv) {
                    *o += p * x;
                }
            }
            for o in dst.iter_mut() {
                *o /= sum;
            }
        }
    }
}

/// Multi-head scaled-dot-product attention for a block of query rows of ONE sequence whose
/// projections are fused: a thin wrapper over [`attention_general`] with bidirectional masking.
///
/// `qkv`: the whole sequence's fused projections, `seq` rows, each row `3 * heads * HD` floats laid
///   out as [Q (heads×HD) | K (heads×HD) | V (heads×HD)], head h at offset h*HD inside each part.
/// `key_valid`: `seq` flags; a key with `false` is masked out (padding).
/// `q_start`: index of the first query row handled; `out` holds `rows` = out.len() / (heads*HD)
///   output rows (q_start..q_start+rows), each `heads*HD` wide, heads concatenated as in the input.
/// `scale`: usually 1/sqrt(HD).
/// A query row whose keys are all masked gets an output row of zeros (never NaN).
/// Panics on inconsistent lengths.
pub fn attention<const HD: usize>(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    key_valid: &[bool],
    q_start: usize,
    scale: f32,
    out: &mut [f32],
) {
    let rows = check_shapes::<HD>(qkv, seq, heads, key_valid, q_start, out);
    let (q, k, v, mask) = fused_views::<HD>(qkv, seq, heads, key_valid, q_start, rows);
    attention_general::<HD>(q, k, v, heads, heads, q_start, mask, scale, out);
}

/// Scalar twin of [`attention`]: the same tiled online-softmax algorithm compiled for the baseline
/// target only (no runtime-selected SIMD). Tests compare it with the dispatched version.
#[doc(hidden)]
pub fn attention_scalar<const HD: usize>(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    key_valid: &[bool],
    q_start: usize,
    scale: f32,
    out: &mut [f32],
) {
    let rows = check_shapes::<HD>(qkv, seq, heads, key_valid, q_start, out);
    let (q, k, v, mask) = fused_views::<HD>(qkv, seq, heads, key_valid, q_start, rows);
    attention_general_scalar::<HD>(q, k, v, heads, heads, q_start, mask, scale, out);
}

/// Name of the instruction set [`attention`] dispatches to on this CPU (for tests and benches).
#[doc(hidden)]
pub fn attention_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if Avx512::detected() {
        return "avx512f";
    }
    #[cfg(target_arch = "x86_64")]
    if Avx2Fma::detected() {
        return "avx2+fma";
    }
    "portable"
}

/// Reference twin of [`attention`]: materialises each query's full score row, subtracts the max,
/// exponentiates and normalises. Allocates; for tests only.
#[doc(hidden)]
pub fn attention_naive<const HD: usize>(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    key_valid: &[bool],
    q_start: usize,
    scale: f32,
    out: &mut [f32],
) {
    let rows = check_shapes::<HD>(qkv, seq, heads, key_valid, q_start, out);
    let (q, k, v, mask) = fused_views::<HD>(qkv, seq, heads, key_valid, q_start, rows);
    attention_general_naive::<HD>(q, k, v, heads, heads, q_start, mask, scale, out);
}

/// The Q, K and V views of fused `[Q | K | V]` rows, queries starting at row `q_start`.
type FusedViews<'a> = (HeadRows<'a>, HeadRows<'a>, HeadRows<'a>, Mask<'a>);

fn fused_views<'a, const HD: usize>(
    qkv: &'a [f32],
    seq: usize,
    heads: usize,
    key_valid: &'a [bool],
    q_start: usize,
    rows: usize,
) -> FusedViews<'a> {
    let width = heads * HD;
    let stride = 3 * width;
    let view = |offset, rows| HeadRows { data: qkv, stride, offset, rows };
    (
        view(q_start * stride, rows),
        view(width, seq),
        view(2 * width, seq),
        Mask { key_valid: Some(key_valid), causal: false, window: None, bias: None },
    )
}

/// Validates the contract of [`attention_general`].
fn check_general<const HD: usize>(
    q: &HeadRows<'_>,
    k: &HeadRows<'_>,
    v: &HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: &Mask<'_>,
    out: &[f32],
) {
    assert!(HD > 0, "attention: head dimension HD must be positive");
    assert!(heads > 0, "attention: heads must be positive");
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "attention: kv_heads = {kv_heads} does not divide heads = {heads}"
    );
    let width = heads.checked_mul(HD).expect("attention: heads × HD overflows usize");
    let kv_width = kv_heads * HD;
    let out_len = q.rows.checked_mul(width).expect("attention: rows × heads·HD overflows usize");
    assert_eq!(
        out.len(),
        out_len,
        "attention: out has {} floats, expected q.rows × heads·HD = {} × {heads}·{HD}",
        out.len(),
        q.rows
    );
    assert_eq!(k.rows, v.rows, "attention: {} key rows but {} value rows", k.rows, v.rows);
    check_rows("q", q, width);
    check_rows("k", k, kv_width);
    check_rows("v", v, kv_width);
    assert!(q_pos0.checked_add(q.rows).is_some(), "attention: query positions overflow usize");
    if let Some(valid) = mask.key_valid {
        assert_eq!(
            valid.len(),
            k.rows,
            "attention: key_valid has {} flags but there are {} keys",
            valid.len(),
            k.rows
        );
    }
    if let Some(bias) = &mask.bias {
        check_bias(bias, heads, q_pos0, q.rows, k.rows);
    }
}

/// The bias table covers every (query, key) pair of a call: `heads` rows of `span`, the last query
/// position at or before `center` (so `center + j − p` does not underflow) and the largest offset,
/// last key − first query, inside the row. With no query or no key nothing is read.
fn check_bias(bias: &PositionBias<'_>, heads: usize, q_pos0: usize, q_rows: usize, k_rows: usize) {
    let PositionBias { table, span, center } = *bias;
    let needed = heads.checked_mul(span).expect("attention: heads × bias span overflows usize");
    assert!(
        needed <= table.len(),
        "attention: position bias table has {} floats, fewer than heads × span = {heads} × {span}",
        table.len()
    );
    if q_rows == 0 || k_rows == 0 {
        return;
    }
    let last_query = q_pos0 + q_rows - 1;
    assert!(
        center >= last_query,
        "attention: position bias center {center} is before the last query position {last_query} \
         (the table does not reach offset −{last_query})"
    );
    let last_offset = center.checked_add(k_rows - 1).and_then(|x| x.checked_sub(q_pos0));
    assert!(
        last_offset.is_some_and(|i| i < span),
        "attention: position bias table (span {span}, center {center}) does not reach offset {} \
         (key {} − query position {q_pos0})",
        (k_rows - 1) as i128 - q_pos0 as i128,
        k_rows - 1
    );
}

/// Every row of `rows` (each `width` floats from its start) lies inside `rows.data`.
pub(crate) fn check_rows(what: &str, rows: &HeadRows<'_>, width: usize) {
    if rows.rows == 0 {
        return;
    }
    let end = (rows.rows - 1)
        .checked_mul(rows.stride)
        .and_then(|x| x.checked_add(rows.offset))
        .and_then(|x| x.checked_add(width))
        .unwrap_or_else(|| panic!("attention: {what} rows overflow usize"));
    assert!(
        end <= rows.data.len(),
        "attention: {what} has {} rows of stride {} from offset {} (width {width}), needing {end} floats, \
         but its buffer has {}",
        rows.rows,
        rows.stride,
        rows.offset,
        rows.data.len()
    );
}

/// Validates the layout contract and returns the number of output rows.
fn check_shapes<const HD: usize>(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    key_valid: &[bool],
    q_start: usize,
    out: &[f32],
) -> usize {
    assert!(HD > 0, "attention: head dimension HD must be positive");
    assert!(heads > 0, "attention: heads must be positive");
    let width = heads.checked_mul(HD).expect("attention: heads × HD overflows usize");
    let qkv_len = seq.checked_mul(3 * width).expect("attention: seq × 3·heads·HD overflows usize");
    assert_eq!(
        qkv.len(),
        qkv_len,
        "attention: qkv has {} floats, expected seq × 3·heads·HD = {seq} × 3·{heads}·{HD}",
        qkv.len()
    );
    assert_eq!(key_valid.len(), seq, "attention: key_valid has {} flags but seq = {seq}", key_valid.len());
    assert!(
        out.len().is_multiple_of(width),
        "attention: out has {} floats, not a multiple of heads·HD = {width}",
        out.len()
    );
    let rows = out.len() / width;
    assert!(
        q_start <= seq && rows <= seq - q_start,
        "attention: query rows {q_start}..{} exceed seq = {seq}",
        q_start + rows
    );
    rows
}

/// The hot inner loops, specialised per instruction set: the two small matrix products of a
/// (query block × key tile) step, `S = Q·Kᵀ` and `O += P·V`.
///
/// Implementations are zero-sized markers whose methods are `#[inline(always)]`, so they are
/// compiled inside whichever `#[target_feature]` function instantiates [`attention_body`] and pick
/// up that function's instruction set. Each chooses its own register block (rows × columns held in
/// accumulators for the whole reduction) but every shape computes each output as the same chain of
/// multiply-adds in the same order, so a row's result does not depend on which rows share its block.
trait Isa {
    /// `p[i][j] = Σ_d qs[i][d] · kt[d][j]` for rows `i < nq` and at least the first `nk` keys (up
    /// to a whole number of column blocks; columns past `nk` are scratch). Each score is one
    /// multiply-add chain over `d` in order.
    fn scores<const HD: usize>(
        qs: &[[f32; HD]; Q_BLOCK],
        nq: usize,
        kt: &[[f32; KEY_TILE]; HD],
        nk: usize,
        p: &mut [[f32; KEY_TILE]; Q_BLOCK],
    );
    /// `acc[i] += Σ_{jj ∈ span[g]} p[i][jj] · vt[jj]` for rows `i < nq`, where `g` is the row's
    /// group of the implementation's register block and `span[g]` covers every key any row of the
    /// group sees (the others have `p = 0` there). One multiply-add chain per output over `jj`
    /// ascending.
    fn weighted_sum<const HD: usize>(
        p: &[[f32; KEY_TILE]; Q_BLOCK],
        nq: usize,
        first: &[usize; Q_BLOCK],
        visible: &[usize; Q_BLOCK],
        vt: &[[f32; HD]; KEY_TILE],
        acc: &mut [[f32; HD]; Q_BLOCK],
    );
    /// `a·b + c`: fused where the instruction set has FMA, a multiply then an add on the baseline
    /// (where `f32::mul_add` would be a libm call). The softmax's exponential is built on it.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
    /// `kt[d][jj] = k.data[keys[jj] * k.stride + k_off + d]` for at least `jj < nk` (whole groups
    /// of 8 may also fill columns up to `nk` rounded up, from the stale indices in `keys`).
    #[inline(always)]
    fn transpose<const HD: usize>(
        k: &HeadRows<'_>,
        k_off: usize,
        keys: &[usize; KEY_TILE],
        nk: usize,
        kt: &mut [[f32; KEY_TILE]; HD],
    ) {
        transpose_scalar::<HD>(k, k_off, keys, nk, kt);
    }
}

#[inline(always)]
fn transpose_scalar<const HD: usize>(
    k: &HeadRows<'_>,
    k_off: usize,
    keys: &[usize; KEY_TILE],
    nk: usize,
    kt: &mut [[f32; KEY_TILE]; HD],
) {
    for (jj, &j) in keys[..nk].iter().enumerate() {
        let kr = vec_at::<HD>(k.data, j * k.stride + k_off);
        for (row, &x) in kt.iter_mut().zip(kr) {
            row[jj] = x;
        }
    }
}

/// 8×8 register transposes (AVX): rows of 8 keys become runs of 8 columns of `kt`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose_avx<const HD: usize>(
    k: &HeadRows<'_>,
    k_off: usize,
    keys: &[usize; KEY_TILE],
    nk: usize,
    kt: &mut [[f32; KEY_TILE]; HD],
) {
    use std::arch::x86_64::*;
    if !HD.is_multiple_of(8) {
        return transpose_scalar::<HD>(k, k_off, keys, nk, kt);
    }
    for g in (0..nk).step_by(8) {
        // Every entry of `keys` is an in-range key index (stale entries come from earlier tiles
        // or are 0, and a tile with nk > 0 implies k.rows > 0).
        let rows: [&[f32; HD]; 8] =
            std::array::from_fn(|a| vec_at::<HD>(k.data, keys[g + a] * k.stride + k_off));
        for d0 in (0..HD).step_by(8) {
            // SAFETY: only called inside the `avx2,fma` / `avx512f,avx2,fma` shims, whose callers
            // checked that the CPU has AVX; every load reads 8 floats of a row slice of length HD
            // at d0 + 8 <= HD, and every store writes 8 floats of `kt[d0 + b]` at g + 8 <= KEY_TILE.
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|a| _mm256_loadu_ps(rows[a][d0..d0 + 8].as_ptr()));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let o = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (b, &ob) in o.iter().enumerate() {
                    _mm256_storeu_ps(kt[d0 + b][g..g + 8].as_mut_ptr(), ob);
                }
            }
        }
    }
}

/// The two microkernel methods of an [`Isa`] impl, which differ between instruction sets only in
/// their register blocks (`scores: (R, W)`: rows × key columns; `pv_rows`: rows of `O += P·V`);
/// both run on the impl's own [`Isa::mul_add`].
macro_rules! microkernels {
    (scores: ($r:literal, $w:literal), pv_rows: $pr:literal) => {
        #[inline(always)]
        fn scores<const HD: usize>(
            qs: &[[f32; HD]; Q_BLOCK],
            nq: usize,
            kt: &[[f32; KEY_TILE]; HD],
            nk: usize,
            p: &mut [[f32; KEY_TILE]; Q_BLOCK],
        ) {
            score_block::<HD, $r, $w>(qs, nq, kt, nk, p, Self::mul_add);
        }

        #[inline(always)]
        fn weighted_sum<const HD: usize>(
            p: &[[f32; KEY_TILE]; Q_BLOCK],
            nq: usize,
            first: &[usize; Q_BLOCK],
            visible: &[usize; Q_BLOCK],
            vt: &[[f32; HD]; KEY_TILE],
            acc: &mut [[f32; HD]; Q_BLOCK],
        ) {
            weighted_sum_by::<HD, $pr>(p, nq, first, visible, vt, acc, Self::mul_add);
        }
    };
}

/// The microkernel methods of a SIMD [`Isa`] impl, on explicit vector registers ([`Lanes`]):
/// `scores: (R, NV)` and `pv: (R, NV)` are register blocks of `R` rows × `NV` registers. LLVM's
/// auto-vectorisation of the portable loops kept one accumulator chain per register (measured:
/// 2–5 GFLOP/s, latency-bound); these hold the whole block for the reduction. Head widths that are
/// not a whole number of the block's columns fall back to the portable loops (same chains, fused).
/// The arithmetic (one multiply-add chain per output, in order) is the portable loops', so results
/// are unchanged.
macro_rules! simd_microkernels {
    (lanes: $v:ty, scores: ($sr:literal, $snv:literal), pv: ($pr:literal, $pnv:literal)) => {
        #[inline(always)]
        fn scores<const HD: usize>(
            qs: &[[f32; HD]; Q_BLOCK],
            nq: usize,
            kt: &[[f32; KEY_TILE]; HD],
            nk: usize,
            p: &mut [[f32; KEY_TILE]; Q_BLOCK],
        ) {
            // SAFETY: this impl is only instantiated inside its `#[target_feature]` shim, which
            // runs only on CPUs with the features (`AttentionIsa::available`).
            unsafe { simd::score_block::<$v, HD, $sr, $snv>(qs, nq, kt, nk, p) }
        }

        #[inline(always)]
        fn weighted_sum<const HD: usize>(
            p: &[[f32; KEY_TILE]; Q_BLOCK],
            nq: usize,
            first: &[usize; Q_BLOCK],
            visible: &[usize; Q_BLOCK],
            vt: &[[f32; HD]; KEY_TILE],
            acc: &mut [[f32; HD]; Q_BLOCK],
        ) {
            if HD.is_multiple_of($pnv * <$v as Lanes>::WIDTH) {
                // SAFETY: as for `scores`.
                unsafe { simd::weighted_sum_block::<$v, HD, $pr, $pnv>(p, nq, first, visible, vt, acc) }
            } else if HD.is_multiple_of(<$v as Lanes>::WIDTH) {
                // SAFETY: as for `scores`.
                unsafe { simd::weighted_sum_block::<$v, HD, $pr, 1>(p, nq, first, visible, vt, acc) }
            } else {
                weighted_sum_by::<HD, $pr>(p, nq, first, visible, vt, acc, Self::mul_add);
            }
        }
    };
}

/// Baseline: separate multiply and add (no FMA is guaranteed on the baseline target, and
/// `f32::mul_add` without hardware FMA is a slow libm call).
struct Portable;

/// `x·y + acc` rounded twice: the baseline's multiply-add.
#[inline(always)]
fn mul_then_add(x: f32, y: f32, acc: f32) -> f32 {
    x * y + acc
}

impl Isa for Portable {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        mul_then_add(a, b, c)
    }

    microkernels!(scores: (4, 8), pv_rows: 4);
}

/// AVX2 + FMA: explicit 256-bit microkernels ([`simd_microkernels`]); register blocks of 4 rows ×
/// 2 ymm (16 keys of scores, 16 columns of `P·V`): 8 of the 16 ymm registers as accumulators.
#[cfg(target_arch = "x86_64")]
struct Avx2Fma;

#[cfg(target_arch = "x86_64")]
impl Avx2Fma {
    #[inline]
    fn detected() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
}

#[cfg(target_arch = "x86_64")]
impl Isa for Avx2Fma {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    simd_microkernels!(lanes: Avx2Lanes, scores: (4, 2), pv: (4, 2));

    #[inline(always)]
    fn transpose<const HD: usize>(
        k: &HeadRows<'_>,
        k_off: usize,
        keys: &[usize; KEY_TILE],
        nk: usize,
        kt: &mut [[f32; KEY_TILE]; HD],
    ) {
        transpose_avx::<HD>(k, k_off, keys, nk, kt);
    }
}

/// AVX-512F: as [`Avx2Fma`] with 512-bit registers: register blocks of 8 rows × 2 zmm (32 keys of
/// scores, 32 columns of `P·V`): 16 of the 32 zmm registers as accumulators.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    #[inline]
    fn detected() -> bool {
        std::is_x86_feature_detected!("avx512f") && Avx2Fma::detected()
    }
}

#[cfg(target_arch = "x86_64")]
impl Isa for Avx512 {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    simd_microkernels!(lanes: Avx512Lanes, scores: (8, 2), pv: (8, 2));

    #[inline(always)]
    fn transpose<const HD: usize>(
        k: &HeadRows<'_>,
        k_off: usize,
        keys: &[usize; KEY_TILE],
        nk: usize,
        kt: &mut [[f32; KEY_TILE]; HD],
    ) {
        transpose_avx::<HD>(k, k_off, keys, nk, kt);
    }
}

/// `S = Q·Kᵀ` for the block's `nq` rows through [`score_columns`]: groups of `R` rows, then pairs,
/// then a last single row (a group too small for the register block still keeps one chain per
/// score).
#[inline(always)]
fn score_block<const HD: usize, const R: usize, const W: usize>(
    qs: &[[f32; HD]; Q_BLOCK],
    nq: usize,
    kt: &[[f32; KEY_TILE]; HD],
    nk: usize,
    p: &mut [[f32; KEY_TILE]; Q_BLOCK],
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let mut i0 = 0;
    while i0 + R <= nq {
        score_rows::<HD, R, W>(qs, i0, kt, nk, p, fma);
        i0 += R;
    }
    while i0 + 2 <= nq {
        score_rows::<HD, 2, W>(qs, i0, kt, nk, p, fma);
        i0 += 2;
    }
    if i0 < nq {
        score_rows::<HD, 1, W>(qs, i0, kt, nk, p, fma);
    }
}

/// [`score_columns`] for rows `i0..i0 + R` of the block.
#[inline(always)]
fn score_rows<const HD: usize, const R: usize, const W: usize>(
    qs: &[[f32; HD]; Q_BLOCK],
    i0: usize,
    kt: &[[f32; KEY_TILE]; HD],
    nk: usize,
    p: &mut [[f32; KEY_TILE]; Q_BLOCK],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let qg: &[[f32; HD]; R] = qs[i0..i0 + R].try_into().expect("R rows");
    let pg: &mut [[f32; KEY_TILE]; R] = (&mut p[i0..i0 + R]).try_into().expect("R rows");
    score_columns::<HD, R, W>(qg, kt, nk, pg, fma);
}

/// Scores of `R` query rows against the transposed key tile, `W` keys at a time: the `R × W`
/// accumulators stay in registers across the whole `d` loop and each step is a broadcast of
/// `qs[i][d]` times a contiguous run of `kt[d]` (vertical, no horizontal sums). `W` divides
/// [`KEY_TILE`].
#[inline(always)]
fn score_columns<const HD: usize, const R: usize, const W: usize>(
    qs: &[[f32; HD]; R],
    kt: &[[f32; KEY_TILE]; HD],
    nk: usize,
    p: &mut [[f32; KEY_TILE]; R],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    const { assert!(KEY_TILE.is_multiple_of(W)) };
    for c0 in (0..nk).step_by(W) {
        let mut s = [[0.0f32; W]; R];
        for (d, row) in kt.iter().enumerate() {
            let kd = row[c0..].first_chunk::<W>().expect("W divides KEY_TILE");
            rank_one_update(&mut s, std::array::from_fn(|i| qs[i][d]), kd, &fma);
        }
        for (pi, si) in p.iter_mut().zip(&s) {
            pi[c0..c0 + W].copy_from_slice(si);
        }
    }
}

/// `O += P·V` for the block's `nq` rows in groups of `R` (then single rows), with the widest
/// column block of 16, 8 or 1 floats that divides `HD` (a constant per instantiation).
#[inline(always)]
fn weighted_sum_by<const HD: usize, const R: usize>(
    p: &[[f32; KEY_TILE]; Q_BLOCK],
    nq: usize,
    first: &[usize; Q_BLOCK],
    visible: &[usize; Q_BLOCK],
    vt: &[[f32; HD]; KEY_TILE],
    acc: &mut [[f32; HD]; Q_BLOCK],
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    if HD.is_multiple_of(16) {
        weighted_sum_block::<HD, R, 16>(p, nq, first, visible, vt, acc, fma);
    } else if HD.is_multiple_of(8) {
        weighted_sum_block::<HD, R, 8>(p, nq, first, visible, vt, acc, fma);
    } else {
        weighted_sum_block::<HD, R, 1>(p, nq, first, visible, vt, acc, fma);
    }
}

/// One step of both microkernels: `s[i][c] += x[i] · y[c]` for an `R × W` block of accumulators
/// (a broadcast of `x[i]` times a contiguous run `y`, vertical, no horizontal sums).
#[inline(always)]
fn rank_one_update<const R: usize, const W: usize>(
    s: &mut [[f32; W]; R],
    x: [f32; R],
    y: &[f32; W],
    fma: &impl Fn(f32, f32, f32) -> f32,
) {
    for (si, &xi) in s.iter_mut().zip(&x) {
        for (a, &yc) in si.iter_mut().zip(y) {
            *a = fma(xi, yc, *a);
        }
    }
}

/// `O += P·V` for the block's `nq` rows in register blocks as [`score_block`]'s: groups of `R`
/// rows, then pairs, then a single row, each over the keys some row of the group sees.
#[inline(always)]
fn weighted_sum_block<const HD: usize, const R: usize, const W: usize>(
    p: &[[f32; KEY_TILE]; Q_BLOCK],
    nq: usize,
    first: &[usize; Q_BLOCK],
    visible: &[usize; Q_BLOCK],
    vt: &[[f32; HD]; KEY_TILE],
    acc: &mut [[f32; HD]; Q_BLOCK],
    fma: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let mut i0 = 0;
    while i0 + R <= nq {
        weighted_sum_rows::<HD, R, W>(p, i0, first, visible, vt, acc, fma);
        i0 += R;
    }
    while i0 + 2 <= nq {
        weighted_sum_rows::<HD, 2, W>(p, i0, first, visible, vt, acc, fma);
        i0 += 2;
    }
    if i0 < nq {
        weighted_sum_rows::<HD, 1, W>(p, i0, first, visible, vt, acc, fma);
    }
}

/// [`pv_columns`] for rows `i0..i0 + R` of the block, over the union of their key ranges (the
/// rows' weights are 0 outside their own).
#[inline(always)]
fn weighted_sum_rows<const HD: usize, const R: usize, const W: usize>(
    p: &[[f32; KEY_TILE]; Q_BLOCK],
    i0: usize,
    first: &[usize; Q_BLOCK],
    visible: &[usize; Q_BLOCK],
    vt: &[[f32; HD]; KEY_TILE],
    acc: &mut [[f32; HD]; Q_BLOCK],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    let rows = i0..i0 + R;
    let lo = first[rows.clone()].iter().copied().min().unwrap_or(0);
    let hi = visible[rows.clone()].iter().copied().max().unwrap_or(0);
    let pg: &[[f32; KEY_TILE]; R] = p[rows.clone()].try_into().expect("R rows");
    let ag: &mut [[f32; HD]; R] = (&mut acc[rows]).try_into().expect("R rows");
    pv_columns::<HD, R, W>(pg, lo, hi, vt, ag, fma);
}

/// `acc[i] += Σ_{jj ∈ lo..hi} p[i][jj] · vt[jj]` for `R` rows, `W` columns at a time: the `R × W`
/// accumulators stay in registers across the whole key loop; each step is a broadcast of
/// `p[i][jj]` times a contiguous run of `vt[jj]`. `W` divides `HD`.
#[inline(always)]
fn pv_columns<const HD: usize, const R: usize, const W: usize>(
    p: &[[f32; KEY_TILE]; R],
    lo: usize,
    hi: usize,
    vt: &[[f32; HD]; KEY_TILE],
    acc: &mut [[f32; HD]; R],
    fma: impl Fn(f32, f32, f32) -> f32,
) {
    if lo >= hi {
        return;
    }
    for c0 in (0..HD).step_by(W) {
        let mut s: [[f32; W]; R] =
            std::array::from_fn(|i| *acc[i][c0..].first_chunk::<W>().expect("W divides HD"));
        for (jj, vrow) in vt.iter().enumerate().take(hi).skip(lo) {
            let vc = vrow[c0..].first_chunk::<W>().expect("W divides HD");
            rank_one_update(&mut s, std::array::from_fn(|i| p[i][jj]), vc, &fma);
        }
        for (ai, si) in acc.iter_mut().zip(&s) {
            ai[c0..c0 + W].copy_from_slice(si);
        }
    }
}

/// The SIMD microkernels: the portable loops' register blocks held in explicit vector registers.
mod simd {
    use super::{Lanes, KEY_TILE, Q_BLOCK};

    /// `S = Q·Kᵀ` for the block's `nq` rows: groups of `R` rows, then pairs, then a single row.
    ///
    /// # Safety
    /// The CPU supports `V`'s target features.
    #[inline(always)]
    pub(super) unsafe fn score_block<V: Lanes, const HD: usize, const R: usize, const NV: usize>(
        qs: &[[f32; HD]; Q_BLOCK],
        nq: usize,
        kt: &[[f32; KEY_TILE]; HD],
        nk: usize,
        p: &mut [[f32; KEY_TILE]; Q_BLOCK],
    ) {
        let mut i0 = 0;
        // SAFETY (all three): forwarded from the caller.
        while i0 + R <= nq {
            unsafe { score_rows::<V, HD, R, NV>(qs, i0, kt, nk, p) };
            i0 += R;
        }
        while i0 + 2 <= nq {
            unsafe { score_rows::<V, HD, 2, NV>(qs, i0, kt, nk, p) };
            i0 += 2;
        }
        if i0 < nq {
            unsafe { score_rows::<V, HD, 1, NV>(qs, i0, kt, nk, p) };
        }
    }

    /// Scores of rows `i0..i0 + R` against the transposed key tile, `NV` registers of keys at a
    /// time: `R × NV` accumulators for the whole `d` loop, each step a broadcast of `qs[i][d]`
    /// times `NV` registers of `kt[d]`.
    ///
    /// # Safety
    /// The CPU supports `V`'s target features.
    #[inline(always)]
    unsafe fn score_rows<V: Lanes, const HD: usize, const R: usize, const NV: usize>(
        qs: &[[f32; HD]; Q_BLOCK],
        i0: usize,
        kt: &[[f32; KEY_TILE]; HD],
        nk: usize,
        p: &mut [[f32; KEY_TILE]; Q_BLOCK],
    ) {
        let w = NV * V::WIDTH;
        assert!(KEY_TILE.is_multiple_of(w) && nk <= KEY_TILE && i0 + R <= Q_BLOCK, "score block shape");
        for c0 in (0..nk).step_by(w) {
            // SAFETY (target features, every block below): from the caller. Loads from `kt[d]` and
            // stores to `p[i]` cover columns c0 .. c0 + w ≤ KEY_TILE (w divides KEY_TILE and
            // c0 < nk ≤ KEY_TILE), inside the rows.
            let mut acc: [[V; NV]; R] = [[unsafe { V::zero() }; NV]; R];
            for (d, row) in kt.iter().enumerate() {
                let k: [V; NV] =
                    std::array::from_fn(|v| unsafe { V::load(row.as_ptr().add(c0 + v * V::WIDTH)) });
                for (i, acc) in acc.iter_mut().enumerate() {
                    let q = unsafe { V::splat(qs[i0 + i][d]) };
                    for (a, &k) in acc.iter_mut().zip(&k) {
                        *a = unsafe { V::mul_add(q, k, *a) };
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                for (v, a) in acc.iter().enumerate() {
                    unsafe { a.store(p[i0 + i].as_mut_ptr().add(c0 + v * V::WIDTH)) };
                }
            }
        }
    }

    /// `O += P·V` for the block's `nq` rows: groups of `R`, pairs, a single row, each over the
    /// union of its rows' key ranges (weights are 0 outside a row's own).
    ///
    /// # Safety
    /// The CPU supports `V`'s target features.
    #[inline(always)]
    pub(super) unsafe fn weighted_sum_block<V: Lanes, const HD: usize, const R: usize, const NV: usize>(
        p: &[[f32; KEY_TILE]; Q_BLOCK],
        nq: usize,
        first: &[usize; Q_BLOCK],
        visible: &[usize; Q_BLOCK],
        vt: &[[f32; HD]; KEY_TILE],
        acc: &mut [[f32; HD]; Q_BLOCK],
    ) {
        let mut i0 = 0;
        // SAFETY (all three): forwarded from the caller.
        while i0 + R <= nq {
            unsafe { pv_rows::<V, HD, R, NV>(p, i0, first, visible, vt, acc) };
            i0 += R;
        }
        while i0 + 2 <= nq {
            unsafe { pv_rows::<V, HD, 2, NV>(p, i0, first, visible, vt, acc) };
            i0 += 2;
        }
        if i0 < nq {
            unsafe { pv_rows::<V, HD, 1, NV>(p, i0, first, visible, vt, acc) };
        }
    }

    /// `acc[i] += Σ_{jj ∈ lo..hi} p[i][jj] · vt[jj]` for rows `i0..i0 + R`, `NV` registers of
    /// columns at a time: `R × NV` accumulators for the whole key loop.
    ///
    /// # Safety
    /// The CPU supports `V`'s target features.
    #[inline(always)]
    unsafe fn pv_rows<V: Lanes, const HD: usize, const R: usize, const NV: usize>(
        p: &[[f32; KEY_TILE]; Q_BLOCK],
        i0: usize,
        first: &[usize; Q_BLOCK],
        visible: &[usize; Q_BLOCK],
        vt: &[[f32; HD]; KEY_TILE],
        acc: &mut [[f32; HD]; Q_BLOCK],
    ) {
        let w = NV * V::WIDTH;
        assert!(HD.is_multiple_of(w) && i0 + R <= Q_BLOCK, "P·V block shape");
        let rows = i0..i0 + R;
        let lo = first[rows.clone()].iter().copied().min().unwrap_or(0);
        let hi = visible[rows].iter().copied().max().unwrap_or(0).min(KEY_TILE);
        if lo >= hi {
            return;
        }
        for c0 in (0..HD).step_by(w) {
            // SAFETY (target features, every block below): from the caller. Loads and stores of
            // `acc[i]` and loads of `vt[jj]` cover columns c0 .. c0 + w ≤ HD (w divides HD).
            let mut s: [[V; NV]; R] = std::array::from_fn(|i| {
                std::array::from_fn(|v| unsafe { V::load(acc[i0 + i].as_ptr().add(c0 + v * V::WIDTH)) })
            });
            for (jj, vrow) in vt.iter().enumerate().take(hi).skip(lo) {
                let x: [V; NV] =
                    std::array::from_fn(|v| unsafe { V::load(vrow.as_ptr().add(c0 + v * V::WIDTH)) });
                for (i, s) in s.iter_mut().enumerate() {
                    let pij = unsafe { V::splat(p[i0 + i][jj]) };
                    for (a, &x) in s.iter_mut().zip(&x) {
                        *a = unsafe { V::mul_add(pij, x, *a) };
                    }
                }
            }
            for (i, s) in s.iter().enumerate() {
                for (v, a) in s.iter().enumerate() {
                    unsafe { a.store(acc[i0 + i].as_mut_ptr().add(c0 + v * V::WIDTH)) };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn attention_avx2_fma<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: Option<BlockSparse>,
    scale: f32,
    out: &mut [f32],
) {
    attention_body::<HD, Avx2Fma>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn attention_avx512<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: Option<BlockSparse>,
    scale: f32,
    out: &mut [f32],
) {
    attention_body::<HD, Avx512>(q, k, v, heads, kv_heads, q_pos0, mask, sparse, scale, out);
}

/// Maximum of a score row with [`LANES`] independent accumulators (a serial `fold` does not
/// vectorise).
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for j in 0..LANES {
            acc[j] = acc[j].max(chunk[j]);
        }
    }
    for (j, &x) in chunks.remainder().iter().enumerate() {
        acc[j] = acc[j].max(x);
    }
    acc.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `HD` floats starting at `offset`, as a fixed-size array so the inner loops have a constant trip
/// count.
#[inline(always)]
fn vec_at<const HD: usize>(xs: &[f32], offset: usize) -> &[f32; HD] {
    xs[offset..]
        .first_chunk::<HD>()
        .expect("attention: row slice shorter than HD (shapes are checked on entry)")
}

/// Adds head `h`'s position bias to the visible scores `p[i][first[i]..visible[i]]` of each query
/// row `i` (position `pos0 + i`) of a tile whose compacted keys are `keys`. When no key of the tile
/// was masked out (`contiguous`: `keys` is `t0, t0 + 1, …`) a row's biases are one contiguous run
/// of the table and the add vectorises; otherwise they are gathered per key. Indices are in range
/// by [`check_bias`]: `center ≥ pos` and `center + j − pos < span` for every key `j` of the call.
#[inline(always)]
fn add_bias(
    bias: &PositionBias<'_>,
    h: usize,
    pos0: usize,
    t0: usize,
    keys: &[usize],
    contiguous: bool,
    first: &[usize],
    visible: &[usize],
    p: &mut [[f32; KEY_TILE]; Q_BLOCK],
) {
    for (i, ((&a, &n), pi)) in first.iter().zip(visible).zip(p.iter_mut()).enumerate() {
        if n <= a {
            continue;
        }
        // Bias of key `j` for this row: `row[j]`.
        let row = &bias.table[h * bias.span + bias.center - (pos0 + i)..];
        let scores = &mut pi[a..n];
        if contiguous {
            for (s, &b) in scores.iter_mut().zip(&row[t0 + a..t0 + n]) {
                *s += b;
            }
        } else {
            for (s, &j) in scores.iter_mut().zip(&keys[a..n]) {
                *s += row[j];
            }
        }
    }
}

/// The key tiles `[t0, t1)` one block of query rows visits, ascending: steps of [`KEY_TILE`] keys
/// over `next..end`, and under a block-sparse layout only inside key blocks that one of the
/// block's query blocks attends, jumping from one such block to the next (a tile never straddles
/// two key blocks). Without a layout these are exactly `(next..end).step_by(KEY_TILE)`.
struct Tiles {
    next: usize,
    end: usize,
    /// The layout, the first and last query block of the rows, and whether the mask is causal.
    sparse: Option<(BlockSparse, usize, usize, bool)>,
}

impl Iterator for Tiles {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        let (mut t0, mut t1) = (self.next, self.end.min(self.next + KEY_TILE));
        if let Some((layout, first, last, causal)) = self.sparse {
            let b = layout.block.get();
            let block = layout.next_visible_block(first..=last, t0 / b, causal)?;
            t0 = t0.max(block.saturating_mul(b));
            let block_end = block.saturating_add(1).saturating_mul(b);
            t1 = self.end.min(block_end).min(t0.saturating_add(KEY_TILE));
        }
        if t0 >= self.end {
            return None;
        }
        self.next = t1;
        Some((t0, t1))
    }
}

/// The tiled online-softmax algorithm, FlashAttention-2's loop order: per head and block of up to
/// [`Q_BLOCK`] query rows, per visible key tile, `S = Q·Kᵀ` ([`Isa::scores`]), mask, bias and the
/// online-softmax update on `S` while it is in L1, then `O += P·V` ([`Isa::weighted_sum`]). The
/// tile's keys are packed once per block (`Kᵀ` transposed, `V` compacted), so packing is amortised
/// over all the block's rows. Shapes have been validated by [`check_general`].
#[inline(always)]
fn attention_body<const HD: usize, I: Isa>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    q_pos0: usize,
    mask: Mask<'_>,
    sparse: Option<BlockSparse>,
    scale: f32,
    out: &mut [f32],
) {
    let width = heads * HD;
    let group = heads / kv_heads;
    let rows = q.rows;
    // The current tile's keys, transposed (`kt[d][jj]` is element `d` of compacted key `jj`), and
    // its values, compacted (`vt[jj]`). Columns of `kt` past the tile's `nk` hold stale (finite or
    // not) values whose scores are never read; rows of `vt` past `nk` are never read.
    let mut kt = [[0.0f32; KEY_TILE]; HD];
    let mut vt = [[0.0f32; HD]; KEY_TILE];
    let mut block = Block::<HD>::new();

    for h in 0..heads {
        let kvh = h / group;
        let (q_off, k_off, v_off) = (q.offset + h * HD, k.offset + kvh * HD, v.offset + kvh * HD);
        for r0 in (0..rows).step_by(Q_BLOCK) {
            let nq = Q_BLOCK.min(rows - r0);
            // Position of the block's first query; under a causal mask no row of the block sees a
            // key past its last query (under a centred window: past its last query's window), so
            // later tiles are never visited. Under a window no row sees a key before the first
            // row's window, so tiles start there (with no window: at 0).
            let pos0 = q_pos0 + r0;
            let key_end = k.rows.min(mask.row_end(pos0 + nq - 1));
            let key_start = mask.window_start(pos0);
            // Under a layout, the tiles of the key blocks this block's query blocks attend (the
            // rows span at most two query blocks, as Q_BLOCK ≤ KEY_TILE ≤ b).
            let sparse_block = sparse.map_or(1, |layout| layout.block.get());
            let layout = sparse
                .map(|layout| (layout, pos0 / sparse_block, (pos0 + nq - 1) / sparse_block, mask.causal));
            let tiles = Tiles { next: key_start, end: key_end, sparse: layout };

            block.start(&q, r0, nq, q_off, scale);
            let mut keys = [0usize; KEY_TILE];
            let mut scored = 0u64;

            for (t0, t1) in tiles {
                let nk = compact_keys(mask.key_valid, t0, t1, &mut keys);
                if nk == 0 {
                    continue;
                }
                block.row_ranges(&mask, layout.map(|(l, ..)| l), pos0, t0, t1, &keys[..nk]);
                scored += (nq * nk) as u64;

                I::transpose::<HD>(&k, k_off, &keys, nk, &mut kt);
                for (row, &j) in vt.iter_mut().zip(&keys[..nk]) {
                    *row = *vec_at::<HD>(v.data, j * v.stride + v_off);
                }
                I::scores::<HD>(&block.qs, nq, &kt, nk, &mut block.p);
                // One branch per tile: without a bias the tile goes straight to the softmax.
                if let Some(bias) = &mask.bias {
                    let contiguous = nk == t1 - t0;
                    add_bias(
                        bias,
                        h,
                        pos0,
                        t0,
                        &keys[..nk],
                        contiguous,
                        &block.first[..nq],
                        &block.visible[..nq],
                        &mut block.p,
                    );
                }
                block.online_softmax::<I>(nk);
                I::weighted_sum::<HD>(&block.p, nq, &block.first, &block.visible, &vt, &mut block.acc);
            }

            if scored > 0 {
                SCORES.with(|c| c.set(c.get() + scored));
            }
            block.finish(&mut out[r0 * width..(r0 + nq) * width], width, h);
        }
    }
}

/// Writes the keys of `t0..t1` that `key_valid` admits (all of them without it), ascending, into
/// `keys`; returns how many.
#[inline(always)]
fn compact_keys(key_valid: Option<&[bool]>, t0: usize, t1: usize, keys: &mut [usize; KEY_TILE]) -> usize {
    match key_valid {
        Some(valid) => {
            let mut nk = 0;
            for (j, _) in valid[t0..t1].iter().enumerate().filter(|(_, &ok)| ok) {
                keys[nk] = t0 + j;
                nk += 1;
            }
            nk
        }
        None => {
            for (slot, j) in keys.iter_mut().zip(t0..t1) {
                *slot = j;
            }
            t1 - t0
        }
    }
}

/// The running state of one block of query rows of one head: the scaled queries, the tile's
/// scores, each row's running max, normaliser and unnormalised output, and which of the tile's
/// compacted keys each row sees.
struct Block<const HD: usize> {
    /// Queries with the scale folded in (saves a multiply per score).
    qs: [[f32; HD]; Q_BLOCK],
    /// Scores of the current tile, then their softmax weights (0 for keys a row does not see).
    p: [[f32; KEY_TILE]; Q_BLOCK],
    max: [f32; Q_BLOCK],
    sum: [f32; Q_BLOCK],
    acc: [[f32; HD]; Q_BLOCK],
    /// Per row: the range `first..visible` of the tile's compacted keys it sees (keys ascend;
    /// `first` is 0 unless a window cuts the tile's start, `visible` is nk unless the causal limit
    /// or a centred window cuts its end; empty if the row's query block skips the tile's key
    /// block).
    first: [usize; Q_BLOCK],
    visible: [usize; Q_BLOCK],
    nq: usize,
}

impl<const HD: usize> Block<HD> {
    #[inline(always)]
    fn new() -> Self {
        Self {
            qs: [[0.0; HD]; Q_BLOCK],
            p: [[0.0; KEY_TILE]; Q_BLOCK],
            max: [f32::NEG_INFINITY; Q_BLOCK],
            sum: [0.0; Q_BLOCK],
            acc: [[0.0; HD]; Q_BLOCK],
            first: [0; Q_BLOCK],
            visible: [0; Q_BLOCK],
            nq: 0,
        }
    }

    /// Resets the state for query rows `r0..r0 + nq` of the head at `q_off`.
    #[inline(always)]
    fn start(&mut self, q: &HeadRows<'_>, r0: usize, nq: usize, q_off: usize, scale: f32) {
        self.nq = nq;
        for (i, qi) in self.qs[..nq].iter_mut().enumerate() {
            let src = vec_at::<HD>(q.data, (r0 + i) * q.stride + q_off);
            for (d, &s) in qi.iter_mut().zip(src) {
                *d = s * scale;
            }
        }
        self.max = [f32::NEG_INFINITY; Q_BLOCK];
        self.sum = [0.0; Q_BLOCK];
        self.acc[..nq].iter_mut().for_each(|a| a.fill(0.0));
    }

    /// Each row's range of the tile's compacted `keys` (from `t0..t1`): the causal limit or a
    /// centred window's end, a window's start, and under a layout whether the row's query block
    /// attends the tile's key block at all.
    #[inline(always)]
    fn row_ranges(
        &mut self,
        mask: &Mask<'_>,
        layout: Option<BlockSparse>,
        pos0: usize,
        t0: usize,
        t1: usize,
        keys: &[usize],
    ) {
        let nk = keys.len();
        for (i, (n, a)) in self.visible[..self.nq].iter_mut().zip(&mut self.first[..self.nq]).enumerate() {
            let pos = pos0 + i;
            let hi = mask.row_end(pos);
            *n = if t1 > hi { keys.partition_point(|&j| j < hi) } else { nk };
            let lo = mask.window_start(pos);
            *a = if t0 < lo { keys.partition_point(|&j| j < lo).min(*n) } else { 0 };
            // A row whose query block does not attend this tile's key block (the other query
            // block of a block of rows straddling two) sees none of it.
            if let Some(layout) = layout {
                let b = layout.block.get();
                if !layout.block_sees(pos / b, t0 / b, mask.causal) {
                    *a = *n;
                }
            }
        }
    }

    /// Turns the tile's scores into softmax weights against each row's running max (rescaling the
    /// row's sum and output when the max grows); keys a row does not see weigh 0.
    #[inline(always)]
    fn online_softmax<I: Isa>(&mut self, nk: usize) {
        for i in 0..self.nq {
            let (a, n) = (self.first[i], self.visible[i]);
            // Keys past the row's own position (diagonal tile only) or outside its window weigh 0.
            self.p[i][n..nk].fill(0.0);
            self.p[i][..a].fill(0.0);
            if n == a {
                continue;
            }
            let scores = &mut self.p[i][a..n];
            let tile_max = lane_max(scores);
            if tile_max > self.max[i] {
                // The first valid tile has nothing to rescale; later tiles shrink the old terms to
                // the new max so every exponent stays ≤ 0 and nothing overflows.
                if self.max[i] != f32::NEG_INFINITY {
                    let c = exp_f32(self.max[i] - tile_max);
                    self.sum[i] *= c;
                    self.acc[i].iter_mut().for_each(|a| *a *= c);
                }
                self.max[i] = tile_max;
            }
            // Branch-free exp over the contiguous tile row: this loop vectorises, where a libm call
            // per score made exp the dominant cost of the whole kernel.
            let m = self.max[i];
            scores.iter_mut().for_each(|s| *s = exp_with(*s - m, I::mul_add));
            self.sum[i] += lane_sum(scores, |p| p);
        }
    }

    /// Writes head `h` of each row's normalised output into `out` (rows of `width` floats).
    #[inline(always)]
    fn finish(&self, out: &mut [f32], width: usize, h: usize) {
        for (i, row) in out.chunks_exact_mut(width).enumerate().take(self.nq) {
            let dst = &mut row[h * HD..][..HD];
            // The maximum score contributes exp(0) = 1, so `sum` ≥ 1 whenever any key was
            // visible; 0 means the row saw no key and is defined as zeros.
            if self.sum[i] > 0.0 {
                let inv = 1.0 / self.sum[i];
                for (o, &a) in dst.iter_mut().zip(&self.acc[i]) {
                    *o = a * inv;
                }
            } else {
                dst.fill(0.0);
            }
        }
    }
}
