//! Objectives over pooled outputs: sentence-transformers' `MultipleNegativesRankingLoss` (the
//! in-batch-negatives contrastive loss of sentence embeddings) and what a sequence-classification
//! head needs beyond [`softmax_cross_entropy`].
//!
//! **Ranking loss.** For anchors `a_i` (`B` rows) and candidates `c_j` (`N ≥ B` rows: anchor `i`'s
//! positive is `c_i`, any rows after the first `B` are hard negatives shared by every anchor):
//!
//! ```text
//! S_ij  = scale · â_i·ĉ_j              â = a / max(‖a‖, 1e-12)   (util.cos_sim)
//! loss  = (1/B) Σ_i [logsumexp_j S_ij − S_ii]                     (CrossEntropyLoss, label i)
//! G_ij  = (softmax_j(S_i)_j − δ_ij) / B                           (∂loss/∂S)
//! dâ_i  = scale Σ_j G_ij ĉ_j          dĉ_j = scale Σ_i G_ij â_i
//! da    = (dâ − â(â·dâ)) / ‖a‖        (dâ / 1e-12 when ‖a‖ < 1e-12; likewise dc)
//! ```
//!
//! Everything is computed in `f64` from the `f32` embeddings, the loss and gradients rounded once
//! at the end: it is `O(B·N·D)`, nothing next to the encoder that produced the embeddings, and
//! `scale` (20) would otherwise multiply the rounding of every cosine. Scores rows and gradient
//! rows are split across threads; the loss is summed in row order on the calling thread, so
//! nothing depends on the thread count.
//!
//! **Sequence classification.** A pooled classifier's loss is [`softmax_cross_entropy`] over its
//! logits; its backward is then [`linear_backward`] (the classifier), for BERT's pooler
//! [`tanh_backward`] and [`linear_backward`] again (`tanh(dense(h_cls))`), and
//! [`pool_backward`] into the hidden states. Only the tanh was missing.
//!
//! [`softmax_cross_entropy`]: crate::train::loss::softmax_cross_entropy
//! [`linear_backward`]: crate::train::linear::linear_backward
//! [`pool_backward`]: crate::train::pooling::pool_backward

use crate::train::pooling::{normalize_row_backward, NORM_EPS};
use crate::train::Store;
use crate::{Error, Result, Threads};

/// sentence-transformers' default `scale` of `MultipleNegativesRankingLoss`.
pub const RANKING_SCALE: f32 = 20.0;

/// Rows per task.
const ROW_BLOCK: usize = 16;

/// `f64`s of scratch [`multiple_negatives_ranking_loss`] needs: the `anchors × candidates`
/// scores and one norm per row.
pub fn ranking_scratch_len(anchors: usize, candidates: usize) -> usize {
    anchors * candidates + anchors + candidates
}

/// sentence-transformers' `MultipleNegativesRankingLoss(model, scale, similarity_fct=cos_sim)` of
/// `anchors` against `candidates` (each anchor's positive, in order, then any hard negatives),
/// and its gradient with respect to both, stored in `d_anchors` and `d_candidates` as `store`
/// says. Returns the loss (the mean over anchors).
///
/// Errors, before anything is written: [`Error::RankingCandidates`] for no anchors or fewer
/// candidates than anchors, [`Error::BadTrainOption`] for a scale that is not finite. `scratch`
/// is [`ranking_scratch_len`] `f64`s. Panics on inconsistent gradient or scratch lengths.
#[allow(clippy::too_many_arguments)]
pub fn multiple_negatives_ranking_loss<const D: usize>(
    anchors: &[[f32; D]],
    candidates: &[[f32; D]],
    scale: f32,
    d_anchors: &mut [[f32; D]],
    d_candidates: &mut [[f32; D]],
    store: Store,
    scratch: &mut [f64],
    threads: &Threads,
) -> Result<f32> {
    let (b, n) = (anchors.len(), candidates.len());
    if b == 0 || n < b {
        return Err(Error::RankingCandidates { anchors: b, candidates: n });
    }
    if !scale.is_finite() {
        return Err(Error::BadTrainOption {
            option: "the ranking loss's scale",
            value: f64::from(scale),
            expected: "a finite value",
        });
    }
    assert_eq!(d_anchors.len(), b, "ranking loss: {} anchor gradient rows for {b} anchors", d_anchors.len());
    assert_eq!(d_candidates.len(), n, "ranking loss: {} candidate gradient rows for {n}", d_candidates.len());
    assert_eq!(scratch.len(), ranking_scratch_len(b, n), "ranking loss: scratch is not ranking_scratch_len");
    let scale = f64::from(scale);
    let (grad, norms) = scratch.split_at_mut(b * n);
    for (norm, row) in norms.iter_mut().zip(anchors.iter().chain(candidates)) {
        *norm = dot(row, row).sqrt();
    }
    let (norm_a, norm_c) = norms.split_at(b);
    let inv = |norm: f64| 1.0 / norm.max(NORM_EPS);

    // S = scale · Â·Ĉᵀ, a block of anchor rows per task.
    threads.for_each_chunk(grad, ROW_BLOCK * n, |block, s| {
        for (r, s) in s.chunks_exact_mut(n).enumerate() {
            let i = block * ROW_BLOCK + r;
            for (j, s) in s.iter_mut().enumerate() {
                *s = scale * dot(&anchors[i], &candidates[j]) * inv(norm_a[i]) * inv(norm_c[j]);
            }
        }
    });

    // Cross-entropy with label i, each row's scores replaced by G_i.
    let mut sum = 0.0;
    for (i, s) in grad.chunks_exact_mut(n).enumerate() {
        let target = s[i];
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for v in s.iter_mut() {
            *v = (*v - max).exp();
            total += *v;
        }
        sum += max + total.ln() - target;
        for v in s.iter_mut() {
            *v /= total * b as f64;
        }
        s[i] -= 1.0 / b as f64;
    }
    let grad = &*grad;

    // dâ_i = scale Σ_j G_ij ĉ_j, then through the normalisation.
    threads.for_each_chunk(d_anchors, ROW_BLOCK, |block, rows| {
        for (r, out) in rows.iter_mut().enumerate() {
            let i = block * ROW_BLOCK + r;
            let mut d_hat = [0.0f64; D];
            for (j, c) in candidates.iter().enumerate() {
                axpy(&mut d_hat, scale * grad[i * n + j] * inv(norm_c[j]), c);
            }
            normalize_row_backward(&anchors[i], norm_a[i], &d_hat, out, store);
        }
    });
    // dĉ_j = scale Σ_i G_ij â_i.
    threads.for_each_chunk(d_candidates, ROW_BLOCK, |block, rows| {
        for (r, out) in rows.iter_mut().enumerate() {
            let j = block * ROW_BLOCK + r;
            let mut d_hat = [0.0f64; D];
            for (i, a) in anchors.iter().enumerate() {
                axpy(&mut d_hat, scale * grad[i * n + j] * inv(norm_a[i]), a);
            }
            normalize_row_backward(&candidates[j], norm_c[j], &d_hat, out, store);
        }
    });
    Ok((sum / b as f64) as f32)
}

/// `grad[i] *= 1 − y[i]²`: the gradient through `y = tanh(x)`, from its output, in place (BERT's
/// pooler `tanh(dense(h_cls))`, whose output the classifier reads anyway). Panics if the lengths
/// differ.
pub fn tanh_backward(y: &[f32], grad: &mut [f32]) {
    assert_eq!(y.len(), grad.len(), "tanh backward: {} outputs but {} gradients", y.len(), grad.len());
    for (g, &y) in grad.iter_mut().zip(y) {
        *g *= 1.0 - y * y;
    }
}

/// `Σ x_k·y_k` in `f64`, in eight lanes (vectorisable, and a smaller rounding error).
#[inline]
fn dot<const D: usize>(x: &[f32; D], y: &[f32; D]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail =
        xs.remainder().iter().zip(ys.remainder()).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>();
    for (x, y) in xs.zip(ys) {
        for k in 0..8 {
            acc[k] += f64::from(x[k]) * f64::from(y[k]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `acc += k·x`.
#[inline]
fn axpy<const D: usize>(acc: &mut [f64; D], k: f64, x: &[f32; D]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += k * f64::from(v);
    }
}
