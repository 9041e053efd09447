//! Training ops over a whole [`Batch`], as the generated trainers call them: self-attention over
//! fused `[Q | K | V]` rows with each sequence's padding mask, rotary positions and residual sums. Each mirrors the inference layer it differentiates (`layers::attention`'s
//! batch loop, [`Rope::apply`], the embedding gathers), so a trainer's forward computes what the
//! model's forward computes.

use super::attention::{attention_backward, attention_backward_scratch_len, attention_train, ProbDropout};
use super::rope::rope_heads_backward;
use super::Store;
use crate::kernels::attention::{HeadRows, Mask};
use crate::layers::rope::Rope;
use crate::{Batch, Threads};

/// The shape of a self-attention: heads, key/value heads (grouped-query when fewer), the causal
/// limit, a sliding window and the score scale.
#[derive(Clone, Copy, Debug)]
pub struct SelfAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub causal: bool,
    pub window: Option<usize>,
    pub scale: f32,
}

impl SelfAttention {
    fn widths(&self, head_dim: usize) -> (usize, usize, usize) {
        let (width, kv_width) = (self.heads * head_dim, self.kv_heads * head_dim);
        (width, kv_width, width + 2 * kv_width)
    }

    fn mask<'a>(&self, key_valid: &'a [bool]) -> Mask<'a> {
        Mask { key_valid: Some(key_valid), causal: self.causal, window: self.window, bias: None }
    }
}

/// Floats of the work buffer [`self_attention_backward`] needs for `batch`.
pub fn self_attention_work_len(batch: &Batch, attention: &SelfAttention, head_dim: usize) -> usize {
    let (_, _, stride) = attention.widths(head_dim);
    batch.batch_size() * (batch.seq_len() * stride + attention_backward_scratch_len(head_dim))
}

/// The training forward of self-attention over `qkv` (`batch.rows()` rows of
/// `[Q (heads·HD) | K (kv_heads·HD) | V (kv_heads·HD)]`): `ctx` gets each real row's context
/// (padding rows zeros, as the inference layer writes them) and `lse` (`[rows, heads]`) what the
/// backward needs. Query `r` of a sequence sees its real keys (`j ≤ r` when causal, inside the
/// window). `dropout`, if any, drops probabilities (drawn per sequence). Parallel over sequences.
pub fn self_attention_train<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    attention: &SelfAttention,
    dropout: Option<ProbDropout>,
    ctx: &mut [f32],
    lse: &mut [f32],
    threads: &Threads,
) {
    let (width, kv_width, stride) = attention.widths(HD);
    let (seq, heads) = (batch.seq_len(), attention.heads);
    assert_eq!(qkv.len(), batch.rows() * stride, "qkv does not fit the batch");
    assert_eq!(ctx.len(), batch.rows() * width, "context does not fit the batch");
    assert_eq!(lse.len(), batch.rows() * heads, "lse does not fit the batch");
    threads.for_each_chunk_pair(ctx, seq * width, lse, seq * heads, |b, ctx, lse| {
        let qkv = &qkv[b * seq * stride..(b + 1) * seq * stride];
        let extent = batch.extent_of(b);
        let view = |offset, rows| HeadRows { data: qkv, stride, offset, rows };
        let (real, padding) = ctx.split_at_mut(extent * width);
        padding.fill(0.0);
        lse[extent * heads..].fill(0.0);
        let mask = attention.mask(&batch.mask_of(b)[..extent]);
        attention_train::<HD>(
            view(0, extent),
            view(width, extent),
            view(width + kv_width, extent),
            heads,
            attention.kv_heads,
            mask,
            attention.scale,
            dropout.map(|d| d.for_sequence(b, heads, seq)),
            real,
            &mut lse[..extent * heads],
        );
    });
}

/// The backward of [`self_attention_train`]: from the context's gradient `d_ctx`, the gradient of
/// `qkv` written into (or added to, per `store`) `d_qkv`, same layout. Padding rows get none.
/// `work` holds [`self_attention_work_len`] floats; `dropout` is the forward's. Parallel over
/// sequences; nothing allocated.
#[allow(clippy::too_many_arguments)]
pub fn self_attention_backward<const HD: usize>(
    qkv: &[f32],
    ctx: &[f32],
    lse: &[f32],
    d_ctx: &[f32],
    batch: &Batch,
    attention: &SelfAttention,
    dropout: Option<ProbDropout>,
    d_qkv: &mut [f32],
    store: Store,
    work: &mut [f32],
    threads: &Threads,
) {
    let (width, kv_width, stride) = attention.widths(HD);
    let (seq, heads) = (batch.seq_len(), attention.heads);
    assert_eq!(d_qkv.len(), batch.rows() * stride, "d_qkv does not fit the batch");
    assert_eq!(d_ctx.len(), batch.rows() * width, "d_ctx does not fit the batch");
    assert_eq!(work.len(), self_attention_work_len(batch, attention, HD), "attention backward work buffer");
    let per_sequence = seq * stride + attention_backward_scratch_len(HD);
    threads.for_each_chunk_pair(d_qkv, seq * stride, work, per_sequence, |b, d_qkv, work| {
        let rows = b * seq..(b + 1) * seq;
        let qkv_seq = &qkv[rows.start * stride..rows.end * stride];
        let extent = batch.extent_of(b);
        let view = |offset, rows| HeadRows { data: qkv_seq, stride, offset, rows };
        let (grads, scratch) = work.split_at_mut(seq * stride);
        let (dq, rest) = grads[..extent * stride].split_at_mut(extent * width);
        let (dk, dv) = rest.split_at_mut(extent * kv_width);
        attention_backward::<HD>(
            view(0, extent),
            view(width, extent),
            view(width + kv_width, extent),
            &ctx[rows.start * width..][..extent * width],
            &d_ctx[rows.start * width..][..extent * width],
            &lse[rows.start * heads..][..extent * heads],
            heads,
            attention.kv_heads,
            attention.mask(&batch.mask_of(b)[..extent]),
            attention.scale,
            dropout.map(|d| d.for_sequence(b, heads, seq)),
            dq,
            dk,
            dv,
            scratch,
        );
        for (r, row) in d_qkv.chunks_exact_mut(stride).enumerate() {
            if r >= extent {
                if store == Store::Overwrite {
                    row.fill(0.0);
                }
                continue;
            }
            let (row_q, row_kv) = row.split_at_mut(width);
            let (row_k, row_v) = row_kv.split_at_mut(kv_width);
            store.put_slice(row_q, &dq[r * width..][..width]);
            store.put_slice(row_k, &dk[r * kv_width..][..kv_width]);
            store.put_slice(row_v, &dv[r * kv_width..][..kv_width]);
        }
    });
}

/// The backward of [`Rope::apply`] (positions from `batch`, no cache): rotates each row's query
/// and key head gradients back, in place. `d_qkv` is laid out as the forward's `qkv`.
pub fn rope_backward(rope: &Rope, d_qkv: &mut [f32], batch: &Batch, heads: usize, kv_heads: usize) {
    let hd = rope.head_dim();
    let stride = (heads + 2 * kv_heads) * hd;
    assert_eq!(d_qkv.len(), batch.rows() * stride, "rope backward: d_qkv does not fit the batch");
    if stride == 0 {
        return;
    }
    for (r, row) in d_qkv.chunks_exact_mut(stride).enumerate() {
        let pos = batch.position(r);
        let (cos, sin) = (rope.cos_at(pos), rope.sin_at(pos));
        rope_heads_backward(&mut row[..(heads + kv_heads) * hd], hd, cos, sin);
    }
}

/// `out = a + b`, row by row (a residual sum kept apart from its operands).
pub fn add_into<const D: usize>(a: &[[f32; D]], b: &[[f32; D]], out: &mut [[f32; D]]) {
    assert!(
        a.len() == b.len() && b.len() == out.len(),
        "add: {} + {} rows into {}",
        a.len(),
        b.len(),
        out.len()
    );
    for ((o, x), y) in out.as_flattened_mut().iter_mut().zip(a.as_flattened()).zip(b.as_flattened()) {
        *o = x + y;
    }
}
