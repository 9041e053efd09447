//! Sentence embeddings from hidden states: masked mean pooling then L2 normalisation
//! (sentence-transformers' `Pooling(mean)` + `Normalize`).

use crate::kernels::pooling::{l2_normalize, mean_pool};
use crate::Batch;

/// `out[b] = normalize(mean of hidden rows of sequence b where the mask is set)`.
pub fn mean_pool_normalize<const D: usize>(hidden: &[[f32; D]], batch: &Batch, out: &mut [[f32; D]]) {
    assert_eq!(hidden.len(), batch.rows(), "hidden states do not fit the batch");
    assert_eq!(out.len(), batch.batch_size(), "one output row per sequence");
    let seq = batch.seq_len();
    for (b, o) in out.iter_mut().enumerate() {
        mean_pool(&hidden[b * seq..(b + 1) * seq], batch.mask_of(b), o);
        l2_normalize(o);
    }
}
