//! Sentence embeddings from hidden states: masked mean pooling then L2 normalisation
//! (sentence-transformers' `Pooling(mean)` + `Normalize`).

use crate::kernels::pooling::{l2_normalize, max_pool, mean_pool};
use crate::Batch;

/// `out[b] = normalize(mean of hidden rows of sequence b where the mask is set)`.
pub fn mean_pool_normalize<const D: usize>(hidden: &[[f32; D]], batch: &Batch, out: &mut [[f32; D]]) {
    pool(hidden, batch, Pooling::Mean, out);
    normalize_rows(out);
}

/// How [`pool`] reduces one sequence's rows (a composed encoder's `mean_pool`, `max_pool`, `cls`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pooling {
    /// The mean of the real (unmasked) rows.
    Mean,
    /// The element-wise maximum of the real rows.
    Max,
    /// The first real row (the `[CLS]` token of a right-padded batch: row 0).
    Cls,
}

/// `out[b]` = sequence `b`'s rows of `hidden` pooled by `pooling`, padding excluded.
pub fn pool<const D: usize>(hidden: &[[f32; D]], batch: &Batch, pooling: Pooling, out: &mut [[f32; D]]) {
    assert_eq!(hidden.len(), batch.rows(), "hidden states do not fit the batch");
    assert_eq!(out.len(), batch.batch_size(), "one output row per sequence");
    let seq = batch.seq_len();
    for (b, o) in out.iter_mut().enumerate() {
        let (rows, mask) = (&hidden[b * seq..(b + 1) * seq], batch.mask_of(b));
        match pooling {
            Pooling::Mean => mean_pool(rows, mask, o),
            Pooling::Max => max_pool(rows, mask, o),
            // A batch has no empty sequence (`Error::EmptySequence`), so some row is real.
            Pooling::Cls => *o = rows[mask.iter().position(|&m| m).unwrap_or(0)],
        }
    }
}

/// Each row divided by its L2 norm (PyTorch's `F.normalize`: `v / max(‖v‖, 1e-12)`).
pub fn normalize_rows<const D: usize>(rows: &mut [[f32; D]]) {
    for row in rows {
        l2_normalize(row);
    }
}
