//! Softmax cross-entropy fused with its gradient, and the label shift of causal language
//! modelling.
//!
//! For logits `z` of one row and label `y`, `loss = logsumexp(z) − z[y]` and
//! `∂loss/∂z = softmax(z) − onehot(y)`. Both come out of one pass over the row (max, then the
//! exponentials, which are the softmax once divided by their sum), written over the logits: an LM
//! head's `[rows, vocab]` logits are the largest activation of a step, and their gradient is all
//! the backward needs of them. Rows labelled [`IGNORE_INDEX`] contribute no loss and a zero
//! gradient, as PyTorch's `CrossEntropyLoss(ignore_index=-100)` and every Hugging Face head do.

use crate::kernels::exp_f32;
use crate::{Error, Result, Threads};

/// The label of a position that is not trained on (padding, the prompt, unmasked tokens in masked
/// LM): PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

/// Rows per task.
const ROW_BLOCK: usize = 8;

/// How the per-row losses (and so the gradients) are combined.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduction {
    /// The mean over the labelled rows of this call (PyTorch's default `reduction="mean"`).
    Mean,
    /// The sum times a factor the caller chose: with gradient accumulation the mean is over every
    /// labelled row of the accumulated batch (`Scaled(1 / total)`, as transformers' Trainer divides
    /// by `num_items_in_batch`); `Scaled(1.0)` is `reduction="sum"`.
    Scaled(f32),
}

/// The loss of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropy {
    /// The reduced loss (0 when no row is labelled: no loss and no gradient, where PyTorch's mean
    /// would give 0/0 = NaN).
    pub loss: f32,
    /// Labelled (not ignored) rows.
    pub labelled: usize,
}

/// Cross-entropy of `logits` (`rows × classes`, row-major) against `labels` (one per row, in
/// `0..classes` or [`IGNORE_INDEX`]), overwriting the logits with the loss's gradient. Labels are
/// checked before anything is written: a label out of range is [`Error::LabelOutOfRange`] and a
/// count that is not one per row [`Error::LabelCountMismatch`], and the logits are left intact.
/// `row_loss` is the caller's scratch of one float per row (no allocation here).
pub fn softmax_cross_entropy(
    logits: &mut [f32],
    classes: usize,
    labels: &[i64],
    reduction: Reduction,
    row_loss: &mut [f32],
    threads: &Threads,
) -> Result<CrossEntropy> {
    assert!(
        classes > 0 && logits.len().is_multiple_of(classes),
        "cross-entropy: {} logits are not rows of {classes}",
        logits.len()
    );
    let rows = logits.len() / classes;
    check_labels(labels, rows, classes)?;
    assert_eq!(row_loss.len(), rows, "cross-entropy: scratch has {} floats for {rows} rows", row_loss.len());
    let labelled = labels.iter().filter(|&&y| y != IGNORE_INDEX).count();
    let scale = match reduction {
        Reduction::Mean if labelled == 0 => 0.0,
        Reduction::Mean => 1.0 / labelled as f32,
        Reduction::Scaled(s) => s,
    };
    threads.for_each_chunk_pair(logits, ROW_BLOCK * classes, row_loss, ROW_BLOCK, |block, logits, losses| {
        let labels = &labels[block * ROW_BLOCK..];
        for ((z, loss), &y) in logits.chunks_exact_mut(classes).zip(losses.iter_mut()).zip(labels) {
            *loss = row_gradient(z, y, scale);
        }
    });
    // Summed in row order on the calling thread: the loss does not depend on the thread count.
    let sum: f64 = row_loss.iter().map(|&l| f64::from(l)).sum();
    Ok(CrossEntropy { loss: (sum * f64::from(scale)) as f32, labelled })
}

/// Every label in range, one per row.
fn check_labels(labels: &[i64], rows: usize, classes: usize) -> Result<()> {
    if labels.len() != rows {
        return Err(Error::LabelCountMismatch { labels: labels.len(), rows });
    }
    match labels.iter().position(|&y| y != IGNORE_INDEX && !(0..classes as i64).contains(&y)) {
        Some(row) => Err(Error::LabelOutOfRange { row, label: labels[row], classes }),
        None => Ok(()),
    }
}

/// One row: returns its loss `logsumexp(z) − z[y]` (0 if ignored) and leaves
/// `scale·(softmax(z) − onehot(y))` in `z` (zeros if ignored).
fn row_gradient(z: &mut [f32], label: i64, scale: f32) -> f32 {
    if label == IGNORE_INDEX {
        z.fill(0.0);
        return 0.0;
    }
    let y = label as usize;
    let target = z[y];
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The sum of a 50k-entry row in f64: its rounding would otherwise show in the loss.
    let mut sum = 0.0f64;
    for v in z.iter_mut() {
        *v = exp_f32(*v - max);
        sum += f64::from(*v);
    }
    let loss = (f64::from(max) + sum.ln() - f64::from(target)) as f32;
    let k = scale / sum as f32;
    for v in z.iter_mut() {
        *v *= k;
    }
    z[y] -= scale;
    loss
}

/// Next-token labels for causal LM, as Hugging Face's causal-LM heads derive them from `labels =
/// input_ids` (they shift inside the loss): the label of position `i` is the id at `i + 1` of the
/// same sequence, the last position of every sequence is [`IGNORE_INDEX`], and so is every
/// position whose next token is padding (`attention_mask` 0 there). `ids` (and the mask) are whole
/// sequences of `seq` tokens; `labels` receives one label per id.
pub fn next_token_labels(
    ids: &[u32],
    attention_mask: Option<&[bool]>,
    seq: usize,
    labels: &mut [i64],
) -> Result<()> {
    if labels.len() != ids.len() {
        return Err(Error::LabelCountMismatch { labels: labels.len(), rows: ids.len() });
    }
    if let Some(mask) = attention_mask {
        if mask.len() != ids.len() {
            return Err(Error::LabelCountMismatch { labels: mask.len(), rows: ids.len() });
        }
    }
    assert!(
        seq > 0 && ids.len().is_multiple_of(seq),
        "next_token_labels: {} ids are not sequences of {seq}",
        ids.len()
    );
    for (start, out) in (0..ids.len()).step_by(seq).zip(labels.chunks_exact_mut(seq)) {
        for (i, label) in out.iter_mut().enumerate() {
            let next = start + i + 1;
            let visible = i + 1 < seq && attention_mask.is_none_or(|m| m[next]);
            *label = if visible { i64::from(ids[next]) } else { IGNORE_INDEX };
        }
    }
    Ok(())
}
