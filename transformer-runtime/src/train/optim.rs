//! AdamW as `torch.optim.AdamW`, global-norm gradient clipping as
//! `torch.nn.utils.clip_grad_norm_`, and the optimizer state saved to and resumed from safetensors.
//!
//! Layout, as llm.c's `gpt2_update`: a model's parameters live in one flat `f32` buffer, their
//! gradients in a second of the same layout, and [`AdamW`] keeps its two moments in two more,
//! allocated once by [`AdamW::new`]. The layout is the concatenation of the parameters in the
//! order they are registered ([`ParamSpec`]); [`AdamW::range`] gives each one's place. A training
//! step then reads
//!
//! ```ignore
//! let norm = clip_grad_norm(&mut grads, 1.0).finite()?;
//! optimizer.step(&mut params, &grads, schedule.lr(optimizer.step_count()))?;
//! grads.fill(0.0);
//! ```
//!
//! and [`AdamW::step_tensors`] / [`clip_grad_norm_tensors`] do the same over one slice per
//! parameter, checking each against its registered length.
//!
//! Each parameter belongs to a group ([`GroupConfig`]) with its own weight decay and learning-rate
//! scale, so that norms and biases can be excluded from weight decay as Hugging Face's `Trainer`
//! does ([`AdamWConfig::DECAY`], [`AdamWConfig::NO_DECAY`]).
//!
//! The arithmetic follows torch's single-tensor implementation (the one it runs on CPU) operation
//! by operation: scalars in `f64` as Python computes them, rounded to `f32` where torch hands a
//! Python float to a float32 kernel, element-wise work in `f32` with the fused multiply-adds of
//! torch's kernels. Without clipping, the parameters and moments equal torch's bit for bit
//! (`tests/train_optim.rs`).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde::{Deserialize, Serialize};

/// torch's default learning rate for AdamW, the base a [`super::schedule::Schedule`] scales.
pub const DEFAULT_LR: f64 = 1e-3;

/// The metadata key of the step count in a saved state.
const STEP_KEY: &str = "step";
/// The metadata key of the [`AdamWConfig`] (as JSON) in a saved state.
const CONFIG_KEY: &str = "config";
/// The metadata key naming the format of a saved state.
const FORMAT_KEY: &str = "format";
const FORMAT: &str = "transformer-runtime/adamw/1";

/// What can go wrong configuring, stepping, clipping, saving or resuming the optimizer, with the
/// offending parameter or tensor named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyperparameter outside the range torch accepts.
    #[error("AdamW config: {what} is {value}, expected {expected}")]
    InvalidConfig { what: String, value: f64, expected: &'static str },

    /// A parameter registered in a group the config does not have.
    #[error("parameter `{name}` is in group {group}, but the config has {groups} groups (0..{groups})")]
    UnknownGroup { name: String, group: usize, groups: usize },

    /// Two parameters registered under one name (their saved moments would collide).
    #[error("parameter `{name}` is registered twice: parameter names must be unique")]
    DuplicateParam { name: String },

    /// A learning rate that is negative, NaN or infinite.
    #[error("the learning rate is {lr}, expected a finite value >= 0")]
    InvalidLr { lr: f64 },

    /// A flat parameter or gradient buffer whose length is not the registered total.
    #[error("the flat {what} buffer has {found} values, expected {expected} (the sum of the registered parameters' lengths)")]
    FlatLength { what: &'static str, expected: usize, found: usize },

    /// A different number of parameter or gradient tensors than registered parameters.
    #[error("{found} {what} tensors were given, expected {expected} (one per registered parameter)")]
    TensorCount { what: &'static str, expected: usize, found: usize },

    /// A parameter or gradient tensor whose length is not its parameter's registered length.
    #[error("the {what} of parameter `{name}` has {found} values, expected {expected}")]
    ParamLength { what: &'static str, name: String, expected: usize, found: usize },

    /// The total gradient norm is NaN or infinite: some gradient holds a NaN or an infinity.
    #[error("the total gradient norm is {norm}: a gradient holds a NaN or an infinity (the gradients were left unscaled)")]
    NonFiniteGradNorm { norm: f32 },

    /// The saved state could not be read or written.
    #[error("optimizer state {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// The saved state is not a safetensors file.
    #[error("optimizer state: {0}")]
    Safetensors(#[from] SafeTensorError),

    /// The saved state lacks the step count or the config, or holds one that does not parse.
    #[error("optimizer state metadata `{key}`: {reason}")]
    Metadata { key: &'static str, reason: String },

    /// The saved state lacks a moment of a registered parameter.
    #[error("optimizer state has no tensor `{name}`, a moment of a registered parameter: was it saved for another model?")]
    MissingTensor { name: String },

    /// The saved state holds a tensor that belongs to no registered parameter.
    #[error("optimizer state has a tensor `{name}` that belongs to no registered parameter: was it saved for another model?")]
    UnexpectedTensor { name: String },

    /// A saved moment whose dtype or shape is not its parameter's.
    #[error("optimizer state tensor `{name}` is {dtype:?} {shape:?}, expected F32 [{expected}]")]
    TensorShape { name: String, dtype: Dtype, shape: Vec<usize>, expected: usize },
}

/// The hyperparameters of one parameter group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    /// Decoupled weight decay: each step first scales a parameter by `1 - lr * weight_decay`.
    pub weight_decay: f64,
    /// The group's learning rate is the scheduled learning rate times this (1 for torch's
    /// behaviour).
    pub lr_scale: f64,
}

impl GroupConfig {
    /// A group with this weight decay and the scheduled learning rate.
    pub fn with_weight_decay(weight_decay: f64) -> Self {
        GroupConfig { weight_decay, lr_scale: 1.0 }
    }
}

/// AdamW's hyperparameters, but the learning rate, which each step is given (from a schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// The decay rates of the first and second moments.
    pub betas: (f64, f64),
    /// Added to the bias-corrected root of the second moment.
    pub eps: f64,
    /// The parameter groups, indexed by [`ParamSpec::group`].
    pub groups: Vec<GroupConfig>,
}

impl AdamWConfig {
    /// The group of the parameters that decay (by default): matrices and embeddings.
    pub const DECAY: usize = 0;
    /// The group of the parameters that do not decay (by default): norms and biases.
    pub const NO_DECAY: usize = 1;

    /// torch's betas and eps with the two groups [`Self::DECAY`] (this weight decay) and
    /// [`Self::NO_DECAY`] (none), as Hugging Face's `Trainer` builds them.
    pub fn with_weight_decay(weight_decay: f64) -> Self {
        AdamWConfig {
            betas: (0.9, 0.999),
            eps: 1e-8,
            groups: vec![GroupConfig::with_weight_decay(weight_decay), GroupConfig::with_weight_decay(0.0)],
        }
    }

    /// Every value in the range torch's `AdamW` accepts, and at least one group.
    fn validate(&self) -> Result<(), OptimError> {
        let check = |what: String, value: f64, ok: bool, expected| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(OptimError::InvalidConfig { what, value, expected })
            }
        };
        let (beta1, beta2) = self.betas;
        check("beta1".into(), beta1, (0.0..1.0).contains(&beta1), "a value in [0, 1)")?;
        check("beta2".into(), beta2, (0.0..1.0).contains(&beta2), "a value in [0, 1)")?;
        check("eps".into(), self.eps, self.eps >= 0.0, "a finite value >= 0")?;
        check("the number of groups".into(), 0.0, !self.groups.is_empty(), "at least one group")?;
        for (i, group) in self.groups.iter().enumerate() {
            let wd = group.weight_decay;
            check(format!("group {i}'s weight_decay"), wd, wd >= 0.0, "a finite value >= 0")?;
            let scale = group.lr_scale;
            check(format!("group {i}'s lr_scale"), scale, scale >= 0.0, "a finite value >= 0")?;
        }
        Ok(())
    }
}

impl Default for AdamWConfig {
    /// torch's defaults (betas (0.9, 0.999), eps 1e-8, weight decay 0.01), the decay applied to
    /// group [`AdamWConfig::DECAY`] only.
    fn default() -> Self {
        AdamWConfig::with_weight_decay(0.01)
    }
}

/// One parameter tensor as the optimizer sees it: a name (its checkpoint name, used for the saved
/// moments), its number of values and its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub len: usize,
    pub group: usize,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, len: usize, group: usize) -> Self {
        ParamSpec { name: name.into(), len, group }
    }

    /// A parameter in group [`AdamWConfig::DECAY`].
    pub fn decay(name: impl Into<String>, len: usize) -> Self {
        Self::new(name, len, AdamWConfig::DECAY)
    }

    /// A parameter in group [`AdamWConfig::NO_DECAY`].
    pub fn no_decay(name: impl Into<String>, len: usize) -> Self {
        Self::new(name, len, AdamWConfig::NO_DECAY)
    }
}

/// The AdamW optimizer: config, registered parameters, both moments and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<ParamSpec>,
    /// `offsets[i]..offsets[i + 1]` is parameter `i` in the flat buffers.
    offsets: Vec<usize>,
    /// First moment (torch's `exp_avg`), flat.
    exp_avg: Vec<f32>,
    /// Second moment (torch's `exp_avg_sq`), flat.
    exp_avg_sq: Vec<f32>,
    /// Steps taken (torch's `state["step"]`, equal for every parameter).
    step: u64,
}

impl AdamW {
    /// An optimizer over these parameters, in this order, with zero moments and no step taken.
    pub fn new(config: AdamWConfig, params: &[ParamSpec]) -> Result<Self, OptimError> {
        config.validate()?;
        let mut names = HashSet::with_capacity(params.len());
        let mut offsets = Vec::with_capacity(params.len() + 1);
        offsets.push(0);
        for p in params {
            if p.group >= config.groups.len() {
                let (name, group, groups) = (p.name.clone(), p.group, config.groups.len());
                return Err(OptimError::UnknownGroup { name, group, groups });
            }
            if !names.insert(p.name.as_str()) {
                return Err(OptimError::DuplicateParam { name: p.name.clone() });
            }
            offsets.push(offsets.last().unwrap() + p.len);
        }
        let total = *offsets.last().unwrap();
        Ok(AdamW {
            config,
            params: params.to_vec(),
            offsets,
            exp_avg: vec![0.0; total],
            exp_avg_sq: vec![0.0; total],
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The registered parameters, in the order of the flat buffers.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// The number of values of all parameters: the length of the flat buffers.
    pub fn len(&self) -> usize {
        self.exp_avg.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exp_avg.is_empty()
    }

    /// Where parameter `index` (in registration order) lies in the flat buffers.
    pub fn range(&self, index: usize) -> Range<usize> {
        self.offsets[index]..self.offsets[index + 1]
    }

    /// Where the parameter called `name` lies in the flat buffers.
    pub fn range_of(&self, name: &str) -> Option<Range<usize>> {
        self.params.iter().position(|p| p.name == name).map(|i| self.range(i))
    }

    /// The number of steps taken: the next step is step `step_count()` (0-based), whose
    /// learning rate is `schedule.lr(step_count())`.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The first moments (torch's `exp_avg`), flat.
    pub fn exp_avg(&self) -> &[f32] {
        &self.exp_avg
    }

    /// The second moments (torch's `exp_avg_sq`), flat.
    pub fn exp_avg_sq(&self) -> &[f32] {
        &self.exp_avg_sq
    }

    /// One AdamW step over the flat parameter buffer with the flat gradient buffer (both in the
    /// registered layout), at learning rate `lr` (times each group's `lr_scale`). Nothing is
    /// changed if an argument is wrong; nothing is allocated.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f64) -> Result<(), OptimError> {
        for (what, found) in [("parameter", params.len()), ("gradient", grads.len())] {
            if found != self.len() {
                return Err(OptimError::FlatLength { what, expected: self.len(), found });
            }
        }
        check_lr(lr)?;
        self.step += 1;
        for i in 0..self.params.len() {
            let range = self.range(i);
            let scalars = self.scalars(i, lr);
            update(
                &mut params[range.clone()],
                &grads[range.clone()],
                &mut self.exp_avg[range.clone()],
                &mut self.exp_avg_sq[range],
                &scalars,
            );
        }
        Ok(())
    }

    /// [`Self::step`] over one parameter and one gradient slice per registered parameter, in
    /// registration order, each checked against its registered length.
    pub fn step_tensors(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f64,
    ) -> Result<(), OptimError> {
        let expected = self.params.len();
        for (what, found) in [("parameter", params.len()), ("gradient", grads.len())] {
            if found != expected {
                return Err(OptimError::TensorCount { what, expected, found });
            }
        }
        for (spec, (p, g)) in self.params.iter().zip(params.iter().zip(grads)) {
            for (what, found) in [("parameter", p.len()), ("gradient", g.len())] {
                if found != spec.len {
                    let name = spec.name.clone();
                    return Err(OptimError::ParamLength { what, name, expected: spec.len, found });
                }
            }
        }
        check_lr(lr)?;
        self.step += 1;
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let range = self.range(i);
            let scalars = self.scalars(i, lr);
            update(p, g, &mut self.exp_avg[range.clone()], &mut self.exp_avg_sq[range], &scalars);
        }
        Ok(())
    }

    /// The scalars of parameter `index`'s update at the current step, computed as
    /// `_single_tensor_adam` does: in `f64` (Python floats), rounded to `f32` where they meet a
    /// float32 tensor.
    fn scalars(&self, index: usize, lr: f64) -> StepScalars {
        let group = self.config.groups[self.params[index].group];
        let (beta1, beta2) = self.config.betas;
        let lr = lr * group.lr_scale;
        let step = self.step as f64;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = lr / bias_correction1;
        StepScalars {
            decay: (group.weight_decay != 0.0).then_some((1.0 - lr * group.weight_decay) as f32),
            beta1_weight: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            beta2_weight: (1.0 - beta2) as f32,
            neg_step_size: (-step_size) as f32,
            bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
            eps: self.config.eps as f32,
        }
    }

    /// The state as a safetensors file: `exp_avg.<name>` and `exp_avg_sq.<name>` (F32, shape
    /// `[len]`) for every parameter, the step count and the config (JSON) as metadata.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, OptimError> {
        let bytes = |values: &[f32]| values.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut data = Vec::with_capacity(2 * self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            let range = self.range(i);
            data.push((format!("exp_avg.{}", p.name), bytes(&self.exp_avg[range.clone()]), p.len));
            data.push((format!("exp_avg_sq.{}", p.name), bytes(&self.exp_avg_sq[range]), p.len));
        }
        let views = data
            .iter()
            .map(|(name, bytes, len)| Ok((name.as_str(), TensorView::new(Dtype::F32, vec![*len], bytes)?)))
            .collect::<Result<Vec<_>, SafeTensorError>>()?;
        let config = serde_json::to_string(&self.config)
            .map_err(|e| OptimError::Metadata { key: CONFIG_KEY, reason: e.to_string() })?;
        let metadata = HashMap::from([
            (FORMAT_KEY.to_string(), FORMAT.to_string()),
            (STEP_KEY.to_string(), self.step.to_string()),
            (CONFIG_KEY.to_string(), config),
        ]);
        Ok(safetensors::serialize(views, Some(metadata))?)
    }

    /// Writes [`Self::to_safetensors`] to `path`.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|source| OptimError::Io { path: path.to_path_buf(), source })
    }

    /// An optimizer resumed from a state [`Self::to_safetensors`] wrote, over these parameters
    /// (names and lengths as saved, groups as given now), with the saved config and step count.
    /// Every registered parameter must have both moments in the file, and every tensor in the
    /// file must belong to a registered parameter. Continuing from it gives bit for bit what
    /// continuing the saved optimizer would have.
    pub fn from_safetensors(bytes: &[u8], params: &[ParamSpec]) -> Result<Self, OptimError> {
        let file = SafeTensors::deserialize(bytes)?;
        let (_, header) = SafeTensors::read_metadata(bytes)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let entry = |key: &'static str| {
            metadata.get(key).ok_or_else(|| OptimError::Metadata { key, reason: "missing".into() })
        };
        let format = entry(FORMAT_KEY)?;
        if format != FORMAT {
            let reason = format!("is `{format}`, expected `{FORMAT}`");
            return Err(OptimError::Metadata { key: FORMAT_KEY, reason });
        }
        let step = entry(STEP_KEY)?
            .parse::<u64>()
            .map_err(|e| OptimError::Metadata { key: STEP_KEY, reason: e.to_string() })?;
        let config = serde_json::from_str::<AdamWConfig>(entry(CONFIG_KEY)?)
            .map_err(|e| OptimError::Metadata { key: CONFIG_KEY, reason: e.to_string() })?;

        let mut optimizer = AdamW::new(config, params)?;
        optimizer.step = step;
        let mut expected = HashSet::with_capacity(2 * params.len());
        for i in 0..params.len() {
            let range = optimizer.range(i);
            let name = &optimizer.params[i].name;
            for (moment, buffer) in
                [("exp_avg", &mut optimizer.exp_avg), ("exp_avg_sq", &mut optimizer.exp_avg_sq)]
            {
                let tensor_name = format!("{moment}.{name}");
                read_moment(&file, &tensor_name, &mut buffer[range.clone()])?;
                expected.insert(tensor_name);
            }
        }
        let mut names = file.names();
        names.sort_unstable();
        if let Some(name) = names.into_iter().find(|name| !expected.contains(*name)) {
            return Err(OptimError::UnexpectedTensor { name: name.to_string() });
        }
        Ok(optimizer)
    }

    /// [`Self::from_safetensors`] of the file at `path`.
    pub fn load(path: &Path, params: &[ParamSpec]) -> Result<Self, OptimError> {
        let bytes =
            std::fs::read(path).map_err(|source| OptimError::Io { path: path.to_path_buf(), source })?;
        Self::from_safetensors(&bytes, params)
    }
}

/// Copies the saved moment `name` into `out`, which has its parameter's length.
fn read_moment(file: &SafeTensors<'_>, name: &str, out: &mut [f32]) -> Result<(), OptimError> {
    let tensor = file.tensor(name).map_err(|e| match e {
        SafeTensorError::TensorNotFound(_) => OptimError::MissingTensor { name: name.to_string() },
        e => OptimError::Safetensors(e),
    })?;
    if tensor.dtype() != Dtype::F32 || tensor.shape() != [out.len()] {
        let (dtype, shape) = (tensor.dtype(), tensor.shape().to_vec());
        return Err(OptimError::TensorShape { name: name.to_string(), dtype, shape, expected: out.len() });
    }
    for (x, bytes) in out.iter_mut().zip(tensor.data().chunks_exact(4)) {
        *x = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    Ok(())
}

fn check_lr(lr: f64) -> Result<(), OptimError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(OptimError::InvalidLr { lr })
    }
}

/// The per-parameter scalars of one step, as the float32 kernels of torch see them.
#[derive(Debug, Clone, Copy)]
struct StepScalars {
    /// `1 - lr * weight_decay`, or `None` when the group does not decay (torch skips the
    /// multiplication).
    decay: Option<f32>,
    /// `1 - beta1`, the weight of `exp_avg.lerp_(grad, 1 - beta1)`.
    beta1_weight: f32,
    beta2: f32,
    /// `1 - beta2`, the value of `exp_avg_sq.addcmul_(grad, grad, value=1 - beta2)`.
    beta2_weight: f32,
    /// `-lr / (1 - beta1^step)`, the value of `param.addcdiv_(exp_avg, denom, value=-step_size)`.
    neg_step_size: f32,
    /// `(1 - beta2^step) ** 0.5`.
    bias_correction2_sqrt: f32,
    eps: f32,
}

/// One AdamW update of one parameter, each line one torch operation of `_single_tensor_adam`.
///
/// torch's CPU kernels of `lerp_` and `addcmul_` round once where the formula multiplies and adds
/// (a fused multiply-add); [`fused_mul_add`] does the same, so the moments, and hence the
/// parameters, match torch's bit for bit.
fn update(params: &mut [f32], grads: &[f32], exp_avg: &mut [f32], exp_avg_sq: &mut [f32], s: &StepScalars) {
    if let Some(decay) = s.decay {
        // param.mul_(1 - lr * weight_decay)
        params.iter_mut().for_each(|p| *p *= decay);
    }
    let moments = exp_avg.iter_mut().zip(exp_avg_sq.iter_mut());
    for ((p, &g), (m, v)) in params.iter_mut().zip(grads).zip(moments) {
        // exp_avg.lerp_(grad, 1 - beta1): m + w * (g - m)
        *m = fused_mul_add(s.beta1_weight, g - *m, *m);
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): v * beta2 + (w * g) * g
        *v = fused_mul_add(s.beta2_weight * g, g, *v * s.beta2);
        // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
        // param.addcdiv_(exp_avg, denom, value=-step_size): p + (-step_size * m) / denom
        *p += s.neg_step_size * *m / denom;
    }
}

/// `a * b + c` rounded once to `f32`, as an FMA instruction computes it: the product of two
/// `f32`s is exact in `f64`, and the sum is rounded to `f64` and then to `f32`, which differs
/// from a single rounding only when the `f64` sum lands exactly halfway between two `f32`s (a
/// vanishingly rare case). Unlike `f32::mul_add` without a `fma` target feature, this
/// vectorizes instead of calling libm.
#[inline(always)]
fn fused_mul_add(a: f32, b: f32, c: f32) -> f32 {
    (f64::from(a) * f64::from(b) + f64::from(c)) as f32
}

/// The total L2 norm of all gradients, as `clip_grad_norm_` returns it, and whether they were
/// scaled down.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a NaN or infinite norm means the gradients are unusable: check it with `finite()`"]
pub struct GradNorm {
    /// The norm before clipping.
    pub total: f32,
    /// Whether the gradients were scaled by `max_norm / (total + 1e-6)`.
    pub clipped: bool,
}

impl GradNorm {
    /// The total norm, or [`OptimError::NonFiniteGradNorm`] when it is NaN or infinite.
    pub fn finite(self) -> Result<f32, OptimError> {
        if self.total.is_finite() {
            Ok(self.total)
        } else {
            Err(OptimError::NonFiniteGradNorm { norm: self.total })
        }
    }
}

/// Global-norm clipping as `torch.nn.utils.clip_grad_norm_(params, max_norm)`: the L2 norm of
/// all gradients together (summed in `f64`), and, when `max_norm / (total + 1e-6) < 1`, every
/// gradient scaled by that coefficient (in `f32`, as torch). A NaN or infinite total is returned
/// with the gradients untouched (torch would scale them to zeros or NaNs); [`GradNorm::finite`]
/// turns it into an error.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> GradNorm {
    clip_grad_norm_tensors(&mut [grads], max_norm)
}

/// [`clip_grad_norm`] over one slice per parameter.
pub fn clip_grad_norm_tensors(grads: &mut [&mut [f32]], max_norm: f32) -> GradNorm {
    let sum_sq: f64 = grads.iter().map(|g| sum_of_squares(g)).sum();
    let total = sum_sq.sqrt() as f32;
    if !total.is_finite() {
        return GradNorm { total, clipped: false };
    }
    // `max_norm / (total_norm + 1e-6)` on a float32 tensor is `reciprocal() * max_norm`.
    let coef = (1.0 / (total + 1e-6)) * max_norm;
    let clipped = coef < 1.0;
    if clipped {
        grads.iter_mut().for_each(|g| g.iter_mut().for_each(|x| *x *= coef));
    }
    GradNorm { total, clipped }
}

/// The sum of squares of `values` in `f64`, over eight independent lanes.
fn sum_of_squares(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(x) * f64::from(x);
        }
    }
    let tail: f64 = tail.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    lanes.iter().sum::<f64>() + tail
}
