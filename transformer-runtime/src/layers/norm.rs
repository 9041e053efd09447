//! LayerNorm with static width, alone or fused with the residual add that precedes it, and
//! RMSNorm (LLaMA / Mistral).

use super::into_array;
use crate::kernels::norm::{add_layer_norm, layer_norm, rms_norm, rms_norm_into};
use crate::WeightLoader;

/// `LayerNorm(D)` with learned scale and shift.
#[derive(Clone, Debug)]
pub struct LayerNorm<const D: usize> {
    gamma: Box<[f32; D]>,
    beta: Box<[f32; D]>,
    eps: f32,
}

impl<const D: usize> LayerNorm<D> {
    /// Loads `{prefix}.weight` and `{prefix}.bias`, both `[D]`.
    pub fn load(loader: &mut WeightLoader, prefix: &str, eps: f32) -> Self {
        let gamma = into_array(loader.take(&format!("{prefix}.weight"), &[D]));
        let beta = into_array(loader.take(&format!("{prefix}.bias"), &[D]));
        Self { gamma, beta, eps }
    }

    /// `rows[i] = LayerNorm(rows[i])`.
    pub fn forward(&self, rows: &mut [[f32; D]]) {
        layer_norm(rows, &self.gamma, &self.beta, self.eps);
    }

    /// `out[i] = LayerNorm(input[i])`, leaving the input as it is (pre-norm: the stream stays raw).
    pub fn forward_into(&self, input: &[[f32; D]], out: &mut [[f32; D]]) {
        out.copy_from_slice(input);
        self.forward(out);
    }

    /// `stream[i] = LayerNorm(stream[i] + sublayer[i])`: the post-norm residual in one pass.
    pub fn forward_residual(&self, stream: &mut [[f32; D]], sublayer: &[[f32; D]]) {
        add_layer_norm(stream, sublayer, &self.gamma, &self.beta, self.eps);
    }
}

/// `RMSNorm(D)` with a learned scale and no shift (HF `LlamaRMSNorm` / `MistralRMSNorm`).
#[derive(Clone, Debug)]
pub struct RmsNorm<const D: usize> {
    weight: Box<[f32; D]>,
    eps: f32,
}

impl<const D: usize> RmsNorm<D> {
    /// Loads `{prefix}.weight` (`[D]`); there is no bias.
    pub fn load(loader: &mut WeightLoader, prefix: &str, eps: f32) -> Self {
        let weight = into_array(loader.take(&format!("{prefix}.weight"), &[D]));
        Self { weight, eps }
    }

    /// From a weight of `D` floats built in code; for tests and weights built in code.
    pub fn from_parts(weight: Vec<f32>, eps: f32) -> Self {
        assert_eq!(weight.len(), D, "RmsNorm weight must have D = {D} elements");
        Self { weight: into_array(weight), eps }
    }

    /// `rows[i] = RmsNorm(rows[i])`.
    pub fn forward(&self, rows: &mut [[f32; D]]) {
        rms_norm(rows, &self.weight, self.eps);
    }

    /// `out[i] = RmsNorm(input[i])`, leaving the input as it is (pre-norm: the stream stays raw).
    pub fn forward_into(&self, input: &[[f32; D]], out: &mut [[f32; D]]) {
        rms_norm_into(input, out, &self.weight, self.eps);
    }
}
