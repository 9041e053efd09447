//! The forward pass of a composed model, interpreted at compile time into three straight-line
//! sections of nodes over tensors `[S, width]`: the statements before the layer loop (the
//! embeddings), the loop body (evaluated once per layer, which must give the same structure every
//! time), and the statements after it (final norm, head). Every tensor's width is inferred here,
//! and every mismatch is an error under the expression that caused it.
//!
//! This file holds what the interpretation produces ([`Program`]: sections of [`Node`]s over
//! [`Tensor`]s, with their fields) and the interpreter's state; its parts are child modules:
//! the sections of a pass (`sections`), statements and expressions (`eval`), names (`scope`),
//! layer calls and their arguments (`call`), the node constructors with their width rules
//! (`layers`, `attention`, with the score arguments in `masks`, and an encoder-decoder's
//! cross-attentions in `cross`), and what a pass returns (`outputs`).

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Pat, Stmt};

use super::constant::Const;
use crate::ctxt::Ctxt;
use crate::graph::{FieldKind, Index};
use crate::spec::{Activation, ImageInput, Output, Pool, Sparse};

mod attention;
mod call;
mod cross;
mod eval;
mod layers;
mod masks;
mod outputs;
mod scope;
mod sections;

/// A tensor `[S, width]` (or `[M, width]`: rows of the encoder's memory): one value of the
/// program (each is written once).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub width: usize,
    pub span: Span,
    /// The name it was bound to (or what computed it): scratch buffers are named after it.
    pub hint: String,
    /// A row per source token (the memory and its projections), not per target token.
    pub memory: bool,
    /// A row per sequence (`mean_pool(x)`, …), not per token.
    pub pooled: bool,
}

impl Tensor {
    /// `[S, 64]`, `[M, 64]` or `[B, 64]` (pooled), as messages write shapes.
    pub fn shape(&self) -> String {
        let rows = if self.memory {
            "M"
        } else if self.pooled {
            "B"
        } else {
            "S"
        };
        format!("[{rows}, {}]", self.width)
    }
}

#[derive(Clone, Debug)]
pub struct FieldDef {
    pub kind: FieldKind,
    /// Checkpoint module name relative to the section's prefix (empty for computed tables).
    pub weight: String,
}

impl PartialEq for FieldDef {
    /// Same layer, same checkpoint name.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.weight == other.weight
    }
}

#[derive(Clone, PartialEq, Debug)]
pub struct AttentionNode {
    /// `q` alone is a fused `[Q | K | V]`; with `kv`, three projections (fused when lowered).
    pub q: usize,
    pub kv: Option<(usize, usize)>,
    pub out: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub window: Option<usize>,
    /// A block-sparse layout the scores also obey (may differ by layer: `Repeat::layouts`).
    pub sparse: Option<Sparse>,
    /// Rotary positions on queries and keys: `(theta, rotary_dims)`.
    pub rope: Option<(f64, usize)>,
    /// A position bias added to the scores (`bias = alibi` / `bias = relative(…)`), and where
    /// it was written.
    pub bias: Option<(BiasArg, At)>,
    /// Scores are multiplied by `1/sqrt(head_dim)` (`scaled = false`: T5, which folds it into
    /// its query weights).
    pub scaled: bool,
}

/// A source place that compares equal to every other: nodes compare by structure (a layer
/// evaluated twice must give equal nodes), not by where they were written.
#[derive(Clone, Copy, Debug)]
pub struct At(pub Span);

impl PartialEq for At {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The stack's position bias an attention adds to its scores; one table serves every layer.
#[derive(Clone, PartialEq, Debug)]
pub enum BiasArg {
    /// ALiBi's fixed slopes (BLOOM's; `−slope·|j − p|` when bidirectional).
    Alibi,
    /// T5's learned buckets; `weights` names the `[buckets, heads]` table (`nn.Embedding`).
    Relative { buckets: usize, max_distance: usize, weights: String },
}

/// Cross-attention: queries `q` over keys `k` and values `v` projected from the memory.
#[derive(Clone, PartialEq, Debug)]
pub struct CrossNode {
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub out: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Scores are multiplied by `1/sqrt(head_dim)` (`scaled = false`: T5).
    pub scaled: bool,
}

/// Additive or location cross-attention: each row of `input` attends to the encoder's memory
/// rows (`additive_attention`, `location_attention`, `location_sensitive_attention`).
#[derive(Clone, PartialEq, Debug)]
pub struct AdditiveNode {
    pub field: usize,
    pub input: usize,
    pub out: usize,
    pub kind: crate::graph::AdditiveKind,
    /// The longest source the alignments cover (`max_positions`).
    pub max_source: usize,
}

#[derive(Clone, PartialEq, Debug)]
pub enum Node {
    /// `out = table[index]`, or `acc + table[index]` (folded from an add when lowering).
    Gather {
        field: usize,
        index: Index,
        offset: usize,
        acc: Option<usize>,
        out: usize,
    },
    Linear {
        field: usize,
        input: usize,
        out: usize,
    },
    Act {
        input: usize,
        out: usize,
        act: Activation,
    },
    Glu {
        input: usize,
        out: usize,
        act: Activation,
    },
    Norm {
        field: usize,
        input: usize,
        out: usize,
    },
    Add {
        a: usize,
        b: usize,
        out: usize,
    },
    /// Feature-axis concatenation.
    Concat {
        inputs: Vec<usize>,
        out: usize,
    },
    /// Columns `start..start + width(out)` of `input`.
    Slice {
        input: usize,
        start: usize,
        out: usize,
    },
    Attention(AttentionNode),
    Cross(CrossNode),
    Additive(AdditiveNode),
    /// `out = input * factor`.
    Scale {
        input: usize,
        out: usize,
        factor: f64,
    },
    /// One row per sequence from the per-token `input` (after the layers only).
    Pool {
        input: usize,
        out: usize,
        pool: Pool,
    },
    /// L2 normalisation of each pooled row.
    Normalize {
        input: usize,
        out: usize,
    },
    /// Images → rows: each image's patches projected (`proj`, a Conv2d-layout linear), the class
    /// token (`cls`) in front, positions (`pos`) added (Hugging Face's `ViTEmbeddings`).
    Patches {
        image: ImageInput,
        proj: usize,
        cls: Option<usize>,
        pos: usize,
        out: usize,
    },
}

impl Node {
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            Node::Gather { acc, .. } => acc.iter().copied().collect(),
            Node::Patches { .. } => vec![],
            Node::Linear { input, .. } | Node::Act { input, .. } | Node::Glu { input, .. } => vec![*input],
            Node::Norm { input, .. } => vec![*input],
            Node::Add { a, b, .. } => vec![*a, *b],
            Node::Concat { inputs, .. } => inputs.clone(),
            Node::Slice { input, .. } => vec![*input],
            Node::Attention(a) => match a.kv {
                Some((k, v)) => vec![a.q, k, v],
                None => vec![a.q],
            },
            Node::Cross(c) => vec![c.q, c.k, c.v],
            Node::Additive(a) => vec![a.input],
            Node::Scale { input, .. } | Node::Pool { input, .. } | Node::Normalize { input, .. } => {
                vec![*input]
            }
        }
    }

    pub fn out(&self) -> usize {
        match self {
            Node::Gather { out, .. }
            | Node::Linear { out, .. }
            | Node::Act { out, .. }
            | Node::Glu { out, .. }
            | Node::Norm { out, .. }
            | Node::Add { out, .. }
            | Node::Concat { out, .. }
            | Node::Slice { out, .. }
            | Node::Scale { out, .. }
            | Node::Pool { out, .. }
            | Node::Normalize { out, .. }
            | Node::Patches { out, .. } => *out,
            Node::Attention(a) => a.out,
            Node::Cross(c) => c.out,
            Node::Additive(a) => a.out,
        }
    }
}

/// One straight-line part of the forward pass.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub tensors: Vec<Tensor>,
    pub nodes: Vec<Node>,
    pub fields: Vec<FieldDef>,
    /// The stream coming in (the layers' and the tail's `x`).
    pub input: Option<usize>,
    /// The stream going out (the embeddings' result, the layer's updated `x`), or the tail's
    /// returned value.
    pub output: Option<usize>,
    /// The encoder's memory as read here (a decoder layer's cross-attention).
    pub memory: Option<usize>,
}

impl Section {
    fn tensor(&mut self, width: usize, span: Span, hint: &str) -> usize {
        self.tensors.push(Tensor { width, span, hint: hint.to_string(), memory: false, pooled: false });
        self.tensors.len() - 1
    }

    /// A tensor with a row per source token.
    fn memory_tensor(&mut self, width: usize, span: Span, hint: &str) -> usize {
        let t = self.tensor(width, span, hint);
        self.tensors[t].memory = true;
        t
    }

    /// Whether two evaluations of a loop body have the same structure, ignoring attention windows
    /// and block-sparse layouts (which may vary by layer).
    fn same_shape(&self, other: &Section) -> bool {
        let strip = |n: &Node| match n {
            Node::Attention(a) => Node::Attention(AttentionNode { window: None, sparse: None, ..a.clone() }),
            other => other.clone(),
        };
        self.fields == other.fields
            && self.nodes.len() == other.nodes.len()
            && self.nodes.iter().zip(&other.nodes).all(|(a, b)| strip(a) == strip(b))
            && self.tensors.iter().map(|t| t.width).eq(other.tensors.iter().map(|t| t.width))
    }
}

/// The repeated block: its body's structure (from layer 0) and what varies by layer.
#[derive(Debug)]
pub struct Repeat {
    pub count: usize,
    /// Checkpoint prefix with `{i}` for the layer index.
    pub prefix: String,
    pub body: Section,
    /// For each attention node of the body (in order), its window in each layer.
    pub windows: Vec<Vec<Option<usize>>>,
    /// For each attention node of the body (in order), its block-sparse layout in each layer.
    pub layouts: Vec<Vec<Option<Sparse>>>,
    pub span: Span,
}

/// The interpreted forward pass.
#[derive(Debug)]
pub struct Program {
    pub embeddings: Section,
    pub repeat: Repeat,
    pub tail: Section,
    /// Which inputs the forward pass takes.
    pub token_types: bool,
    /// Checkpoint tensors to ignore (`{i}`: each layer).
    pub ignored: Vec<String>,
    /// `-> (states, embedding)`: each named output (the pooling nodes are not in `tail`).
    pub outputs: Vec<Output>,
}

/// The encoder's output as a decoder pass sees it: the input's name and the memory's width
/// (unknown when the encoder pass failed: reads of it then stay silent).
#[derive(Clone, Copy)]
pub struct Memory<'a> {
    pub name: &'a str,
    pub width: Option<usize>,
}

/// What a name or an expression evaluates to.
#[derive(Clone, Copy, Debug)]
enum Val {
    Tensor(usize),
    Const(Const),
    Input(Index),
    /// `image` of `fn forward(image)`: read by `patch_embedding`.
    Image,
    /// The encoder's output, an input of a decoder pass: read by the layers' cross-attention.
    Memory,
    /// The result of an expression that already reported an error: uses stay silent.
    Poison,
}

/// A name in scope: a `let`, an input, the layer index.
struct Binding {
    name: String,
    val: Val,
    span: Span,
    used: bool,
    /// Which section defined it (0 embeddings, 1 layer, 2 tail); tensors do not cross sections.
    section: usize,
}

/// The inputs a pass may take besides the encoder's memory.
const INPUTS: &[&str] = &["tokens", "token_types", "image"];

/// The state of one pass's interpretation; its methods are in the child modules, by concern.
struct Interp<'c> {
    cx: &'c mut Ctxt,
    dims: HashMap<String, usize>,
    scope: Vec<Binding>,
    section: usize,
    cur: Section,
    /// Fields created by the statement being evaluated, named when it ends.
    pending: Vec<usize>,
    /// Errors of later loop iterations are reported only when the first was clean.
    quiet: bool,
    /// Every name a `let` binds anywhere in the body, with its statement's place in source
    /// order: a use at or before that place is a cycle.
    declared: Vec<(String, usize)>,
    /// Each statement's place in source order, and the place of the one being evaluated.
    order: HashMap<*const Stmt, usize>,
    at: usize,
    /// Errors recorded before the current statement, and before the current section.
    stmt_errors: usize,
    section_errors: usize,
    /// The current statement read a value that already failed.
    poisoned: bool,
    /// The memory a decoder pass reads.
    memory: Option<Memory<'c>>,
    /// A pass of an encoder-decoder (`fn encode` / `fn decode`), not `fn forward`.
    seq2seq: bool,
    /// The pass reads images (`fn forward(image)`): its head may project a pooled vector.
    image: bool,
}

/// Interprets the body of `fn forward`: the statements before the layer loop, the loop, and the
/// statements after it, each into its section.
pub fn interpret<'c>(
    cx: &'c mut Ctxt,
    dims: &[(syn::Ident, usize)],
    forward: &crate::ast::Forward,
    memory: Option<Memory<'c>>,
) -> Option<Program> {
    let mut it = Interp {
        cx,
        dims: dims.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        scope: Vec::new(),
        section: 0,
        cur: Section::default(),
        pending: Vec::new(),
        quiet: false,
        declared: Vec::new(),
        order: HashMap::new(),
        at: 0,
        stmt_errors: 0,
        section_errors: 0,
        poisoned: false,
        memory,
        seq2seq: forward.name != "forward",
        image: false,
    };
    if !forward.tuple.is_empty() && forward.name != "forward" {
        it.cx.error(
            forward.output.span(),
            format!("`fn {}` returns one tensor; a tuple of outputs (per-token states and pooled vectors) is an encoder's `fn forward`", forward.name),
        );
        return None;
    }
    number(&forward.body.stmts, &mut it.order, &mut it.declared);
    let token_types = it.bind_inputs(forward);
    let ignored = forward_attrs(it.cx, &forward.attrs);
    let (loop_at, for_loop) = it.layer_loop(forward)?;
    let stmts = &forward.body.stmts;
    let (embeddings, carried, width) = it.embeddings(&stmts[..loop_at], for_loop)?;
    let repeat = it.repeat(for_loop, &carried, width)?;
    let (tail, outputs) = it.tail(forward, &stmts[loop_at + 1..], for_loop, &carried, width)?;
    Some(Program { embeddings, repeat, tail, token_types, ignored, outputs })
}

/// Numbers the statements in source order (the loop body after the `for`) and lists the names
/// each `let` binds with its number.
fn number(stmts: &[Stmt], order: &mut HashMap<*const Stmt, usize>, declared: &mut Vec<(String, usize)>) {
    for stmt in stmts {
        let n = order.len();
        order.insert(stmt as *const Stmt, n);
        match stmt {
            Stmt::Local(syn::Local { pat: Pat::Ident(p), .. }) => declared.push((p.ident.to_string(), n)),
            Stmt::Expr(Expr::ForLoop(f), _) => number(&f.body.stmts, order, declared),
            _ => {}
        }
    }
}

/// `#[weights(ignore = ["…", …])]` on `fn forward`.
fn forward_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Vec<String> {
    let mut ignored = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("weights") {
            cx.error(attr.span(), "unknown attribute: `fn forward` takes `#[weights(ignore = [\"…\"])]`");
            continue;
        }
        let parsed = attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("ignore") {
                return Err(meta.error("expected `ignore = [\"tensor name\", …]`"));
            }
            let list: syn::ExprArray = meta.value()?.parse()?;
            for e in list.elems {
                match e {
                    Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => ignored.push(s.value()),
                    other => return Err(syn::Error::new(other.span(), "expected a tensor name string")),
                }
            }
            Ok(())
        });
        if let Err(e) = parsed {
            cx.error(e.span(), e);
        }
    }
    ignored
}
