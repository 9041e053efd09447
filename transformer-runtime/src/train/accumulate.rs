//! Gradient accumulation: several micro-batches' gradients combined into the gradient of one
//! larger batch, for batches that do not fit in memory at once.
//!
//! Each micro-batch's loss is a mean over its own labelled rows, so adding the micro-batches'
//! gradients as they are would weigh a short micro-batch like a long one (and dividing by their
//! count, as a fixed `loss / accumulation_steps` does, only fixes that when every micro-batch has
//! the same number of labels). The accumulator instead adds each gradient times its labelled
//! count (the gradient of the micro-batch's *summed* loss) and divides by the total at the end:
//! the result is the gradient of the mean loss over every labelled row of the whole batch, the
//! same as one pass over it.

use crate::train::loss::CrossEntropy;
use crate::{Error, Result};

/// The running sum of micro-batches' gradients, weighted by their labelled rows.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    /// Σ labelled_i · grad_i (sized at the first micro-batch, then reused).
    sum: Vec<f32>,
    /// Σ labelled_i · loss_i.
    loss_sum: f64,
    labelled: usize,
    micro_batches: usize,
}

impl Accumulator {
    /// Micro-batches added since the last [`Accumulator::finish`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Adds one micro-batch: `grads` are the gradients of its mean loss `loss.loss` over
    /// `loss.labelled` rows. Panics if `grads` is not as long as the earlier micro-batches'.
    pub fn add(&mut self, grads: &[f32], loss: CrossEntropy) {
        if self.micro_batches == 0 {
            self.sum.clear();
            self.sum.resize(grads.len(), 0.0);
        }
        assert_eq!(grads.len(), self.sum.len(), "accumulated gradients change length");
        let weight = loss.labelled as f32;
        for (s, &g) in self.sum.iter_mut().zip(grads) {
            *s += weight * g;
        }
        self.loss_sum += f64::from(loss.loss) * loss.labelled as f64;
        self.labelled += loss.labelled;
        self.micro_batches += 1;
    }

    /// Writes the whole batch's gradient (of its mean loss over every labelled row) into `grads`
    /// and returns that loss, then starts over. A batch with no labelled row has zero gradient and
    /// loss 0. [`Error::NothingAccumulated`] when no micro-batch was added.
    pub fn finish(&mut self, grads: &mut [f32]) -> Result<CrossEntropy> {
        if self.micro_batches == 0 {
            return Err(Error::NothingAccumulated);
        }
        assert_eq!(grads.len(), self.sum.len(), "accumulated gradients change length");
        let scale = if self.labelled == 0 { 0.0 } else { 1.0 / self.labelled as f32 };
        for (g, &s) in grads.iter_mut().zip(&self.sum) {
            *g = s * scale;
        }
        let loss = if self.labelled == 0 { 0.0 } else { (self.loss_sum / self.labelled as f64) as f32 };
        let result = CrossEntropy { loss, labelled: self.labelled };
        (self.loss_sum, self.labelled, self.micro_batches) = (0.0, 0, 0);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_are_weighted_by_their_labels() {
        // Two rows of loss 1 and 3 with gradient 2 and 6 in one micro-batch (mean loss 2, mean
        // gradient 4), one row of loss 5 and gradient 10 in another: over the three rows the mean
        // loss is 3 and the mean gradient 6, not the micro-batches' plain average (3.5, 7).
        let mut acc = Accumulator::default();
        acc.add(&[4.0], CrossEntropy { loss: 2.0, labelled: 2 });
        acc.add(&[10.0], CrossEntropy { loss: 5.0, labelled: 1 });
        assert_eq!(acc.micro_batches(), 2);
        let mut grads = [0.0];
        let loss = acc.finish(&mut grads).unwrap();
        assert_eq!((grads[0], loss.loss, loss.labelled), (6.0, 3.0, 3));
        assert_eq!(acc.micro_batches(), 0);
        assert!(matches!(acc.finish(&mut grads), Err(Error::NothingAccumulated)));
    }

    #[test]
    fn unlabelled_micro_batches_give_zero() {
        let mut acc = Accumulator::default();
        acc.add(&[0.0, 0.0], CrossEntropy { loss: 0.0, labelled: 0 });
        let mut grads = [1.0, 1.0];
        let loss = acc.finish(&mut grads).unwrap();
        assert_eq!((grads, loss.loss, loss.labelled), ([0.0, 0.0], 0.0, 0));
    }
}
