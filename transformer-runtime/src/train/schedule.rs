//! Learning-rate schedules as transformers' `get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup` build them: a torch
//! `LambdaLR` whose learning rate at optimizer step `t` (0-based: the first step is step 0) is
//! `base_lr * lambda(t)`. The first step of a warm-up therefore runs at learning rate 0.
//!
//! The factor is computed in `f64` with transformers' exact formulas (Python floats), so
//! [`Schedule::lr`] equals the learning rate torch hands to its optimizer; it is an `f64` because
//! AdamW derives its scalars from it in `f64` as torch does.

use std::f64::consts::PI;

/// What follows the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// The base learning rate from the end of the warm-up on.
    Constant,
    /// Linearly down to 0 at `total_steps`, and 0 after.
    Linear { total_steps: u64 },
    /// `0.5 * (1 + cos(pi * num_cycles * 2 * progress))`, `progress` going from 0 at the end of
    /// the warm-up to 1 at `total_steps` (transformers' default `num_cycles` 0.5: a half cosine
    /// down to 0). Past `total_steps` the formula goes on (with `num_cycles` 0.5, it rises again),
    /// as transformers' does.
    Cosine { total_steps: u64, num_cycles: f64 },
}

/// A learning rate schedule: a linear warm-up from 0 over `warmup_steps` steps, then `decay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The learning rate the factor multiplies (the optimizer's `lr`).
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub decay: Decay,
}

impl Schedule {
    /// `get_constant_schedule_with_warmup(optimizer, num_warmup_steps)`.
    pub fn constant_with_warmup(base_lr: f64, warmup_steps: u64) -> Self {
        Schedule { base_lr, warmup_steps, decay: Decay::Constant }
    }

    /// `get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps)`.
    pub fn linear_with_warmup(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        Schedule { base_lr, warmup_steps, decay: Decay::Linear { total_steps } }
    }

    /// `get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps)`, with
    /// its default `num_cycles=0.5`.
    pub fn cosine_with_warmup(base_lr: f64, warmup_steps: u64, total_steps: u64) -> Self {
        Self::cosine_with_warmup_cycles(base_lr, warmup_steps, total_steps, 0.5)
    }

    /// `get_cosine_schedule_with_warmup(..., num_cycles)`.
    pub fn cosine_with_warmup_cycles(
        base_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        num_cycles: f64,
    ) -> Self {
        Schedule { base_lr, warmup_steps, decay: Decay::Cosine { total_steps, num_cycles } }
    }

    /// The learning rate of optimizer step `step` (0-based): `base_lr * factor(step)`, as
    /// `LambdaLR` computes it.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }

    /// The multiplier of the base learning rate at step `step`: transformers' `lr_lambda`.
    pub fn factor(&self, step: u64) -> f64 {
        // Python ints: differences may be negative, and are exact.
        let (step, warmup) = (i128::from(step), i128::from(self.warmup_steps));
        if step < warmup {
            // float(current_step) / float(max(1, num_warmup_steps))
            return step as f64 / warmup.max(1) as f64;
        }
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear { total_steps } => {
                let total = i128::from(total_steps);
                // max(0.0, float(total - step) / float(max(1, total - warmup)))
                non_negative((total - step) as f64 / (total - warmup).max(1) as f64)
            }
            Decay::Cosine { total_steps, num_cycles } => {
                let total = i128::from(total_steps);
                let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                // max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
                non_negative(0.5 * (1.0 + (PI * num_cycles * 2.0 * progress).cos()))
            }
        }
    }
}

/// Python's `max(0.0, x)`.
fn non_negative(x: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}
