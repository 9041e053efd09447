//! Training: the backward pass of every op the forward runs, the losses, and the optimizer.
//!
//! These are the building blocks a generated training step calls, as the forward pass calls
//! [`crate::kernels`] and [`crate::layers`]. Conventions, shared by every function here:
//!
//! * Values are row-major `[rows, width]` slices, as in the forward pass; weights are in their
//!   checkpoint's `nn.Linear` layout `[out, in]`.
//! * **Parameter gradients accumulate** (`+=`) into the caller's buffers, so a weight used twice
//!   (a head tied to the token embeddings) and gradient accumulation over micro-batches need
//!   nothing special; the caller zeroes them once per optimizer step.
//! * **Activation gradients are written** (overwritten) unless a function says it accumulates.
//! * What the backward needs from the forward (a norm's mean and reciprocal standard deviation,
//!   an attention row's log-sum-exp, an activation's input) is saved by a `_train` forward twin
//!   into caller-provided buffers; nothing here allocates.
//!
//! Every op has a parity test against PyTorch's autograd (`scripts/reference/train_*.py`,
//! fixtures under `tests/fixtures/train/`) and the optimized kernels a property test against a
//! naive twin.

pub mod accumulate;
pub mod activation;
pub mod attention;
pub mod batch;
pub mod dropout;
pub mod embedding;
pub mod linear;
pub mod loss;
pub mod mlm;
pub mod norm;
pub mod objective;
pub mod optim;
pub mod params;
pub mod pooling;
pub mod rng;
pub mod rope;
pub mod schedule;

/// How a backward function stores an activation gradient: over what the buffer holds, or added
/// to it. A value read by two ops (the residual stream: by the sublayer and by the skip path)
/// receives its gradient from both; the second writer adds instead of making a separate pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `dx = …`
    Overwrite,
    /// `dx += …`
    Accumulate,
}

impl Store {
    #[inline(always)]
    pub(crate) fn put(self, slot: &mut f32, value: f32) {
        match self {
            Store::Overwrite => *slot = value,
            Store::Accumulate => *slot += value,
        }
    }

    /// [`Self::put`] element by element: `to (+)= from`.
    pub fn put_slice(self, to: &mut [f32], from: &[f32]) {
        assert_eq!(to.len(), from.len(), "gradient of {} values into {}", from.len(), to.len());
        match self {
            Store::Overwrite => to.copy_from_slice(from),
            Store::Accumulate => to.iter_mut().zip(from).for_each(|(t, f)| *t += f),
        }
    }

    /// `to (+)= factor · from`.
    pub fn put_scaled(self, to: &mut [f32], from: &[f32], factor: f32) {
        assert_eq!(to.len(), from.len(), "gradient of {} values into {}", from.len(), to.len());
        for (t, &f) in to.iter_mut().zip(from) {
            self.put(t, factor * f);
        }
    }
}

/// What one optimizer step of a generated trainer did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step's number, from 1.
    pub step: u64,
    /// The batch's loss before the update.
    pub loss: f32,
    /// Labelled positions the loss averaged over.
    pub labelled: usize,
    /// The gradients' global L2 norm before clipping.
    pub grad_norm: f32,
    /// The learning rate used.
    pub lr: f64,
}
