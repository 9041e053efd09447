//! Multi-head self-attention over a padded batch: the fused kernel run for every
//! (sequence, block of query rows), in parallel.

use crate::kernels::attention::attention;
use crate::{Batch, Threads};

/// Query rows per task: each task streams all of its sequence's keys once per block.
const QUERY_BLOCK: usize = 32;

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
    // Outer chunks are whole sequences, so a query block never straddles two of them; the
    // nested loop splits a long sequence into blocks so even batch 1 keeps every core busy.
    threads.for_each_chunk(ctx, seq * width, |b, ctx_seq| {
        let qkv_seq = &qkv[b * seq * 3 * width..(b + 1) * seq * 3 * width];
        let mask = batch.mask_of(b);
        if blocks_per_seq <= 1 {
            attention::<HD>(qkv_seq, seq, heads, mask, 0, scale, ctx_seq);
        } else {
            threads.for_each_chunk(ctx_seq, QUERY_BLOCK * width, |q, out| {
                attention::<HD>(qkv_seq, seq, heads, mask, q * QUERY_BLOCK, scale, out);
            });
        }
    });
}
