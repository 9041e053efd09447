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

use std::rc::Rc;

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Pat, Stmt};

use super::constant::{self, Const};
use super::{agree, dims, Dims};
use crate::ast::{Forward, ModelInput};
use crate::ctxt::Ctxt;
use crate::spec::{Activation, Reformer, ReformerAttention, ReformerLocal, ReformerLsh};

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

/// A spec with the recognised dims; [`expand`] fills in the name, visibility and spans.
fn placeholder_spec(vocab_size: usize, d_model: usize, heads: usize, d_ff: usize) -> Reformer {
    Reformer {
        attrs: Vec::new(),
        vis: syn::Visibility::Inherited,
        name: syn::Ident::new("Reformer", Span::call_site()),
        vocab_size,
        max_positions: 0,
        d_model,
        heads,
        head_dim: 0,
        d_ff,
        activation: Activation::GeluErf,
        eps: 0.0,
        causal: false,
        layers: Vec::new(),
        lsh: None,
        local: None,
        axial_shape: [0; 2],
        axial_dims: [0; 2],
        vocab_span: Span::call_site(),
    }
}

impl Interp<'_> {
    fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.cx.error(span, msg);
        }
    }

    fn bind(&mut self, name: &str, val: Val, span: Span) {
        self.scope.push(Binding { name: name.to_string(), val, span, used: false });
    }

    fn dim(&self, name: &str) -> Option<usize> {
        self.dims.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The whole body: statements before the loop, the loop, the tail; then the recognition.
    fn body(&mut self, forward: &Forward) -> Option<Reformer> {
        no_weight_attributes(self, forward);
        self.bind("tokens", Val::Tokens, forward.name.span());
        self.scope[0].used = true;
        let stmts = &forward.body.stmts;
        let Some(loop_at) = stmts.iter().position(|s| matches!(s, Stmt::Expr(Expr::ForLoop(_), _))) else {
            self.error(
                forward.body.brace_token.span.join(),
                format!(
                    "a composed Reformer repeats its layers: `for layer in 0..layers {{ {LAYER_FORM} }}`"
                ),
            );
            return None;
        };
        let mut streams = None;
        for stmt in &stmts[..loop_at] {
            if let Some(split) = self.prelude_stmt(stmt) {
                streams = Some(split);
            }
        }
        let Some((names, start)) = streams else {
            if self.cx.len() == 0 {
                self.error(stmts[loop_at].span(), "a Reformer runs two streams: split the embeddings before the layers with `let (x1, x2) = (x, x);`");
            }
            return None;
        };
        let embeddings = embeddings_are_tokens_plus_axial(self, &start);
        let Stmt::Expr(Expr::ForLoop(for_loop), _) = &stmts[loop_at] else { return None };
        let layers = self.layers(for_loop, &names);
        // The streams' starting values are read by the first layer.
        for b in self.scope.iter_mut().filter(|b| names.contains(&b.name)) {
            b.used = true;
        }
        self.unused_from(1);
        // The tail reads both streams as they leave the last layer.
        for (i, name) in names.iter().enumerate() {
            let t = Tensor { op: Op::Stream(i as u8 + 1), width: start.width, span: for_loop.for_token.span };
            self.bind(name, Val::Tensor(Rc::new(t)), for_loop.for_token.span);
        }
        let scope_before_tail = self.scope.len();
        let mut result = None;
        for (n, stmt) in stmts[loop_at + 1..].iter().enumerate() {
            match stmt {
                Stmt::Expr(e, None) if loop_at + 1 + n == stmts.len() - 1 => result = self.eval(e),
                Stmt::Expr(Expr::ForLoop(f), _) => self.error(
                    f.for_token.span,
                    "one repeated block per model: merge the loops (layers may vary by index)",
                ),
                _ => self.let_stmt(stmt),
            }
        }
        self.unused_from(scope_before_tail);
        let head = match result {
            Some(Val::Tensor(t)) => head_over_both_streams(self, &t),
            Some(Val::Poison) => None,
            _ => {
                self.error(forward.output.span(), "the forward pass never produces `logits`: end the body with the head, `linear(layer_norm(concat(x1, x2), eps = …), vocab_size)` (no `;`)");
                None
            }
        };
        let ((vocab, shape, axial_dims), layers, (eps, head_vocab)) = (embeddings?, layers?, head?);
        if vocab != head_vocab {
            self.error(stmts[stmts.len() - 1].span(), format!("the head projects to {head_vocab} logits, but the embeddings read a vocabulary of {vocab}: a Reformer's head scores its own vocabulary"));
            return None;
        }
        self.assemble(start.width, vocab, shape, axial_dims, eps, layers)
    }

    /// Joins the layers' parts into a spec: one eps, one activation, one `d_ff`, one direction,
    /// one geometry per attention kind, and chunks that keep the padding in the table.
    fn assemble(
        &mut self,
        d_model: usize,
        vocab: usize,
        shape: [usize; 2],
        axial_dims: [usize; 2],
        eps: (f64, Span),
        layers: Vec<Layer>,
    ) -> Option<Reformer> {
        let errors = self.cx.len();
        let first = &layers[0];
        let e = |x: f64| format!("{x:e}");
        let eps_everywhere = layers
            .iter()
            .flat_map(|l| [(e(l.eps.0), l.eps.1), (e(l.ff_eps.0), l.ff_eps.1)])
            .chain([(e(eps.0), eps.1)]);
        same_across_layers(self, "layer_norm `eps`", eps_everywhere);
        let act = layers.iter().map(|l| (activation_name(l.act.0), l.act.1));
        same_across_layers(self, "feed-forward activation", act);
        same_across_layers(self, "`d_ff`", layers.iter().map(|l| l.d_ff));
        let heads = layers.iter().map(|l| (l.attention.heads, l.attention.span));
        same_across_layers(self, "heads", heads);
        let directions = layers.iter().map(|l| (direction(l.attention.causal), l.attention.span));
        same_across_layers(self, "attention direction", directions);
        let of_kind = |kind| layers.iter().map(|l| l.attention).filter(move |a| a.kind == kind);
        for kind in [ReformerAttention::Lsh, ReformerAttention::Local] {
            same_across_layers(self, "chunking and hashing", of_kind(kind).map(|a| (geometry(a), a.span)));
        }
        let max_positions = shape[0] * shape[1];
        let chunks: Vec<AttentionCall> =
            [of_kind(ReformerAttention::Lsh).next(), of_kind(ReformerAttention::Local).next()]
                .into_iter()
                .flatten()
                .collect();
        padding_stays_in_the_table(self, max_positions, &chunks);
        if self.cx.len() > errors {
            return None;
        }
        let lsh = of_kind(ReformerAttention::Lsh).next().map(|a| {
            let (buckets, hashes) = a.hashing.unwrap_or((2, 1));
            ReformerLsh {
                chunk: a.chunk,
                chunks_before: a.chunks_before,
                chunks_after: a.chunks_after,
                buckets,
                hashes,
            }
        });
        let local = of_kind(ReformerAttention::Local).next().map(|a| ReformerLocal {
            chunk: a.chunk,
            chunks_before: a.chunks_before,
            chunks_after: a.chunks_after,
        });
        Some(Reformer {
            max_positions,
            activation: first.act.0,
            eps: eps.0,
            causal: first.attention.causal,
            layers: layers.iter().map(|l| l.attention.kind).collect(),
            lsh,
            local,
            axial_shape: shape,
            axial_dims,
            ..placeholder_spec(vocab, d_model, first.attention.heads, first.d_ff.0)
        })
    }

    /// A statement before the loop: `let x = …;`, or the streams' split `let (x1, x2) = (x, x);`
    /// (returned with the tensor both start from).
    fn prelude_stmt(&mut self, stmt: &Stmt) -> Option<([String; 2], Rc<Tensor>)> {
        let Stmt::Local(syn::Local { pat: Pat::Tuple(tuple), init: Some(init), .. }) = stmt else {
            self.let_stmt(stmt);
            return None;
        };
        let names: Vec<(String, Span)> = tuple
            .elems
            .iter()
            .filter_map(|p| match p {
                Pat::Ident(i) => Some((i.ident.to_string(), i.ident.span())),
                _ => None,
            })
            .collect();
        let values: Vec<Option<Val>> = match &*init.expr {
            Expr::Tuple(t) => t.elems.iter().map(|e| self.eval(e)).collect(),
            _ => Vec::new(),
        };
        streams_start_equal(self, init.expr.span(), &names, &values)
            .map(|t| ([names[0].0.clone(), names[1].0.clone()], t))
    }

    /// `let name = expr;` (statements other than a `let` of one name are errors).
    fn let_stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Local(syn::Local { pat: Pat::Ident(p), init: Some(init), .. }) => {
                let val = self.eval(&init.expr).unwrap_or(Val::Poison);
                self.bind(&p.ident.to_string(), val, p.ident.span());
            }
            other => self
                .error(other.span(), "expected `let name = …;` (or the streams' `let (x1, x2) = (x, x);`)"),
        }
    }

    /// Reports the names bound from `from` on that nothing read.
    fn unused_from(&mut self, from: usize) {
        // After an error, a value may be unread only because the failed expression stopped.
        if self.cx.len() > 0 {
            return;
        }
        let unused: Vec<(String, Span)> = self.scope[from..]
            .iter()
            .filter(|b| !b.used && !b.name.starts_with('_') && matches!(b.val, Val::Tensor(_)))
            .map(|b| (b.name.clone(), b.span))
            .collect();
        for (name, span) in unused {
            self.error(
                span,
                format!("`{name}` is computed but never used (prefix it with `_` if that is meant)"),
            );
        }
    }

    /// The layer loop: each layer evaluated with its index bound, its two updates recognised.
    fn layers(&mut self, for_loop: &syn::ExprForLoop, streams: &[String; 2]) -> Option<Vec<Layer>> {
        let Pat::Ident(var) = &*for_loop.pat else {
            self.error(for_loop.pat.span(), "expected the layer index: `for layer in 0..layers`");
            return None;
        };
        let count = match &*for_loop.expr {
            Expr::Range(r) if matches!(r.limits, syn::RangeLimits::HalfOpen(_)) => {
                let start = r.start.as_deref().map(|e| self.constant(e));
                let end = r.end.as_deref().map(|e| self.constant(e));
                match (start, end) {
                    (Some(Some(Const::Int(0))), Some(Some(Const::Int(n))))
                        if (1..=MAX_LAYERS).contains(&n) =>
                    {
                        n as usize
                    }
                    _ => {
                        self.error(
                            r.span(),
                            format!("expected `0..n` with a whole number of layers from 1 to {MAX_LAYERS}"),
                        );
                        return None;
                    }
                }
            }
            other => {
                self.error(other.span(), "expected `0..layers`");
                return None;
            }
        };
        let errors = self.cx.len();
        let mut layers = Vec::new();
        for layer in 0..count {
            self.quiet = layer > 0 && self.cx.len() > errors;
            let depth = self.scope.len();
            self.bind(&var.ident.to_string(), Val::Const(Const::Int(layer as i128)), var.ident.span());
            self.scope[depth].used = true;
            for (i, name) in streams.iter().enumerate() {
                let width = match self.lookup(name) {
                    Some(Val::Tensor(t)) => t.width,
                    _ => 0,
                };
                let t = Tensor { op: Op::Stream(i as u8 + 1), width, span: for_loop.for_token.span };
                self.bind(name, Val::Tensor(Rc::new(t)), for_loop.for_token.span);
                self.scope[depth + 1 + i].used = true;
            }
            let mut updates: [Option<(Rc<Tensor>, Span)>; 2] = [None, None];
            for stmt in &for_loop.body.stmts {
                if let Some((i, t, span)) = self.layer_stmt(stmt, streams) {
                    if updates[i].is_some() {
                        self.error(span, format!("`{}` is updated twice in one layer: a reversible layer updates each stream once, {LAYER_FORM}", streams[i]));
                    }
                    updates[i] = Some((t, span));
                }
            }
            if layer == 0 {
                self.unused_from(depth + 3);
            }
            self.scope.truncate(depth);
            let parsed = match updates {
                [Some(first), Some(second)] => reversible_layer(self, &first, &second, streams),
                _ => {
                    if self.cx.len() == errors {
                        self.error(
                            for_loop.for_token.span,
                            format!("each layer updates both streams, in order: {LAYER_FORM}"),
                        );
                    }
                    None
                }
            };
            layers.push(parsed);
        }
        self.quiet = false;
        if self.cx.len() > errors {
            return None;
        }
        layers.into_iter().collect()
    }

    /// A statement in the loop: `let name = …;`, or a stream's update (`x1 = …;` or
    /// `let x1 = …;`), returned as (stream, value, where).
    fn layer_stmt(&mut self, stmt: &Stmt, streams: &[String; 2]) -> Option<(usize, Rc<Tensor>, Span)> {
        let (name, span, value) = match stmt {
            Stmt::Local(syn::Local { pat: Pat::Ident(p), init: Some(init), .. }) => {
                (p.ident.to_string(), p.ident.span(), &init.expr)
            }
            Stmt::Expr(Expr::Assign(a), Some(_)) => match &*a.left {
                Expr::Path(p) if p.path.get_ident().is_some() => {
                    (p.path.get_ident().map(ToString::to_string).unwrap_or_default(), a.left.span(), &a.right)
                }
                other => {
                    self.error(other.span(), "expected a name on the left of `=`");
                    return None;
                }
            },
            other => {
                self.error(
                    other.span(),
                    format!("expected `let name = …;` or a stream's update: {LAYER_FORM}"),
                );
                return None;
            }
        };
        let val = self.eval(value).unwrap_or(Val::Poison);
        let stream = streams.iter().position(|s| *s == name);
        if let (Some(i), Val::Tensor(t)) = (stream, &val) {
            let t = t.clone();
            self.bind(&name, val, span);
            let at = self.scope.len() - 1;
            self.scope[at].used = true;
            return Some((i, t, stmt.span()));
        }
        if stream.is_none() && matches!(stmt, Stmt::Expr(..)) {
            self.error(span, format!("cannot assign to `{name}`: a layer updates the streams `{}` and `{}`; bind other values with `let`", streams[0], streams[1]));
            return None;
        }
        self.bind(&name, val, span);
        None
    }

    fn lookup(&self, name: &str) -> Option<Val> {
        self.scope.iter().rev().find(|b| b.name == name).map(|b| b.val.clone())
    }

    fn constant(&mut self, e: &Expr) -> Option<Const> {
        let lookup = |name: &str| -> Option<Const> {
            if let Some(v) = self.dim(name) {
                return Some(Const::Int(v as i128));
            }
            match self.lookup(name) {
                Some(Val::Const(c)) => Some(c),
                _ => None,
            }
        };
        match constant::eval(e, &lookup) {
            Ok(c) => Some(c),
            Err(err) => {
                self.error(err.span(), err);
                None
            }
        }
    }

    fn tensor(&mut self, op: Op, width: usize, span: Span) -> Option<Val> {
        Some(Val::Tensor(Rc::new(Tensor { op, width, span })))
    }

    fn eval(&mut self, e: &Expr) -> Option<Val> {
        match e {
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Group(g) => self.eval(&g.expr),
            Expr::Path(p) => {
                let name = p.path.get_ident().map(ToString::to_string).unwrap_or_default();
                if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
                    b.used = true;
                    // A stream read here is reported here (its messages point at this use).
                    if let Val::Tensor(t) = &b.val {
                        if let Op::Stream(s) = t.op {
                            return Some(Val::Tensor(Rc::new(Tensor {
                                op: Op::Stream(s),
                                width: t.width,
                                span: p.span(),
                            })));
                        }
                    }
                    return Some(b.val.clone());
                }
                if let Some(v) = self.dim(&name) {
                    return Some(Val::Const(Const::Int(v as i128)));
                }
                self.error(
                    p.span(),
                    format!("cannot find `{name}`: not an input, a `let` before this use, or a dim"),
                );
                Some(Val::Poison)
            }
            Expr::Binary(b) if matches!(b.op, BinOp::Add(_)) => {
                let (l, r) = (self.eval(&b.left), self.eval(&b.right));
                match (l, r) {
                    (Some(Val::Tensor(l)), Some(Val::Tensor(r))) => {
                        if l.width != r.width {
                            self.error(
                                b.op.span(),
                                format!(
                                    "cannot add [S, {}] and [S, {}]: `+` adds tensors of one width",
                                    l.width, r.width
                                ),
                            );
                            return Some(Val::Poison);
                        }
                        let width = l.width;
                        self.tensor(Op::Add(l, r), width, b.op.span())
                    }
                    (Some(Val::Const(_)), Some(Val::Const(_))) => self.constant(e).map(Val::Const),
                    (Some(Val::Poison), _) | (_, Some(Val::Poison)) | (None, _) | (_, None) => {
                        Some(Val::Poison)
                    }
                    _ => {
                        self.error(b.op.span(), "`+` adds two tensors of one width");
                        Some(Val::Poison)
                    }
                }
            }
            Expr::If(i) => {
                let cond = match self.constant(&i.cond) {
                    Some(Const::Bool(b)) => b,
                    Some(other) => {
                        self.error(
                            i.cond.span(),
                            format!(
                                "a layer chooses by a constant condition such as `layer % 2 == 0`, found {}",
                                other.describe()
                            ),
                        );
                        return Some(Val::Poison);
                    }
                    None => return Some(Val::Poison),
                };
                let branch = if cond {
                    Some(&i.then_branch)
                } else {
                    match i.else_branch.as_ref().map(|(_, e)| &**e) {
                        Some(Expr::Block(b)) => Some(&b.block),
                        Some(other) => return self.eval(other),
                        None => None,
                    }
                };
                match branch.map(|b| b.stmts.as_slice()) {
                    Some([Stmt::Expr(e, None)]) => self.eval(e),
                    _ => {
                        self.error(i.span(), "a per-layer choice is `if … { tensor } else { tensor }`, one expression in each branch");
                        Some(Val::Poison)
                    }
                }
            }
            Expr::Call(call) => self.call(call),
            Expr::Lit(_) | Expr::Binary(_) | Expr::Unary(_) => self.constant(e).map(Val::Const),
            other => {
                self.error(other.span(), "expected a layer call, a name, `+` or a constant");
                Some(Val::Poison)
            }
        }
    }

    fn call(&mut self, call: &syn::ExprCall) -> Option<Val> {
        let span = call.span();
        let Expr::Path(p) = &*call.func else {
            self.error(call.func.span(), "expected a layer name");
            return Some(Val::Poison);
        };
        let func = p.path.get_ident().map(ToString::to_string).unwrap_or_default();
        let mut args = Args::default();
        for arg in &call.args {
            match arg {
                Expr::Assign(a) => match &*a.left {
                    Expr::Path(k) if k.path.get_ident().is_some() => args.named.push((
                        k.path.get_ident().map(ToString::to_string).unwrap_or_default(),
                        &*a.right,
                        k.span(),
                    )),
                    other => self.error(other.span(), "expected `name = value`"),
                },
                Expr::Path(k) if k.path.is_ident("causal") => args.causal = Some(k.span()),
                other => args.positional.push(other),
            }
        }
        let result = match func.as_str() {
            "embedding" => self.embedding(span, &mut args),
            "axial_positions" => self.axial(span, &mut args),
            "lsh_attention" | "local_attention" => self.attention(&func, span, &mut args),
            "layer_norm" => self.layer_norm(span, &mut args),
            "linear" => self.linear(span, &mut args),
            "gelu" | "gelu_tanh" | "relu" => self.activation(&func, span, &mut args),
            "concat" => self.concat(span, &mut args),
            other => {
                let hint = crate::suggest::closest(other, FUNCTIONS)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                self.error(
                    span,
                    format!(
                        "unknown layer `{other}`{hint}: a composed Reformer uses {}",
                        FUNCTIONS.join(", ")
                    ),
                );
                return Some(Val::Poison);
            }
        };
        // A call that failed stopped before reading all its arguments: only a complete one has
        // leftovers to report.
        if result.is_some() {
            for (name, _, at) in &args.named {
                self.error(*at, format!("`{func}` takes no argument `{name}`"));
            }
            if let Some(at) = args.causal {
                self.error(at, format!("`{func}` takes no flag `causal`"));
            }
            if args.extra {
                self.error(span, format!("`{func}` takes fewer positional arguments"));
            }
        }
        Some(result.unwrap_or(Val::Poison))
    }

    /// The positional tensor at `i` (the error, if missing, names the call's form).
    fn tensor_arg(&mut self, args: &mut Args, i: usize, span: Span, form: &str) -> Option<Rc<Tensor>> {
        let Some(e) = args.positional.get(i).copied() else {
            self.error(span, format!("expected {form}"));
            return None;
        };
        match self.eval(e)? {
            Val::Tensor(t) => Some(t),
            Val::Poison => None,
            _ => {
                self.error(e.span(), format!("expected a tensor here: {form}"));
                None
            }
        }
    }

    /// A positive integer: positional at `i`, or named.
    fn size(&mut self, e: Option<&Expr>, span: Span, what: &str, max: i128) -> Option<(usize, Span)> {
        let Some(e) = e else {
            self.error(span, format!("missing {what}"));
            return None;
        };
        match self.constant(e)? {
            Const::Int(n) if (1..=max).contains(&n) => Some((n as usize, e.span())),
            other => {
                self.error(
                    e.span(),
                    format!("{what} is a whole number from 1 to {max}, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// A count of neighbour chunks, from 0.
    fn count(&mut self, e: Option<&Expr>, span: Span, what: &str) -> Option<usize> {
        let Some(e) = e else {
            self.error(span, format!("missing `{what} = …` (neighbour chunks each query also sees)"));
            return None;
        };
        match self.constant(e)? {
            Const::Int(n @ 0..=MAX_NEIGHBOURS) => Some(n as usize),
            other => {
                self.error(
                    e.span(),
                    format!(
                        "`{what}` is a number of neighbour chunks from 0 to {MAX_NEIGHBOURS}, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// `embedding(tokens, vocab_size, d_model)`: HF's `word_embeddings`.
    fn embedding(&mut self, span: Span, args: &mut Args) -> Option<Val> {
        let form = "`embedding(tokens, vocab_size, d_model)`";
        let tokens = args.positional.first().copied();
        if !matches!(tokens.map(|t| self.eval(t)), Some(Some(Val::Tokens))) {
            self.error(
                tokens.map_or(span, Spanned::span),
                format!("`embedding` looks up the input `tokens`: {form}"),
            );
            return None;
        }
        let (vocab, _) =
            self.size(args.positional.get(1).copied(), span, "the vocabulary size", MAX_VOCAB)?;
        let (width, _) = self.size(args.positional.get(2).copied(), span, "the width", 1 << 16)?;
        args.extra = args.positional.len() > 3;
        self.tensor(Op::Embedding { vocab }, width, span)
    }

    /// `axial_positions(shape = [s0, s1], dims = [d0, d1])`: HF's `AxialPositionEmbeddings`, a
    /// `[s0 · s1, d0 + d1]` table factored in two.
    fn axial(&mut self, span: Span, args: &mut Args) -> Option<Val> {
        let form = "`axial_positions(shape = [s0, s1], dims = [d0, d1])`";
        args.extra = !args.positional.is_empty();
        let mut pair = |it: &mut Self, name: &str| -> Option<[usize; 2]> {
            let Some(e) = args.take(name) else {
                it.error(span, format!("`axial_positions` needs `{name} = […]`: {form}"));
                return None;
            };
            let items = match e {
                Expr::Array(a) if a.elems.len() == 2 => a.elems.iter().collect::<Vec<_>>(),
                other => {
                    it.error(other.span(), format!("axial `{name}` is a pair such as `[8, 8]`: {form}"));
                    return None;
                }
            };
            let a = it.size(Some(items[0]), span, &format!("axial `{name}`"), 1 << 20)?;
            let b = it.size(Some(items[1]), span, &format!("axial `{name}`"), 1 << 20)?;
            Some([a.0, b.0])
        };
        let shape = pair(self, "shape");
        let dims = pair(self, "dims");
        let (shape, dims) = (shape?, dims?);
        if !axial_table_fits(self, shape, span) {
            return None;
        }
        self.tensor(Op::Axial { shape, dims }, dims[0] + dims[1], span)
    }

    /// `lsh_attention(h, heads = …, chunk = …, chunks_before = …, chunks_after = …, buckets = …,
    /// hashes = …[, causal])` and `local_attention(h, heads = …, chunk = …, chunks_before = …,
    /// chunks_after = …[, causal])`: a whole attention sublayer (projections, attention, output).
    fn attention(&mut self, func: &str, span: Span, args: &mut Args) -> Option<Val> {
        let lsh = func == "lsh_attention";
        let form = if lsh {
            "`lsh_attention(h, heads = …, chunk = …, chunks_before = …, chunks_after = …, buckets = …, hashes = …)`"
        } else {
            "`local_attention(h, heads = …, chunk = …, chunks_before = …, chunks_after = …)`"
        };
        let input = self.tensor_arg(args, 0, span, form);
        args.extra = args.positional.len() > 1;
        let mut named = |it: &mut Self, name: &str, max: i128| -> Option<(usize, Span)> {
            let Some(e) = args.take(name) else {
                it.error(span, format!("`{func}` needs `{name} = …`: {form}"));
                return None;
            };
            it.size(Some(e), span, &format!("`{name}`"), max)
        };
        let heads = named(self, "heads", 1 << 10);
        let chunk = named(self, "chunk", 1 << 20);
        let before = args.take("chunks_before");
        let before = self.count(before, span, "chunks_before");
        let after = args.take("chunks_after");
        let after = self.count(after, span, "chunks_after");
        let hashing = if lsh {
            let mut named = |it: &mut Self, name: &str, max: i128| -> Option<(usize, Span)> {
                let Some(e) = args.take(name) else {
                    it.error(span, format!("`{func}` needs `{name} = …`: {form}"));
                    return None;
                };
                let what = match name {
                    "hashes" => "`hashes`, the number of hashing rounds,".to_string(),
                    _ => format!("`{name}`"),
                };
                it.size(Some(e), span, &what, max)
            };
            let buckets = named(self, "buckets", MAX_BUCKETS);
            let hashes = named(self, "hashes", MAX_HASHES);
            if let Some((b, at)) = buckets {
                buckets_even(self, b, at);
            }
            Some((buckets?.0, hashes?.0))
        } else {
            None
        };
        let causal = args.causal.take().is_some();
        let (input, (heads, heads_at), (chunk, chunk_span)) = (input?, heads?, chunk?);
        if !heads_divide_width(self, heads, heads_at, &input) {
            return None;
        }
        let kind = if lsh { ReformerAttention::Lsh } else { ReformerAttention::Local };
        let call = AttentionCall {
            kind,
            heads,
            chunk,
            chunks_before: before?,
            chunks_after: after?,
            hashing,
            causal,
            span,
            chunk_span,
        };
        let width = input.width;
        self.tensor(Op::Attention { call, input }, width, span)
    }

    /// `layer_norm(x, eps = …)`.
    fn layer_norm(&mut self, span: Span, args: &mut Args) -> Option<Val> {
        let input = self.tensor_arg(args, 0, span, "`layer_norm(x, eps = …)`")?;
        args.extra = args.positional.len() > 1;
        let eps = match args.take("eps") {
            None => 1e-5,
            Some(e) => match self.constant(e)? {
                Const::Float(x) if x > 0.0 => x,
                other => {
                    self.error(e.span(), format!("`eps` is a number > 0, found {}", other.describe()));
                    return None;
                }
            },
        };
        let width = input.width;
        self.tensor(Op::Norm { eps, input }, width, span)
    }

    /// `linear(x, out[, bias = true])`.
    fn linear(&mut self, span: Span, args: &mut Args) -> Option<Val> {
        let form = "`linear(x, out)`";
        let input = self.tensor_arg(args, 0, span, form)?;
        let (out, _) =
            self.size(args.positional.get(1).copied(), span, &format!("the output width ({form})"), 1 << 24)?;
        args.extra = args.positional.len() > 2;
        let bias = match args.take("bias") {
            None => true,
            Some(e) => match self.constant(e)? {
                Const::Bool(b) => b,
                other => {
                    self.error(e.span(), format!("`bias` is `true` or `false`, found {}", other.describe()));
                    return None;
                }
            },
        };
        self.tensor(Op::Linear { input, bias }, out, span)
    }

    fn activation(&mut self, func: &str, span: Span, args: &mut Args) -> Option<Val> {
        let input = self.tensor_arg(args, 0, span, &format!("`{func}(x)`"))?;
        args.extra = args.positional.len() > 1;
        let act = match func {
            "gelu" => Activation::GeluErf,
            "gelu_tanh" => Activation::GeluTanh,
            _ => Activation::Relu,
        };
        let width = input.width;
        self.tensor(Op::Act { act, input }, width, span)
    }

    /// `concat(x1, x2)`: the two streams side by side.
    fn concat(&mut self, span: Span, args: &mut Args) -> Option<Val> {
        let form = "`concat(x1, x2)`";
        let a = self.tensor_arg(args, 0, span, form);
        let b = self.tensor_arg(args, 1, span, form);
        args.extra = args.positional.len() > 2;
        let (a, b) = (a?, b?);
        if !concat_same_widths(self, span, &a, &b) {
            return None;
        }
        let width = a.width + b.width;
        self.tensor(Op::Concat(a, b), width, span)
    }
}

#[derive(Default)]
struct Args<'e> {
    positional: Vec<&'e Expr>,
    named: Vec<(String, &'e Expr, Span)>,
    causal: Option<Span>,
    /// More positional arguments than the call takes.
    extra: bool,
}

impl<'e> Args<'e> {
    fn take(&mut self, name: &str) -> Option<&'e Expr> {
        let i = self.named.iter().position(|(n, _, _)| n == name)?;
        Some(self.named.remove(i).1)
    }
}

/// One recognised layer.
struct Layer {
    attention: AttentionCall,
    /// The attention's and the feed-forward's norm eps, with where each was written.
    eps: (f64, Span),
    ff_eps: (f64, Span),
    act: (Activation, Span),
    d_ff: (usize, Span),
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

/// Rule: the two streams start as the same tensor, the embeddings: `let (x1, x2) = (x, x);`.
fn streams_start_equal(
    it: &mut Interp,
    span: Span,
    names: &[(String, Span)],
    values: &[Option<Val>],
) -> Option<Rc<Tensor>> {
    let form = "a Reformer's two streams both start as the embeddings: `let (x1, x2) = (x, x);`";
    match (names, values) {
        ([a, b], [Some(Val::Tensor(x)), Some(Val::Tensor(y))]) if Rc::ptr_eq(x, y) && a.0 != b.0 => {
            let x = x.clone();
            it.bind(&a.0, Val::Tensor(x.clone()), a.1);
            it.bind(&b.0, Val::Tensor(x.clone()), b.1);
            Some(x)
        }
        (_, [_, _]) if values.iter().any(|v| matches!(v, Some(Val::Poison) | None)) => None,
        _ => {
            it.error(span, form);
            None
        }
    }
}

/// Rule: the embeddings are the token embeddings plus axial positions of the same width (HF's
/// `ReformerEmbeddings`). Returns the vocabulary and the axial shape and dims.
fn embeddings_are_tokens_plus_axial(it: &mut Interp, x: &Tensor) -> Option<(usize, [usize; 2], [usize; 2])> {
    if let Op::Add(a, b) = &x.op {
        let (a, b) = if matches!(a.op, Op::Axial { .. }) { (b, a) } else { (a, b) };
        if let (Op::Embedding { vocab }, Op::Axial { shape, dims }) = (&a.op, &b.op) {
            return Some((*vocab, *shape, *dims));
        }
    }
    it.error(
        x.span,
        "a Reformer's streams start from `embedding(tokens, vocab_size, d_model) + axial_positions(shape = [s0, s1], dims = [d0, d1])`",
    );
    None
}

/// The stream a tensor is, when it is one as it entered the layer.
fn stream_of(t: &Tensor) -> Option<u8> {
    match t.op {
        Op::Stream(s) => Some(s),
        _ => None,
    }
}

/// Rule: a reversible layer is `Y1 = X1 + Attention(LayerNorm(X2))` then `Y2 = X2 +
/// FeedForward(LayerNorm(Y1))` (Kitaev et al. 2020, eq. 3; HF's `ReversibleLayer`): the first
/// stream reads the second, the second reads the *updated* first, so each layer can be undone.
fn reversible_layer(
    it: &mut Interp,
    first: &(Rc<Tensor>, Span),
    second: &(Rc<Tensor>, Span),
    streams: &[String; 2],
) -> Option<Layer> {
    let [s1, s2] = streams;
    let residual = |t: &Tensor, stream: u8| -> Option<Rc<Tensor>> {
        match &t.op {
            Op::Add(a, b) if stream_of(a) == Some(stream) => Some(b.clone()),
            Op::Add(a, b) if stream_of(b) == Some(stream) => Some(a.clone()),
            _ => None,
        }
    };
    let Some(attn) = residual(&first.0, 1) else {
        it.error(
            first.1,
            format!("`{s1}` is updated as its old value plus the attention over `{s2}`: {LAYER_FORM}"),
        );
        return None;
    };
    let Op::Attention { call, input } = &attn.op else {
        it.error(attn.span, format!("the first stream adds an attention sublayer, `lsh_attention(…)` or `local_attention(…)`: {LAYER_FORM}"));
        return None;
    };
    let eps = normed_stream(it, input, 2, streams, "the attention reads")?;
    let Some(ff) = residual(&second.0, 2) else {
        it.error(second.1, format!("`{s2}` is updated as its old value plus the feed-forward of the updated `{s1}`: {LAYER_FORM}"));
        return None;
    };
    // linear(act(linear(layer_norm(y1), d_ff)), d_model)
    let shape_error = |it: &mut Interp, at: Span| {
        it.error(at, format!("the second stream adds a feed-forward, `linear(gelu(linear(layer_norm({s1}, eps = …), d_ff)), d_model)` (`gelu`, `gelu_tanh` or `relu`): {LAYER_FORM}"));
    };
    let Op::Linear { input: hidden, bias: out_bias } = &ff.op else {
        shape_error(it, ff.span);
        return None;
    };
    let Op::Act { act, input: inner } = &hidden.op else {
        shape_error(it, hidden.span);
        return None;
    };
    let Op::Linear { input: normed, bias: in_bias } = &inner.op else {
        shape_error(it, inner.span);
        return None;
    };
    for (bias, at) in [(in_bias, inner.span), (out_bias, ff.span)] {
        if !bias {
            it.error(at, "HF's Reformer feed-forward linears have biases: remove `bias = false`");
        }
    }
    let Op::Norm { eps: ff_eps, input: y1 } = &normed.op else {
        shape_error(it, normed.span);
        return None;
    };
    if !Rc::ptr_eq(y1, &first.0) {
        let old = stream_of(y1) == Some(1);
        let message = if old {
            format!("the feed-forward reads `{s1}` as it entered the layer; a reversible layer's second stream reads the *updated* first stream (`Y2 = X2 + FeedForward(Y1)`): update `{s1}` first, then read it")
        } else {
            format!("the feed-forward reads the updated first stream `{s1}` (`Y2 = X2 + FeedForward(Y1)`): {LAYER_FORM}")
        };
        it.error(normed.span, message);
        return None;
    }
    Some(Layer {
        attention: *call,
        eps,
        ff_eps: (*ff_eps, normed.span),
        act: (*act, hidden.span),
        d_ff: (inner.width, inner.span),
    })
}

/// Rule: an attention sublayer reads the layer norm of the other stream as it entered the layer
/// (`Attention(LayerNorm(X2))`). Returns the norm's eps.
fn normed_stream(
    it: &mut Interp,
    t: &Tensor,
    stream: u8,
    streams: &[String; 2],
    what: &str,
) -> Option<(f64, Span)> {
    let name = &streams[usize::from(stream - 1)];
    match &t.op {
        Op::Norm { eps, input } if stream_of(input) == Some(stream) => Some((*eps, t.span)),
        Op::Norm { input, .. } => {
            it.error(
                input.span,
                format!(
                    "{what} `layer_norm({name}, …)`, the other stream as it entered the layer: {LAYER_FORM}"
                ),
            );
            None
        }
        _ => {
            it.error(t.span, format!("{what} `layer_norm({name}, eps = …)` (a Reformer normalises before each sublayer): {LAYER_FORM}"));
            None
        }
    }
}

/// Rule: the head is `linear(layer_norm(concat(x1, x2), eps = …), vocab_size)`: both streams as
/// they leave the last layer, side by side, normalised, projected with a bias (HF's
/// `lm_head.decoder`). Returns the norm's eps and the vocabulary.
fn head_over_both_streams(it: &mut Interp, t: &Tensor) -> Option<((f64, Span), usize)> {
    let form = "a Reformer ends with `linear(layer_norm(concat(x1, x2), eps = …), vocab_size)`";
    let Op::Linear { input: normed, bias } = &t.op else {
        it.error(t.span, form);
        return None;
    };
    if !bias {
        it.error(t.span, "HF's Reformer head (`lm_head.decoder`) has a bias: remove `bias = false`");
    }
    let Op::Norm { eps, input: joined } = &normed.op else {
        it.error(normed.span, form);
        return None;
    };
    match &joined.op {
        Op::Concat(a, b) if stream_of(a) == Some(1) && stream_of(b) == Some(2) => {
            Some(((*eps, normed.span), t.width))
        }
        _ => {
            it.error(joined.span, format!("{form}: the final norm reads both streams, first then second"));
            None
        }
    }
}

/// Rule: `concat` joins the two streams, which are one width.
fn concat_same_widths(it: &mut Interp, span: Span, a: &Tensor, b: &Tensor) -> bool {
    if a.width == b.width {
        return true;
    }
    it.error(
        span,
        format!(
            "`concat` joins the two streams, which are one width: found [S, {}] and [S, {}]",
            a.width, b.width
        ),
    );
    false
}

/// Rule: the heads split the stream's width evenly (HF's `attention_head_size · heads =
/// hidden_size`).
fn heads_divide_width(it: &mut Interp, heads: usize, at: Span, input: &Tensor) -> bool {
    if input.width.is_multiple_of(heads) {
        return true;
    }
    it.error(at, format!("{heads} heads do not split the attention's input [S, {}] evenly", input.width));
    false
}

/// Rule: a position's bucket is the argmax over `[x·R, −x·R]`, so LSH buckets come in pairs.
fn buckets_even(it: &mut Interp, buckets: usize, at: Span) {
    if buckets.is_multiple_of(2) {
        return;
    }
    let below = if buckets > 1 { format!("{} or ", buckets - 1) } else { String::new() };
    it.error(at, format!("LSH buckets are the argmax over `[x·R, −x·R]`, so they come in pairs: {buckets} is odd (try {below}{})", buckets + 1));
}

/// Rule: what the preset takes once (norm eps, activation, `d_ff`, heads, direction, each kind's
/// chunking and hashing) is the same in every layer and sublayer (and the final norm); the error
/// sits on the first that differs, with the first layer's.
fn same_across_layers<T: PartialEq + std::fmt::Display>(
    it: &mut Interp,
    what: &str,
    mut values: impl Iterator<Item = (T, Span)>,
) {
    let Some((first, first_at)) = values.next() else { return };
    if let Some((other, at)) = values.find(|(v, _)| *v != first) {
        it.error(
            at,
            format!("this {what} ({other}) differs from the first layer's ({first}): a Reformer's layers share one"),
        );
        it.error(first_at, format!("the first layer's {what} ({first}) is given here"));
    }
}

/// How messages name an activation.
fn activation_name(act: Activation) -> &'static str {
    match act {
        Activation::GeluErf => "`gelu`",
        Activation::GeluTanh => "`gelu_tanh`",
        _ => "`relu`",
    }
}

/// How messages name a direction.
fn direction(causal: bool) -> &'static str {
    if causal {
        "`causal`"
    } else {
        "bidirectional"
    }
}

/// How messages name an attention's chunking and hashing.
fn geometry(a: AttentionCall) -> String {
    let hashing = a.hashing.map(|(b, h)| format!(", buckets = {b}, hashes = {h}")).unwrap_or_default();
    format!(
        "chunk = {}, chunks_before = {}, chunks_after = {}{hashing}",
        a.chunk, a.chunks_before, a.chunks_after
    )
}

/// Rule: inputs are padded to a multiple of the chunk lengths' least common multiple, so the
/// position table (`shape[0] · shape[1]` rows) is such a multiple: each chunk length divides it
/// (then so does their least common multiple).
fn padding_stays_in_the_table(it: &mut Interp, max_positions: usize, calls: &[AttentionCall]) {
    for call in calls.iter().filter(|c| !max_positions.is_multiple_of(c.chunk)) {
        it.error(
            call.chunk_span,
            format!(
                "inputs are padded to a multiple of each chunk length, so a chunk divides the axial table's {max_positions} positions: {} does not (try one dividing {max_positions})",
                call.chunk
            ),
        );
    }
}

/// Rule: the axial table's `shape[0] · shape[1]` positions stay within the presets' bound on
/// `max_positions`.
fn axial_table_fits(it: &mut Interp, shape: [usize; 2], span: Span) -> bool {
    let positions = shape[0].saturating_mul(shape[1]);
    if positions <= MAX_POSITIONS {
        return true;
    }
    it.error(
        span,
        format!(
            "axial positions of shape [{}, {}] make {positions} positions, more than {MAX_POSITIONS}",
            shape[0], shape[1]
        ),
    );
    false
}
