//! Composed Reformers: a `fn forward` body written as the paper's two-stream reversible layers,
//! recognised and lowered to the preset's [`spec::Reformer`](crate::spec::Reformer), so the
//! generated code (loading, the rotations file, padding, workspace, `generate`) is the preset's.
//!
//! ```text
//! fn forward(tokens) -> logits {
//!     let x = embedding(tokens, vocab_size, d_model) + axial_positions(shape = [8, 8], dims = [16, 48]);
//!     let (x1, x2) = (x, x);
//!     for layer in 0..layers {
//!         x1 = x1 + if layer % 2 == 0 {
//!             lsh_attention(layer_norm(x2, eps = 1e-12), heads = heads, chunk = 8, chunks_before = 1,
//!                           chunks_after = 0, buckets = 4, hashes = 2, causal)
//!         } else {
//!             local_attention(layer_norm(x2, eps = 1e-12), heads = heads, chunk = 8, chunks_before = 1,
//!                             chunks_after = 0, causal)
//!         };
//!         x2 = x2 + linear(gelu(linear(layer_norm(x1, eps = 1e-12), d_ff)), d_model);
//!     }
//!     let x = layer_norm(concat(x1, x2), eps = 1e-12);
//!     linear(x, vocab_size)
//! }
//! ```
//!
//! The body is interpreted into expression trees with inferred widths (each mismatch an error
//! under its expression), then matched against that form, one named rule per part: embeddings,
//! the streams' split, each layer's two updates (`Y1 = X1 + Attention(X2)`, `Y2 = X2 +
//! FeedForward(Y1)`) and the head over both streams. An `lsh_attention` / `local_attention` call
//! is the whole sublayer (HF's `query_key` / `query` + `key`, `value` and `output.dense`, no
//! biases). Tensors are read under Hugging Face's Reformer names, as the preset reads them.
//!
//! This file holds the pass-level rules, the expression trees and the interpreter's state; the
//! statements and the layer loop are in `interp`, expressions and calls (with their width rules)
//! in `expr`, and the recognition of the preset's parts in `recognise`.

use std::rc::Rc;

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Expr, Stmt};

use super::constant::Const;
use super::{agree, dims, Dims};
use crate::ast::{Forward, ModelInput};
use crate::ctxt::Ctxt;
use crate::spec::{Activation, Reformer, ReformerAttention};

mod expr;
mod interp;
mod recognise;

/// The calls only a composed Reformer makes: a body using one of them is interpreted here.
const REFORMER_CALLS: &[&str] = &["lsh_attention", "local_attention", "axial_positions"];
/// The calls a composed Reformer's body may make.
const FUNCTIONS: &[&str] = &[
    "embedding",
    "axial_positions",
    "lsh_attention",
    "local_attention",
    "layer_norm",
    "linear",
    "gelu",
    "gelu_tanh",
    "relu",
    "concat",
];
/// The supported form, quoted by the structural errors.
const LAYER_FORM: &str =
    "`x1 = x1 + lsh_attention(layer_norm(x2, eps = …), heads = …, …);` (or `local_attention(…)`) \
     then `x2 = x2 + linear(gelu(linear(layer_norm(x1, eps = …), d_ff)), d_model);`";
/// The presets' bounds (`check.rs`): they catch typos.
const MAX_POSITIONS: usize = 1 << 20;
const MAX_VOCAB: i128 = 10_000_000;
const MAX_LAYERS: i128 = 1024;
const MAX_NEIGHBOURS: i128 = 64;
const MAX_HASHES: i128 = 64;
const MAX_BUCKETS: i128 = 1 << 16;

/// Whether a body is a Reformer's: it calls `lsh_attention`, `local_attention` or
/// `axial_positions`.
pub fn declared(forward: &Forward) -> bool {
    fn mentions(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => REFORMER_CALLS.contains(&i.to_string().as_str()),
            proc_macro2::TokenTree::Group(g) => mentions(g.stream()),
            _ => false,
        })
    }
    mentions(forward.body.to_token_stream())
}

/// One layer's attention sublayer: `lsh_attention(…)` or `local_attention(…)`.
#[derive(Clone, Copy, Debug)]
struct AttentionCall {
    kind: ReformerAttention,
    heads: usize,
    chunk: usize,
    chunks_before: usize,
    chunks_after: usize,
    /// LSH only: `(buckets, hashes)`.
    hashing: Option<(usize, usize)>,
    causal: bool,
    /// Where the call and its `chunk` were written.
    span: Span,
    chunk_span: Span,
}

/// What computed a tensor.
#[derive(Debug)]
enum Op {
    Embedding {
        vocab: usize,
    },
    Axial {
        shape: [usize; 2],
        dims: [usize; 2],
    },
    /// A stream as it enters a layer (or the tail): 1 or 2.
    Stream(u8),
    Add(Rc<Tensor>, Rc<Tensor>),
    Norm {
        eps: f64,
        input: Rc<Tensor>,
    },
    Linear {
        input: Rc<Tensor>,
        bias: bool,
    },
    Act {
        act: Activation,
        input: Rc<Tensor>,
    },
    Attention {
        call: AttentionCall,
        input: Rc<Tensor>,
    },
    Concat(Rc<Tensor>, Rc<Tensor>),
}

/// A tensor `[S, width]` and the expression that computed it.
#[derive(Debug)]
struct Tensor {
    op: Op,
    width: usize,
    span: Span,
}

#[derive(Clone, Debug)]
enum Val {
    Tensor(Rc<Tensor>),
    Const(Const),
    Tokens,
    /// An expression that already reported its error: uses stay silent.
    Poison,
}

struct Binding {
    name: String,
    val: Val,
    span: Span,
    used: bool,
}

struct Interp<'c> {
    cx: &'c mut Ctxt,
    dims: Dims,
    scope: Vec<Binding>,
    /// Errors of layers after the first are reported only when the first was clean.
    quiet: bool,
}

/// Validates a composed Reformer and builds the preset's spec.
pub fn expand(input: &ModelInput, forward: &Forward) -> Result<Reformer, syn::Error> {
    let mut cx = Ctxt::new();
    let dims = dims(&mut cx, input);
    one_forward_pass(&mut cx, input);
    reformer_outputs_logits(&mut cx, forward);
    reformer_reads_tokens(&mut cx, forward);
    let mut it = Interp { cx: &mut cx, dims: dims.clone(), scope: Vec::new(), quiet: false };
    let model = it.body(forward);
    cx.check()?;
    let Some(model) = model else {
        return Err(syn::Error::new(forward.name.span(), "the composed Reformer could not be recognised"));
    };
    let mut cx = Ctxt::new();
    agree(
        &mut cx,
        &dims,
        &[
            ("vocab_size", Some(model.vocab_size)),
            ("max_positions", Some(model.max_positions)),
            ("d_model", Some(model.d_model)),
            ("heads", Some(model.heads)),
            ("layers", Some(model.layers.len())),
            ("d_ff", Some(model.d_ff)),
        ],
    );
    cx.check()?;
    let vocab_span =
        dims.iter().find(|(n, _)| n == "vocab_size").map_or(forward.output.span(), |(n, _)| n.span());
    Ok(Reformer {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        head_dim: model.d_model / model.heads,
        vocab_span,
        ..model
    })
}

/// Rule: a composed Reformer writes one pass, `fn forward(tokens) -> logits`.
fn one_forward_pass(cx: &mut Ctxt, input: &ModelInput) {
    for f in &input.functions {
        if f.name != "forward" {
            cx.error(
                f.name.span(),
                format!(
                    "a composed Reformer writes one pass, `fn forward(tokens) -> logits`: remove `fn {}`",
                    f.name
                ),
            );
        }
    }
}

/// Rule: a Reformer returns `logits` (HF's `ReformerModelWithLMHead` / `ReformerForMaskedLM`).
fn reformer_outputs_logits(cx: &mut Ctxt, forward: &Forward) {
    if forward.output != "logits" || !forward.tuple.is_empty() {
        cx.error(
            forward.output.span(),
            "a composed Reformer returns its head's `logits`: `fn forward(tokens) -> logits`",
        );
    }
}

/// Rule: a Reformer reads the token ids and nothing else (no token types, no images).
fn reformer_reads_tokens(cx: &mut Ctxt, forward: &Forward) {
    let message = "a composed Reformer reads only the token ids: `fn forward(tokens) -> logits`";
    for input in forward.inputs.iter().filter(|i| *i != "tokens") {
        cx.error(input.span(), message);
    }
    if !forward.inputs.iter().any(|i| i == "tokens") {
        cx.error(forward.name.span(), message);
    }
}

/// Rule: a composed Reformer reads Hugging Face's Reformer tensor names (as the preset does), so
/// its statements carry no `#[weights = …]`.
fn no_weight_attributes(it: &mut Interp, forward: &Forward) {
    fn attrs(stmt: &Stmt) -> Vec<&syn::Attribute> {
        match stmt {
            Stmt::Local(l) => l.attrs.iter().collect(),
            Stmt::Expr(Expr::ForLoop(f), _) => {
                f.attrs.iter().chain(f.body.stmts.iter().flat_map(attrs)).collect()
            }
            Stmt::Expr(Expr::Assign(a), _) => a.attrs.iter().chain(leftmost_attrs(&a.left)).collect(),
            Stmt::Expr(Expr::Call(c), _) => c.attrs.iter().chain(leftmost_attrs(&c.func)).collect(),
            _ => Vec::new(),
        }
    }
    fn leftmost_attrs(e: &Expr) -> &[syn::Attribute] {
        match e {
            Expr::Path(p) => &p.attrs,
            _ => &[],
        }
    }
    for attr in forward.attrs.iter().chain(forward.body.stmts.iter().flat_map(attrs)) {
        it.error(
            attr.path().span(),
            "a composed Reformer reads Hugging Face's Reformer tensor names (`reformer.embeddings.word_embeddings`, \
             `reformer.encoder.layers.{i}.attention.self_attention.query_key`, …, `lm_head.decoder`), as the preset \
             does: remove this attribute",
        );
    }
}
