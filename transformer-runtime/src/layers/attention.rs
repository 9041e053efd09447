//! Multi-head self-attention over a padded batch: the fused kernel run for every
//! (sequence, block of query rows), in parallel. Bidirectional ([`self_attention`], encoders),
//! causal over the whole batch ([`causal_self_attention`], a decoder without cache) and causal
//! over a [`KvCache`] ([`cached_causal_attention`], a decoder's prefill and decode steps).
//!
//! The general forms ([`self_attention_with`], [`causal_self_attention_with`],
//! [`cached_causal_attention_with`]) take an [`AttentionShape`]: grouped-query attention
//! (`kv_heads < heads`, LLaMA 2/3, Mistral) and a sliding window (trailing when causal, Mistral;
//! centred when bidirectional, Longformer), and an optional additive [`PositionBias`] (T5's
//! relative buckets, ALiBi; see [`position_bias`](super::position_bias)). The plain functions are
//! those with `kv_heads = heads`, no window and no bias. The `_sparse` forms
//! ([`self_attention_sparse`], [`causal_self_attention_sparse`],
//! [`cached_causal_attention_sparse`]) add a block-sparse layout ([`BlockSparse`]: the Sparse
//! Transformer's strided and fixed patterns). [`cross_attention`] is an encoder-decoder's
//! attention from decoder queries to the encoder's output (the memory).

pub use crate::kernels::sparse::{BlockSize, BlockSizeError, BlockSparse, SparsePattern};

use crate::kernels::attention::{
    attention, attention_general, attention_masked, HeadRows, Mask, PositionBias,
};
use crate::{Batch, KvCache, Threads};

/// The kernel's block of query rows ([`crate::kernels::attention::Q_BLOCK`]): tasks split a
/// sequence's queries at multiples of it, so the kernel's blocks, and so its results, are the same
/// however many tasks there are.
const QUERY_BLOCK: usize = crate::kernels::attention::Q_BLOCK;

/// Query rows per task for a sequence of `rows` queries: whole blocks, and as few tasks as keep
/// every thread busy with slack for work stealing (4 per thread; a causal sequence's later rows
/// cost more), one task without a pool. The kernel loops over heads outside its blocks, so the rows
/// of one task reuse each head's keys and values while they are in cache; a task per block re-read
/// every head's keys and values for each 32 rows, which at 4096 tokens (12 MB of them) came from
/// memory every time.
fn query_rows_per_task(rows: usize, threads: &Threads) -> usize {
    if threads.count() <= 1 {
        return rows.max(1);
    }
    rows.div_ceil(4 * threads.count()).next_multiple_of(QUERY_BLOCK).max(QUERY_BLOCK)
}

/// Sequences whose cache slices are gathered (on the stack) for one parallel pass of
/// [`cached_causal_attention`]; larger batches run in groups of this many.
const SEQ_GROUP: usize = 64;

/// `ctx = softmax(Q·Kᵀ·scale + padding mask)·V` per head, heads concatenated.
///
/// `qkv` holds `batch.rows()` rows of `[Q | K | V]` (each `heads * HD` wide), as the fused QKV
/// projection writes them; `ctx` receives `batch.rows()` rows of `heads * HD`.
pub fn self_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    heads: usize,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    let (seq, width) = (batch.seq_len(), heads * HD);
    assert_eq!(qkv.len(), batch.rows() * 3 * width, "qkv buffer does not fit the batch");
    assert_eq!(ctx.len(), batch.rows() * width, "context buffer does not fit the batch");
    let blocks_per_seq = seq.div_ceil(QUERY_BLOCK);
    let task_rows = query_rows_per_task(seq, threads);
    // Outer chunks are whole sequences, so a query block never straddles two of them; the
    // nested loop splits a long sequence into blocks so even batch 1 keeps every core busy.
    threads.for_each_chunk(ctx, seq * width, |b, ctx_seq| {
        let qkv_seq = &qkv[b * seq * 3 * width..(b + 1) * seq * 3 * width];
        let mask = batch.mask_of(b);
        if blocks_per_seq <= 1 {
            attention::<HD>(qkv_seq, seq, heads, mask, 0, scale, ctx_seq);
        } else {
            threads.for_each_chunk(ctx_seq, task_rows * width, |q, out| {
                attention::<HD>(qkv_seq, seq, heads, mask, q * task_rows, scale, out);
            });
        }
    });
}

/// Bidirectional self-attention with grouped-query heads, an optional centred window and an
/// optional position bias; qkv rows [Q (heads·HD) | K (kv_heads·HD) | V (kv_heads·HD)].
///
/// The query at index `r` of sequence `b` sees the real keys `j` of `b` (`batch.mask_of(b)`), and
/// under `shape.window = Some(w)` only those with `|j − r| ≤ w / 2`: Longformer's local attention
/// with `attention_window = w`, which must be even (asserted, as Longformer does). Key tiles wholly
/// outside the window on either side are skipped, so the cost is O(rows · w). With `bias`, the
/// score of head `h`, query `r`, key `j` gets `bias.at(h, r, j)` added; positions are indices
/// within the batch row (`batch.start_of` is not consulted), and the table must reach offsets
/// `±(extent − 1)` of the longest sequence (asserted). `ctx` receives `batch.rows()` rows of
/// `heads·HD`; rows after a sequence's last real token are padding and get zeros (the keys stop
/// there too, so they are never read).
pub fn self_attention_with<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    batch_attention::<HD>(qkv, batch, shape, false, None, bias, scale, ctx, threads);
}

/// [`self_attention_with`] under a block-sparse layout: the query at index `r` sees key `j` iff
/// [`self_attention_with`] lets it and `sparse.block_sees(r / b, j / b, false)` (the bidirectional
/// predicates of [`SparsePattern`]). Only key tiles in blocks the query block attends are
/// visited.
pub fn self_attention_sparse<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    sparse: BlockSparse,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    batch_attention::<HD>(qkv, batch, shape, false, Some(sparse), bias, scale, ctx, threads);
}

/// The full-batch forms, bidirectional or causal, with or without a layout: per sequence, keys up
/// to its last real token, parallel over sequences and then blocks of query rows.
fn batch_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    causal: bool,
    sparse: Option<BlockSparse>,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    shape.check();
    let AttentionShape { heads, kv_heads, window } = shape;
    if let Some(w) = window.filter(|_| !causal) {
        assert!(
            w.is_multiple_of(2),
            "attention: a bidirectional (centred) window must be even, as Longformer's attention_window \
             (w / 2 keys on either side), but it is {w}; an odd sliding window needs causal attention"
        );
    }
    let (seq, width, kv_width) = (batch.seq_len(), heads * HD, kv_heads * HD);
    let stride = width + 2 * kv_width;
    assert_eq!(qkv.len(), batch.rows() * stride, "qkv buffer does not fit the batch");
    assert_eq!(ctx.len(), batch.rows() * width, "context buffer does not fit the batch");
    let reach = longest_extent(batch).saturating_sub(1);
    check_bias_reach(bias.as_ref(), heads, reach, reach);
    threads.for_each_chunk(ctx, seq * width, |b, ctx_seq| {
        let qkv_seq = &qkv[b * seq * stride..(b + 1) * seq * stride];
        // Keys after the last real token are never visible to a real query: stop there.
        let extent = batch.extent_of(b);
        let key_valid = &batch.mask_of(b)[..extent];
        let (real, padding) = ctx_seq.split_at_mut(extent * width);
        padding.fill(0.0);
        let view = |offset, rows| HeadRows { data: qkv_seq, stride, offset, rows };
        let (k, v) = (view(width, extent), view(width + kv_width, extent));
        let mask = Mask { key_valid: Some(key_valid), causal, window, bias };
        let run = |q_start: usize, out: &mut [f32]| {
            let q = view(q_start * stride, out.len() / width);
            attention_masked::<HD>(q, k, v, heads, kv_heads, q_start, mask, sparse, scale, out);
        };
        if extent <= QUERY_BLOCK {
            run(0, real);
        } else {
            let task_rows = query_rows_per_task(extent, threads);
            threads.for_each_chunk(real, task_rows * width, |i, out| run(i * task_rows, out));
        }
    });
}

/// Cross-attention (encoder-decoder): each real query row of sequence b (rows r < batch.extent_of(b)) attends over the valid memory rows of sequence b (memory.mask_of(b)); padding query rows get zeros. No causal mask, no position bias.
/// q: batch.rows() rows of heads·HD; memory_kv: memory.rows() rows of [K (heads·HD) | V (heads·HD)]; ctx: batch.rows() rows of heads·HD. batch.batch_size() == memory.batch_size().
///
/// The memory's K/V are projected once per input (not per decoder step), so `memory_kv` is its own
/// buffer rather than part of the decoder's fused QKV rows. Memory rows after a sequence's last
/// real memory token are never read. Parallel over sequences, then blocks of query rows.
pub fn cross_attention<const HD: usize>(
    q: &[f32],
    batch: &Batch,
    memory_kv: &[f32],
    memory: &Batch,
    heads: usize,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    assert!(heads > 0, "attention: heads must be positive");
    let (seq, mseq, width) = (batch.seq_len(), memory.seq_len(), heads * HD);
    assert_eq!(
        batch.batch_size(),
        memory.batch_size(),
        "cross-attention: {} query sequences but {} memory sequences",
        batch.batch_size(),
        memory.batch_size()
    );
    assert_eq!(q.len(), batch.rows() * width, "query buffer does not fit the batch");
    assert_eq!(memory_kv.len(), memory.rows() * 2 * width, "memory K/V buffer does not fit the memory batch");
    assert_eq!(ctx.len(), batch.rows() * width, "context buffer does not fit the batch");
    threads.for_each_chunk(ctx, seq * width, |b, ctx_seq| {
        let q_seq = &q[b * seq * width..(b + 1) * seq * width];
        let kv_seq = &memory_kv[b * mseq * 2 * width..(b + 1) * mseq * 2 * width];
        let (extent, m_extent) = (batch.extent_of(b), memory.extent_of(b));
        let (real, padding) = ctx_seq.split_at_mut(extent * width);
        padding.fill(0.0);
        let memory_rows = |offset| HeadRows { data: kv_seq, stride: 2 * width, offset, rows: m_extent };
        let (k, v) = (memory_rows(0), memory_rows(width));
        let key_valid = &memory.mask_of(b)[..m_extent];
        let mask = Mask { key_valid: Some(key_valid), causal: false, window: None, bias: None };
        let run = |q_start: usize, out: &mut [f32]| {
            let rows = out.len() / width;
            let q = HeadRows { data: q_seq, stride: width, offset: q_start * width, rows };
            attention_general::<HD>(q, k, v, heads, heads, q_start, mask, scale, out);
        };
        if extent <= QUERY_BLOCK {
            run(0, real);
        } else {
            let task_rows = query_rows_per_task(extent, threads);
            threads.for_each_chunk(real, task_rows * width, |i, out| run(i * task_rows, out));
        }
    });
}

/// The longest `extent_of` (one past the last real token) over the batch's sequences.
fn longest_extent(batch: &Batch) -> usize {
    (0..batch.batch_size()).map(|b| batch.extent_of(b)).max().unwrap_or(0)
}

/// Asserts that `bias` (if any) has a row per head and reaches every offset `−back..=forward` a
/// call will look up, naming the shortfall: the model's table was built for fewer positions than
/// the batch has (the generated code validates inputs against `max_positions` first, so this is a
/// bug in the caller, not bad input).
fn check_bias_reach(bias: Option<&PositionBias<'_>>, heads: usize, back: usize, forward: usize) {
    let Some(&PositionBias { table, span, center }) = bias else { return };
    assert!(
        heads.checked_mul(span).is_some_and(|n| n <= table.len()),
        "attention: position bias table has {} floats, fewer than heads × span = {heads} × {span}",
        table.len()
    );
    assert!(
        back <= center && center.checked_add(forward).is_some_and(|x| x < span),
        "attention: position bias covers offsets −{center}..={} but the batch needs −{back}..={forward} \
         (more positions than the table was built for)",
        span as i128 - center as i128 - 1
    );
}

/// The head layout and window of an attention: `heads` query heads, `kv_heads` key/value heads
/// (dividing `heads`; query head `h` reads key/value head `h / (heads / kv_heads)`), and an optional
/// sliding window `w`. In a causal layer the window trails: the query at position `p` sees the keys
/// `j` with `p − w < j ≤ p` (Mistral / transformers' `sliding_window_causal_mask_function`). In a
/// bidirectional layer it is centred: `|j − p| ≤ w / 2` for an even `w` (Longformer's
/// `attention_window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub window: Option<usize>,
}

impl AttentionShape {
    /// Multi-head attention: one key/value head per query head, no window.
    pub const fn mha(heads: usize) -> Self {
        Self { heads, kv_heads: heads, window: None }
    }

    /// Floats per fused `[Q | K | V]` row: `(heads + 2·kv_heads)·HD`.
    pub const fn qkv_width(&self, head_dim: usize) -> usize {
        (self.heads + 2 * self.kv_heads) * head_dim
    }

    fn check(&self) {
        assert!(self.heads > 0, "attention: heads must be positive");
        assert!(
            self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads),
            "attention: kv_heads = {} does not divide heads = {}",
            self.kv_heads,
            self.heads
        );
    }
}

/// Causal self-attention over a right-padded batch (full recompute, no cache): the query at index
/// `r` of sequence `b` sees the keys `0..=r` of `b` that are real tokens (`batch.mask_of(b)`).
///
/// Layout as in [`self_attention`]: `qkv` holds `batch.rows()` rows of `[Q | K | V]`, `ctx`
/// receives `batch.rows()` rows of `heads * HD`. Positions are indices within the batch row
/// (`batch.start_of` is not consulted). Rows after a sequence's last real token are padding:
/// their context rows are set to zeros.
pub fn causal_self_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    heads: usize,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    causal_self_attention_with::<HD>(qkv, batch, AttentionShape::mha(heads), None, scale, ctx, threads);
}

/// [`causal_self_attention`] with grouped-query heads, an optional sliding window and an optional
/// position bias.
///
/// `qkv` holds `batch.rows()` rows of `[Q (heads·HD) | K (kv_heads·HD) | V (kv_heads·HD)]`; `ctx`
/// receives `batch.rows()` rows of `heads·HD`. The query at index `r` of sequence `b` sees the real
/// keys `j ≤ r` of `b` with, under `shape.window = Some(w)`, `j > r − w`; key tiles wholly outside
/// the window are skipped, so the cost is O(rows · w). Padding rows get zeros. With `bias`, query
/// `r` is at position `r` and key `j` at `j`: the score gets `bias.at(h, r, j)` added, and the
/// table must reach offsets `±(extent − 1)` of the longest sequence (asserted).
pub fn causal_self_attention_with<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    batch_attention::<HD>(qkv, batch, shape, true, None, bias, scale, ctx, threads);
}

/// [`causal_self_attention_with`] under a block-sparse layout: the query at index `r` sees key `j`
/// iff [`causal_self_attention_with`] lets it (so `j ≤ r`) and `sparse.block_sees(r / b, j / b,
/// true)` (the causal predicates of [`SparsePattern`]). Only key tiles in blocks the query block
/// attends are visited, so e.g. a fixed pattern costs the query's group plus the summary blocks.
pub fn causal_self_attention_sparse<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: AttentionShape,
    sparse: BlockSparse,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    batch_attention::<HD>(qkv, batch, shape, true, Some(sparse), bias, scale, ctx, threads);
}

/// One cached step of causal self-attention for layer `layer`.
///
/// For each sequence `b`, with `len = cache.lens()[b]` and `n = batch.len_of(b)`: writes the K and
/// V of its `n` real new rows (the first `n` rows of its block of `batch.seq_len()` rows in `qkv`;
/// right padding) into the cache at positions `len..len + n`, then attends every real query row
/// `r` (position `len + r`) causally over the cached rows `0..len + n`. Context rows of padding are
/// set to zeros. Does NOT advance the cache: the caller does, once, after all layers.
///
/// `qkv` holds `batch.rows()` rows of `[Q | K | V]` (each `heads * HD` wide), `ctx` receives
/// `batch.rows()` rows of `heads * HD`. Parallel over sequences, and over blocks of query rows
/// when a sequence has many new rows (prefill).
///
/// Preconditions (asserted; the caller validates user input before): `cache.kv_width() ==
/// heads * HD`, `cache.batch_size() == batch.batch_size()`, each sequence's real tokens come first
/// in its row (`batch.extent_of(b) == batch.len_of(b)`), and `len + n <= cache.max_positions()`.
pub fn cached_causal_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    cache: &mut KvCache,
    layer: usize,
    heads: usize,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    let shape = AttentionShape::mha(heads);
    cached_causal_attention_with::<HD>(qkv, batch, cache, layer, shape, None, scale, ctx, threads);
}

/// [`cached_causal_attention`] with grouped-query heads, an optional sliding window and an
/// optional position bias.
///
/// `qkv` rows are `[Q (heads·HD) | K (kv_heads·HD) | V (kv_heads·HD)]`, the cache's `kv_width` is
/// `kv_heads·HD`, and `ctx` receives `batch.rows()` rows of `heads·HD`. Under `shape.window =
/// Some(w)` the query at position `p = len + r` sees the cached keys `j` with `p − w < j ≤ p`. The
/// cache keeps every position (no ring buffer): a window only skips the key tiles before it, so a
/// step costs O(new rows · w) while memory stays `max_positions` rows. With `bias`, the query at
/// `p = len + r` and the cached key `j` (`0..len + n`) get `bias.at(h, p, j)`, the same as a full
/// recompute gives them; the table must reach offset `−(len + n − 1)` (asserted).
pub fn cached_causal_attention_with<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    cache: &mut KvCache,
    layer: usize,
    shape: AttentionShape,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    cached_attention::<HD>(qkv, batch, cache, layer, shape, None, bias, scale, ctx, threads);
}

/// [`cached_causal_attention_with`] under a block-sparse layout: the new query at position
/// `p = len + r` sees the cached key `j` iff [`cached_causal_attention_with`] lets it and
/// `sparse.block_sees(p / b, j / b, true)`, the same keys [`causal_self_attention_sparse`] gives
/// it over the whole sequence. A decode step visits only the cached key tiles of blocks its query
/// block attends.
pub fn cached_causal_attention_sparse<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    cache: &mut KvCache,
    layer: usize,
    shape: AttentionShape,
    sparse: BlockSparse,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    cached_attention::<HD>(qkv, batch, cache, layer, shape, Some(sparse), bias, scale, ctx, threads);
}

/// The cached forms, with or without a layout.
fn cached_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    cache: &mut KvCache,
    layer: usize,
    shape: AttentionShape,
    sparse: Option<BlockSparse>,
    bias: Option<PositionBias<'_>>,
    scale: f32,
    ctx: &mut [f32],
    threads: &Threads,
) {
    shape.check();
    let AttentionShape { heads, kv_heads, window } = shape;
    let (seq, width, kv_width) = (batch.seq_len(), heads * HD, kv_heads * HD);
    let stride = width + 2 * kv_width;
    assert_eq!(qkv.len(), batch.rows() * stride, "qkv buffer does not fit the batch");
    assert_eq!(ctx.len(), batch.rows() * width, "context buffer does not fit the batch");
    assert_eq!(
        cache.kv_width(),
        kv_width,
        "cache rows are {} wide, attention needs kv_heads × HD = {kv_heads} × {HD}",
        cache.kv_width()
    );
    assert_eq!(
        cache.batch_size(),
        batch.batch_size(),
        "cache holds {} sequences, the batch has {}",
        cache.batch_size(),
        batch.batch_size()
    );
    let max_positions = cache.max_positions();
    // The farthest offsets the kernel looks up: key 0 from the last query (back), the last key from
    // the first new query (forward).
    let (mut back, mut forward) = (0, 0);
    for b in 0..batch.batch_size() {
        let (len, n) = (cache.lens()[b], batch.len_of(b));
        assert_eq!(batch.extent_of(b), n, "sequence {b} of a cached step is not right-padded");
        assert!(
            len + n <= max_positions,
            "sequence {b}: {len} cached + {n} new rows exceed the cache's {max_positions} positions"
        );
        back = back.max((len + n).saturating_sub(1));
        forward = forward.max(n.saturating_sub(1));
    }
    check_bias_reach(bias.as_ref(), heads, back, forward);

    for g0 in (0..batch.batch_size()).step_by(SEQ_GROUP) {
        let gn = SEQ_GROUP.min(batch.batch_size() - g0);
        let mut lens = [0usize; SEQ_GROUP];
        lens[..gn].copy_from_slice(&cache.lens()[g0..g0 + gn]);
        // Each sequence's own key/value slices, gathered so the sequences can run in parallel
        // (on the stack: no allocation per step).
        let mut slots: [Option<(&mut [f32], &mut [f32])>; SEQ_GROUP] = std::array::from_fn(|_| None);
        for (slot, kv) in slots.iter_mut().zip(cache.layer_mut(layer).skip(g0).take(gn)) {
            *slot = Some(kv);
        }
        let ctx_group = &mut ctx[g0 * seq * width..(g0 + gn) * seq * width];
        threads.for_each_chunk_pair(&mut slots[..gn], 1, ctx_group, seq * width, |i, slot, ctx_seq| {
            let b = g0 + i;
            let (keys, values) = slot[0].take().expect("one cache slot per sequence");
            let (len, n) = (lens[i], batch.len_of(b));
            let qkv_seq = &qkv[b * seq * stride..(b + 1) * seq * stride];
            for (r, row) in qkv_seq.chunks_exact(stride).take(n).enumerate() {
                let at = (len + r) * kv_width;
                keys[at..at + kv_width].copy_from_slice(&row[width..width + kv_width]);
                values[at..at + kv_width].copy_from_slice(&row[width + kv_width..]);
            }
            let (keys, values) = (&*keys, &*values);
            let total = len + n;
            let k = HeadRows { data: keys, stride: kv_width, offset: 0, rows: total };
            let v = HeadRows { data: values, stride: kv_width, offset: 0, rows: total };
            let mask = Mask { key_valid: None, causal: true, window, bias };
            let (real, padding) = ctx_seq.split_at_mut(n * width);
            padding.fill(0.0);
            let run = |r0: usize, out: &mut [f32]| {
                let q = HeadRows { data: qkv_seq, stride, offset: r0 * stride, rows: out.len() / width };
                attention_masked::<HD>(q, k, v, heads, kv_heads, len + r0, mask, sparse, scale, out);
            };
            if n <= QUERY_BLOCK {
                run(0, real);
            } else {
                let task_rows = query_rows_per_task(n, threads);
                threads.for_each_chunk(real, task_rows * width, |j, out| run(j * task_rows, out));
            }
        });
    }
}
