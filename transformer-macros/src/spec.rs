//! The validated model: every key present, every size in range, every name known. Codegen and
//! lowering read only this, never the raw syntax.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// A validated `model!` declaration with concrete dims.
pub struct Spec {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub type_vocab_size: Option<usize>,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub d_ff: usize,
    pub activation: Activation,
    pub norm: Norm,
    pub positions: Positions,
    pub attention: Attention,
    pub weights: WeightScheme,
    /// Where `d_model` was written: generated shape assertions point there.
    pub d_model_span: Span,
}

impl Spec {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }
}

/// Feed-forward activation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

/// Normalisation layer and where it sits relative to the residual.
#[derive(Clone, Copy, Debug)]
pub struct Norm {
    pub kind: NormKind,
    pub eps: f64,
    pub placement: Placement,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NormKind {
    LayerNorm,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// `x = norm(x + f(x))` (BERT, the original Transformer).
    Post,
    /// `x = x + f(norm(x))`, with a final norm after the last layer (GPT-2, ViT).
    Pre,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Positions {
    Learned,
    Sinusoidal,
}

/// Which keys each query attends to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Attention {
    /// Every token sees every (unpadded) token: encoders.
    Bidirectional,
}

/// How tensors are named in the checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WeightScheme {
    /// Hugging Face `BertModel`: `embeddings.word_embeddings.weight`, `encoder.layer.{i}.…`.
    Bert,
}
