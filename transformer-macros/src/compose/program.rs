//! The forward pass of a composed model, interpreted at compile time into three straight-line
//! sections of nodes over tensors `[S, width]`: the statements before the layer loop (the
//! embeddings), the loop body (evaluated once per layer, which must give the same structure every
//! time), and the statements after it (final norm, head). Every tensor's width is inferred here,
//! and every mismatch is an error under the expression that caused it.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, BinOp, Expr, LitStr, Pat, Stmt, Token};

use super::constant::{self, Const};
use crate::ctxt::Ctxt;
use crate::graph::{FieldKind, Index, Layout};
use crate::spec::{Activation, ImageInput, Output, OutputKind, Pool, Sparse, SparsePattern};
use crate::suggest::closest;

mod cross;

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

struct Binding {
    name: String,
    val: Val,
    span: Span,
    used: bool,
    /// Which section defined it (0 embeddings, 1 layer, 2 tail); tensors do not cross sections.
    section: usize,
}

const FUNCTIONS: &[&str] = &[
    "embedding",
    "sinusoidal",
    "linear",
    "layer_norm",
    "rms_norm",
    "gelu",
    "gelu_tanh",
    "relu",
    "swiglu",
    "geglu",
    "geglu_tanh",
    "attention",
    "concat",
    "slice",
    "split",
    "mean_pool",
    "max_pool",
    "cls",
    "normalize",
    "patch_embedding",
    "additive_attention",
    "location_attention",
    "location_sensitive_attention",
];
const INPUTS: &[&str] = &["tokens", "token_types", "image"];

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

/// Interprets the body of `fn forward`.
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
    let mut token_types = false;
    for input in &forward.inputs {
        match input.to_string().as_str() {
            "tokens" => it.bind("tokens", Val::Input(Index::Token), input.span(), true),
            "image" if forward.name == "forward" => {
                it.image = true;
                it.bind("image", Val::Image, input.span(), true);
            }
            "token_types" => {
                token_types = true;
                it.bind("token_types", Val::Input(Index::TokenType), input.span(), true);
            }
            name if memory.is_some_and(|m| m.name == name) => {
                it.bind(name, Val::Memory, input.span(), true);
            }
            other => {
                let mut known = INPUTS.to_vec();
                known.extend(memory.map(|m| m.name));
                let hint =
                    closest(other, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                let takes = match memory {
                    Some(m) => format!("`fn {}` takes `tokens`, optionally `token_types`, and `{}` (the output of `fn encode`)", forward.name, m.name),
                    None if forward.name == "decode" => format!("`fn decode` reads `{other}`, but no `fn encode(tokens) -> {other} {{ … }}` produces it"),
                    None => "a composed model takes `tokens` and optionally `token_types`, or `image`".to_string(),
                };
                it.cx.error(input.span(), format!("unknown input `{other}`{hint}: {takes}"));
                // Reads of it in the body stay silent: the input is the one mistake.
                it.bind(other, Val::Poison, input.span(), true);
            }
        }
    }
    if let Some(m) = memory.filter(|m| !forward.inputs.iter().any(|i| i == m.name)) {
        if !forward.inputs.iter().any(|i| !INPUTS.contains(&i.to_string().as_str())) {
            it.cx.error(
                forward.name.span(),
                format!("`fn {}` reads the encoder's output through cross-attention: take it as an input, `fn {}(tokens, {})`", forward.name, forward.name, m.name),
            );
        }
        it.bind(m.name, Val::Poison, forward.name.span(), true);
    }
    it.bind("positions", Val::Input(Index::Position), forward.name.span(), true);
    if !forward.inputs.iter().any(|i| i == "tokens" || (i == "image" && forward.name == "forward")) {
        it.cx.error(forward.name.span(), "a composed model takes `tokens`: `fn forward(tokens) -> …`");
    }
    let ignored = forward_attrs(it.cx, &forward.attrs);

    let stmts = &forward.body.stmts;
    let loop_at = stmts.iter().position(|s| matches!(s, Stmt::Expr(Expr::ForLoop(_), _)));
    let Some(loop_at) = loop_at else {
        it.cx.error(
            forward.body.brace_token.span.join(),
            "a composed model repeats a block of layers: `for layer in 0..layers { … }`",
        );
        return None;
    };
    if let Some(second) = stmts[loop_at + 1..].iter().find(|s| matches!(s, Stmt::Expr(Expr::ForLoop(_), _))) {
        it.cx
            .error(second.span(), "one repeated block per model: merge the loops (layers may vary by index)");
    }
    let Stmt::Expr(Expr::ForLoop(for_loop), _) = &stmts[loop_at] else { unreachable!("found above") };

    // Embeddings: the statements before the loop.
    for stmt in &stmts[..loop_at] {
        it.stmt(stmt, false);
    }
    let carried = it.carried(for_loop)?;
    let stream_in = it.lookup_quiet(&carried).and_then(|b| match b {
        Val::Tensor(t) => Some(t),
        _ => None,
    });
    let Some(stream_in) = stream_in else {
        // A stream whose expression failed was reported there.
        if !matches!(it.lookup_quiet(&carried), Some(Val::Poison)) {
            it.cx.error(for_loop.span(), format!("`{carried}` must be a tensor before the layers"));
        }
        return None;
    };
    let width = it.cur.tensors[stream_in].width;
    it.cur.output = Some(stream_in);
    it.mark_used(&carried);
    it.unused_in_section(0);
    let embeddings = std::mem::take(&mut it.cur);

    let repeat = it.repeat(for_loop, &carried, width)?;

    // Tail: the statements after the loop, the last one the result.
    it.section = 2;
    it.section_errors = it.cx.len();
    it.cur = Section::default();
    let input = it.cur.tensor(width, for_loop.span(), &carried);
    it.cur.input = Some(input);
    it.rebind(&carried, Val::Tensor(input));
    let mut result = None;
    for (n, stmt) in stmts[loop_at + 1..].iter().enumerate() {
        let last = loop_at + 1 + n == stmts.len() - 1;
        match stmt {
            Stmt::Expr(e, None) if last && forward.tuple.is_empty() => {
                it.at = it.order.get(&(stmt as *const Stmt)).copied().unwrap_or(it.at);
                it.stmt_errors = it.cx.len();
                it.poisoned = false;
                let names = weight_names(it.cx, expr_attrs(e));
                result = it.eval(e);
                it.finish_names(names, None, e.span());
            }
            _ => it.stmt(stmt, false),
        }
    }
    if !forward.tuple.is_empty() {
        let (output, outputs) = it.tuple_outputs(&forward.tuple)?;
        it.cur.output = Some(output);
        it.unused_in_section(2);
        let mut tail = std::mem::take(&mut it.cur);
        // Pooling runs in the generated API, after the graph's blocks.
        tail.nodes.retain(|n| !matches!(n, Node::Pool { .. } | Node::Normalize { .. }));
        return Some(Program { embeddings, repeat, tail, token_types, ignored, outputs });
    }
    let output = match result {
        Some(Val::Tensor(t)) => t,
        Some(Val::Poison) => return None,
        Some(other) => {
            it.cx.error(
                stmts.last().map_or(forward.output.span(), |s| s.span()),
                format!("`{}` must be a tensor, found {}", forward.output, it.describe(other)),
            );
            return None;
        }
        None => {
            it.cx.error(
                forward.output.span(),
                format!(
                    "the forward pass never produces `{}`: end the body with its expression (no `;`)",
                    forward.output
                ),
            );
            return None;
        }
    };
    if it.cur.tensors[output].pooled && !it.image {
        let (span, what) = (it.cur.tensors[output].span, forward.output.to_string());
        it.cx.error(span, format!("`-> {what}` is one row per token, but this is pooled (a row per sequence): name the outputs, e.g. `-> (states, embedding)` with `let states = x;` and `let embedding = normalize(mean_pool(x));`"));
        return None;
    }
    it.cur.output = Some(output);
    it.unused_in_section(2);
    let tail = std::mem::take(&mut it.cur);
    Some(Program { embeddings, repeat, tail, token_types, ignored, outputs: Vec::new() })
}

/// Methods the generated API already has: an output named like one would shadow it.
const TAKEN_METHODS: &[&str] =
    &["load", "from_safetensors", "with_threads", "threads", "outputs", "outputs_into"];

/// Rule: each output of `-> (a, b, …)` is named once (it becomes a field and a method).
fn outputs_unique(cx: &mut Ctxt, names: &[syn::Ident]) {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            cx.error(name.span(), format!("`{name}` is listed twice among the outputs: each output is one field of the generated `…Outputs` and one method, so name each once"));
        }
    }
}

/// Rule: an output is not named like a method the generated type already has.
fn outputs_not_methods(cx: &mut Ctxt, names: &[syn::Ident]) {
    for name in names {
        if TAKEN_METHODS.contains(&name.to_string().as_str()) {
            cx.error(name.span(), format!("an output named `{name}` would shadow the generated method `{name}`: rename it (the generated type has {})", TAKEN_METHODS.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")));
        }
    }
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

/// The checkpoint names a statement's `#[weights = "…"]` / `#[weights("…", …)]` gives.
fn weight_names(cx: &mut Ctxt, attrs: &[Attribute]) -> Option<(Vec<String>, Span)> {
    let mut out = None;
    for attr in attrs {
        if !attr.path().is_ident("weights") {
            cx.error(attr.span(), "unknown attribute: a statement takes `#[weights = \"checkpoint.name\"]`");
            continue;
        }
        let names = match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Ok(vec![s.value()]),
                other => Err(syn::Error::new(other.span(), "expected a string: `#[weights = \"name\"]`")),
            },
            syn::Meta::List(_) => attr
                .parse_args_with(Punctuated::<LitStr, Token![,]>::parse_terminated)
                .map(|l| l.iter().map(LitStr::value).collect()),
            syn::Meta::Path(p) => Err(syn::Error::new(p.span(), "expected `#[weights = \"name\"]`")),
        };
        match names {
            Ok(n) => out = Some((n, attr.span())),
            Err(e) => cx.error(e.span(), e),
        }
    }
    out
}

/// The attributes written before an expression statement: `syn` attaches them to its leftmost
/// sub-expression (`#[weights = "…"] x = …` puts them on the path `x`).
fn expr_attrs(e: &Expr) -> &[Attribute] {
    let (own, left): (&[Attribute], Option<&Expr>) = match e {
        Expr::Assign(a) => (&a.attrs, Some(&a.left)),
        Expr::Binary(b) => (&b.attrs, Some(&b.left)),
        Expr::Call(c) => (&c.attrs, Some(&c.func)),
        Expr::MethodCall(m) => (&m.attrs, Some(&m.receiver)),
        Expr::ForLoop(f) => (&f.attrs, None),
        Expr::Path(p) => (&p.attrs, None),
        Expr::Paren(p) => (&p.attrs, None),
        _ => (&[], None),
    };
    match left {
        Some(l) if own.is_empty() => expr_attrs(l),
        _ => own,
    }
}

impl Interp<'_> {
    fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.cx.error(span, msg);
        }
    }

    fn bind(&mut self, name: &str, val: Val, span: Span, used: bool) {
        let section = self.section;
        self.scope.push(Binding { name: name.to_string(), val, span, used, section });
    }

    fn rebind(&mut self, name: &str, val: Val) {
        if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
            b.val = val;
            b.section = self.section;
            b.used = false;
        }
    }

    fn lookup_quiet(&self, name: &str) -> Option<Val> {
        self.scope.iter().rev().find(|b| b.name == name).map(|b| b.val)
    }

    fn mark_used(&mut self, name: &str) {
        if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
            b.used = true;
        }
    }

    fn describe(&self, v: Val) -> String {
        match v {
            Val::Tensor(t) => format!("a tensor [S, {}]", self.cur.tensors[t].width),
            Val::Const(c) => c.describe(),
            Val::Input(_) => "an input's ids".to_string(),
            Val::Image => "the input images".to_string(),
            Val::Memory => "the encoder's memory".to_string(),
            Val::Poison => "an invalid value".to_string(),
        }
    }

    /// Reports the section's tensors that were computed and never read (only when the section
    /// had no other error: a failed expression may not have reached its operands).
    fn unused_in_section(&mut self, section: usize) {
        if self.cx.len() > self.section_errors {
            return;
        }
        let unused: Vec<(String, Span)> = self
            .scope
            .iter()
            .filter(|b| b.section == section && !b.used && !b.name.starts_with('_'))
            .filter(|b| matches!(b.val, Val::Tensor(_)))
            .map(|b| (b.name.clone(), b.span))
            .collect();
        for (name, span) in unused {
            self.error(
                span,
                format!("`{name}` is computed but never used (prefix it with `_` if that is meant)"),
            );
        }
    }

    /// The one tensor defined before the loop that the loop body assigns to: the stream.
    fn carried(&mut self, for_loop: &syn::ExprForLoop) -> Option<String> {
        let mut assigned: Vec<String> = Vec::new();
        for stmt in &for_loop.body.stmts {
            if let Stmt::Expr(Expr::Assign(a), _) = stmt {
                if let Expr::Path(p) = &*a.left {
                    if let Some(id) = p.path.get_ident() {
                        let name = id.to_string();
                        if matches!(self.lookup_quiet(&name), Some(Val::Tensor(_) | Val::Poison))
                            && !assigned.contains(&name)
                        {
                            assigned.push(name);
                        }
                    }
                }
            }
        }
        match assigned.as_slice() {
            [one] => Some(one.clone()),
            [] => {
                self.cx.error(
                    for_loop.for_token.span,
                    "the layers never update the stream: assign it in the loop, e.g. `x = x + attention_out;`",
                );
                None
            }
            many => {
                self.cx.error(
                    for_loop.for_token.span,
                    format!(
                        "the layers update {} tensors ({}); a repeated block carries one stream",
                        many.len(),
                        many.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn repeat(&mut self, for_loop: &syn::ExprForLoop, carried: &str, width: usize) -> Option<Repeat> {
        let span = for_loop.for_token.span;
        let Pat::Ident(var) = &*for_loop.pat else {
            self.cx.error(for_loop.pat.span(), "expected the layer index: `for layer in 0..layers`");
            return None;
        };
        let var = var.ident.to_string();
        let count = match &*for_loop.expr {
            Expr::Range(r) if matches!(r.limits, syn::RangeLimits::HalfOpen(_)) => {
                let mut bound = |e: &Option<Box<Expr>>| e.as_deref().map(|e| self.constant(e));
                match (bound(&r.start), bound(&r.end)) {
                    (Some(Some(Const::Int(0))), Some(Some(Const::Int(n)))) if n >= 1 => n as usize,
                    _ => {
                        self.cx.error(r.span(), "expected `0..n` with a whole number of layers n ≥ 1");
                        return None;
                    }
                }
            }
            other => {
                self.cx.error(other.span(), "expected `0..layers`");
                return None;
            }
        };
        let prefix = match weight_names(self.cx, &for_loop.attrs) {
            Some((names, attr_span)) if names.len() == 1 => {
                let p = names[0].replace(&format!("{{{var}}}"), "{i}");
                if p.replace("{i}", "").contains(['{', '}']) {
                    self.cx.error(attr_span, format!("the layers' prefix may contain only `{{{var}}}`"));
                }
                p
            }
            Some((_, attr_span)) => {
                self.cx.error(attr_span, "the layers take one prefix: `#[weights = \"layers.{layer}\"]`");
                return None;
            }
            None => "layers.{i}".to_string(),
        };
        let depth = self.scope.len();
        self.section = 1;
        let mut bodies: Vec<Section> = Vec::new();
        let errors_before = self.cx.len();
        self.section_errors = errors_before;
        for layer in 0..count {
            self.quiet = layer > 0 && self.cx.len() > errors_before;
            self.cur = Section::default();
            let input = self.cur.tensor(width, span, carried);
            self.cur.input = Some(input);
            let outer = self.lookup_quiet(carried);
            self.bind(&var, Val::Const(Const::Int(layer as i128)), for_loop.pat.span(), true);
            self.bind(carried, Val::Tensor(input), span, false);
            for stmt in &for_loop.body.stmts {
                self.stmt(stmt, true);
            }
            let out = match self.lookup_quiet(carried) {
                Some(Val::Tensor(t)) => t,
                _ => input,
            };
            if self.cur.tensors[out].width != width {
                let w = self.cur.tensors[out].width;
                self.error(
                    span,
                    format!("the repeated block turns [S, {width}] into [S, {w}]: a repeat must preserve the shape of `{carried}`"),
                );
            }
            self.cur.output = Some(out);
            if layer == 0 {
                self.mark_used(carried);
                self.unused_in_section(1);
            }
            self.scope.truncate(depth);
            if let Some(v) = outer {
                self.rebind(carried, v);
            }
            bodies.push(std::mem::take(&mut self.cur));
        }
        self.quiet = false;
        if self.cx.len() > errors_before {
            return None;
        }
        if let Some(k) = bodies.iter().position(|b| !b.same_shape(&bodies[0])) {
            self.cx.error(
                span,
                format!("layer {k} differs from layer 0 in more than its attention windows and sparse layouts: a repeated block is one type, so only `window` and `sparse` may vary by layer"),
            );
            return None;
        }
        let attention_windows = |b: &Section| -> Vec<Option<usize>> {
            b.nodes
                .iter()
                .filter_map(|n| if let Node::Attention(a) = n { Some(a.window) } else { None })
                .collect()
        };
        let per_body: Vec<Vec<Option<usize>>> = bodies.iter().map(attention_windows).collect();
        let windows = (0..per_body[0].len()).map(|a| per_body.iter().map(|w| w[a]).collect()).collect();
        let attention_layouts = |b: &Section| -> Vec<Option<Sparse>> {
            b.nodes
                .iter()
                .filter_map(|n| if let Node::Attention(a) = n { Some(a.sparse) } else { None })
                .collect()
        };
        let per_body: Vec<Vec<Option<Sparse>>> = bodies.iter().map(attention_layouts).collect();
        let layouts = (0..per_body[0].len()).map(|a| per_body.iter().map(|l| l[a]).collect()).collect();
        Some(Repeat { count, prefix, body: bodies.swap_remove(0), windows, layouts, span })
    }

    fn constant(&mut self, e: &Expr) -> Option<Const> {
        let lookup = |name: &str| -> Option<Const> {
            if let Some(v) = self.dims.get(name) {
                return Some(Const::Int(*v as i128));
            }
            match self.lookup_quiet(name) {
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

    fn stmt(&mut self, stmt: &Stmt, in_loop: bool) {
        self.at = self.order.get(&(stmt as *const Stmt)).copied().unwrap_or(self.at);
        self.stmt_errors = self.cx.len();
        self.poisoned = false;
        match stmt {
            Stmt::Local(local) => {
                let names = weight_names(self.cx, &local.attrs);
                if let (Pat::Tuple(tuple), Some(init)) = (&local.pat, &local.init) {
                    self.split(tuple, &init.expr);
                    return;
                }
                let (name, span) = match &local.pat {
                    Pat::Ident(p) => (p.ident.to_string(), p.ident.span()),
                    other => {
                        self.error(other.span(), "expected a name: `let name = …;`");
                        return;
                    }
                };
                let Some(init) = &local.init else {
                    self.error(local.span(), "a `let` needs a value");
                    return;
                };
                let val = self.eval(&init.expr).unwrap_or(Val::Poison);
                if let Val::Tensor(t) = val {
                    self.cur.tensors[t].hint = name.clone();
                }
                self.finish_names(names, Some(&name), local.span());
                self.bind(&name, val, span, false);
            }
            Stmt::Expr(Expr::Assign(a), Some(_)) => {
                let names = weight_names(self.cx, expr_attrs(&Expr::Assign(a.clone())));
                let Expr::Path(p) = &*a.left else {
                    self.error(a.left.span(), "expected a name on the left of `=`");
                    return;
                };
                let name = p.path.get_ident().map(ToString::to_string).unwrap_or_default();
                if self.lookup_quiet(&name).is_none() {
                    self.error(
                        a.left.span(),
                        format!("cannot assign to `{name}`: it is not defined (use `let`)"),
                    );
                    return;
                }
                let val = self.eval(&a.right).unwrap_or(Val::Poison);
                self.finish_names(names, None, a.span());
                // Assigning reads nothing: the old value stays "used" only if something read it.
                let old_unused = self
                    .scope
                    .iter()
                    .rev()
                    .find(|b| b.name == name)
                    .filter(|b| !b.used && matches!(b.val, Val::Tensor(_)) && b.section == self.section)
                    .map(|b| b.span);
                if let Some(old) = old_unused {
                    self.error(old, format!("`{name}` is overwritten before it is used"));
                }
                self.rebind(&name, val);
                if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
                    b.span = a.left.span();
                }
            }
            Stmt::Expr(Expr::ForLoop(f), _) if in_loop => {
                self.error(f.for_token.span, "loops do not nest: one repeated block per model");
            }
            Stmt::Expr(e, _) => {
                self.error(e.span(), "expected `let name = …;` or `name = …;`");
            }
            other => self.error(other.span(), "expected `let name = …;` or `name = …;`"),
        }
    }

    /// Names the fields the statement created: from its attribute, or the `let` name when it
    /// created exactly one.
    fn finish_names(&mut self, names: Option<(Vec<String>, Span)>, binding: Option<&str>, span: Span) {
        let pending = std::mem::take(&mut self.pending);
        if self.cx.len() > self.stmt_errors || self.poisoned {
            // The statement stopped early: its layer count is not what the user wrote.
            return;
        }
        match names {
            Some((names, attr_span)) if names.len() != pending.len() => {
                let what = if pending.len() == 1 { "layer" } else { "layers" };
                self.error(
                    attr_span,
                    format!("this statement has {} weighted {what} but names {}: one checkpoint name per layer, innermost first", pending.len(), names.len()),
                );
            }
            Some((names, _)) => {
                for (f, n) in pending.into_iter().zip(names) {
                    self.cur.fields[f].weight = n;
                }
            }
            None => match (pending.as_slice(), binding) {
                ([], _) => {}
                ([f], Some(b)) => self.cur.fields[*f].weight = b.to_string(),
                (_, _) => self.error(
                    span,
                    if pending.len() == 1 {
                        "name the checkpoint tensor of this layer: `#[weights = \"module.name\"]` (or bind it with `let name = …`)".to_string()
                    } else {
                        format!("name the checkpoint tensors of this statement's {} weighted layers: `#[weights(\"…\", …)]`, innermost first", pending.len())
                    },
                ),
            },
        }
    }

    fn field(&mut self, kind: FieldKind, weighted: bool) -> usize {
        self.cur.fields.push(FieldDef { kind, weight: String::new() });
        let f = self.cur.fields.len() - 1;
        if weighted {
            self.pending.push(f);
        }
        f
    }

    fn eval(&mut self, e: &Expr) -> Option<Val> {
        match e {
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Path(p) => {
                let Some(id) = p.path.get_ident() else {
                    self.error(p.span(), "expected a name");
                    return None;
                };
                let name = id.to_string();
                if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
                    b.used = true;
                    let (val, section) = (b.val, b.section);
                    if matches!(val, Val::Memory) {
                        return Some(self.memory_value(id));
                    }
                    if matches!(val, Val::Poison) {
                        self.poisoned = true;
                    }
                    if matches!(val, Val::Tensor(_)) && section != self.section {
                        self.error(id.span(), format!("`{name}` belongs to another part of the model: layers read only the stream, and only the stream leaves them"));
                        return Some(Val::Poison);
                    }
                    return Some(val);
                }
                if let Some(v) = self.dims.get(&name) {
                    return Some(Val::Const(Const::Int(*v as i128)));
                }
                if self.declared.iter().any(|(n, at)| *n == name && *at >= self.at) {
                    self.error(id.span(), format!("`{name}` is used before its `let`: a value cannot depend on itself or on values computed after it (a cycle)"));
                    return Some(Val::Poison);
                }
                if self.declared.iter().any(|(n, _)| *n == name) {
                    self.error(id.span(), format!("`{name}` is not in scope here: values computed inside the layer loop stay there (only the stream leaves it)"));
                    return Some(Val::Poison);
                }
                let mut known: Vec<&str> = self.scope.iter().map(|b| b.name.as_str()).collect();
                known.extend(self.dims.keys().map(String::as_str));
                let hint =
                    closest(&name, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                self.error(id.span(), format!("cannot find `{name}`: it is not a tensor, dim or input defined before this point{hint}"));
                Some(Val::Poison)
            }
            Expr::Binary(b) if matches!(b.op, BinOp::Add(_)) => {
                let (l, r) = (self.eval(&b.left)?, self.eval(&b.right)?);
                match (l, r) {
                    (Val::Tensor(a), Val::Tensor(c)) => {
                        if let Some(p) = [a, c].into_iter().find(|&t| self.cur.tensors[t].pooled) {
                            self.pooled_read("+", b.op.span(), p);
                            return Some(Val::Poison);
                        }
                        if let Some(m) = [a, c].into_iter().find(|&t| self.cur.tensors[t].memory) {
                            let shape = self.cur.tensors[m].shape();
                            self.error(b.op.span(), format!("cannot add {shape}: it has a row per source token, the stream one per target token; the memory only feeds cross-attention's keys and values"));
                            return Some(Val::Poison);
                        }
                        let (wa, wc) = (self.cur.tensors[a].width, self.cur.tensors[c].width);
                        if wa != wc {
                            let name = |t: usize| {
                                let hint = &self.cur.tensors[t].hint;
                                if FUNCTIONS.contains(&hint.as_str()) {
                                    format!("{hint}(…)")
                                } else {
                                    hint.clone()
                                }
                            };
                            let (na, nc) = (name(a), name(c));
                            self.error(b.op.span(), format!("cannot add [S, {wa}] and [S, {wc}]: `{na}` and `{nc}` must have the same width"));
                            return Some(Val::Poison);
                        }
                        let out = self.cur.tensor(wa, b.op.span(), "sum");
                        self.cur.nodes.push(Node::Add { a, b: c, out });
                        Some(Val::Tensor(out))
                    }
                    (Val::Poison, _) | (_, Val::Poison) => Some(Val::Poison),
                    _ => self.constant(e).map(Val::Const),
                }
            }
            Expr::Binary(b) if matches!(b.op, BinOp::Mul(_)) => {
                let (l, r) = (self.eval(&b.left)?, self.eval(&b.right)?);
                let factor = |c: Const| match c {
                    Const::Int(n) => Some(n as f64),
                    Const::Float(x) => Some(x),
                    _ => None,
                };
                let (input, c) = match (l, r) {
                    (Val::Tensor(t), Val::Const(c)) | (Val::Const(c), Val::Tensor(t)) => (t, c),
                    (Val::Poison, _) | (_, Val::Poison) => return Some(Val::Poison),
                    (Val::Tensor(_), Val::Tensor(_)) => {
                        self.error(b.op.span(), "a tensor is scaled by a constant (`x * sqrt(d_model)`); two tensors do not multiply");
                        return Some(Val::Poison);
                    }
                    _ => return self.constant(e).map(Val::Const),
                };
                let Some(factor) = factor(c) else {
                    self.error(
                        b.op.span(),
                        format!("a tensor is scaled by a number, found {}", c.describe()),
                    );
                    return Some(Val::Poison);
                };
                if self.cur.tensors[input].memory {
                    self.error(b.op.span(), "the memory only feeds cross-attention's keys and values");
                    return Some(Val::Poison);
                }
                if self.cur.tensors[input].pooled {
                    self.pooled_read("*", b.op.span(), input);
                    return Some(Val::Poison);
                }
                let width = self.cur.tensors[input].width;
                let out = self.cur.tensor(width, b.op.span(), "scaled");
                self.cur.nodes.push(Node::Scale { input, out, factor });
                Some(Val::Tensor(out))
            }
            Expr::Call(call) => self.call(call),
            Expr::Lit(_) | Expr::Binary(_) | Expr::Unary(_) | Expr::If(_) => self.constant(e).map(Val::Const),
            other => {
                self.error(
                    other.span(),
                    "expected a layer call (`linear(x, d_ff)`, …), a sum of tensors, or a constant",
                );
                None
            }
        }
    }

    /// The memory read at `id`: a `[M, width]` tensor of the layer section, made on first read.
    fn memory_value(&mut self, id: &syn::Ident) -> Val {
        let Some(Memory { name, width: Some(width) }) = self.memory else {
            self.poisoned = true;
            return Val::Poison;
        };
        if self.section != 1 {
            self.error(
                id.span(),
                format!("`{id}` is read inside the layer loop, by cross-attention: `attention(q, linear({id}, …), linear({id}, …))`"),
            );
            return Val::Poison;
        }
        let t = match self.cur.memory {
            Some(t) => t,
            None => {
                let t = self.cur.memory_tensor(width, id.span(), name);
                self.cur.memory = Some(t);
                t
            }
        };
        Val::Tensor(t)
    }

    fn call(&mut self, call: &syn::ExprCall) -> Option<Val> {
        let Expr::Path(p) = &*call.func else {
            self.error(call.func.span(), "expected a layer name");
            return None;
        };
        let func = p.path.get_ident().map(ToString::to_string).unwrap_or_default();
        if func == "Some" || func == "sqrt" {
            return self.constant(&Expr::Call(call.clone())).map(Val::Const);
        }
        let span = p.span();
        let mut positional: Vec<&Expr> = Vec::new();
        let mut named: Vec<(String, &Expr, Span)> = Vec::new();
        let mut flags: Vec<(String, Span)> = Vec::new();
        for arg in &call.args {
            match arg {
                Expr::Assign(a) => match &*a.left {
                    Expr::Path(k) if k.path.get_ident().is_some() => {
                        named.push((
                            k.path.get_ident().map(ToString::to_string).unwrap_or_default(),
                            &a.right,
                            k.span(),
                        ));
                    }
                    other => self.error(other.span(), "expected `name = value`"),
                },
                Expr::Path(k) if k.path.is_ident("causal") => flags.push(("causal".into(), k.span())),
                other => positional.push(other),
            }
        }
        let mut args = Args { named, flags };
        let result = match func.as_str() {
            "embedding" | "sinusoidal" => self.embedding(&func, span, &positional, &mut args),
            "linear" => self.linear(span, &positional, &mut args),
            "layer_norm" | "rms_norm" => self.norm(&func, span, &positional, &mut args),
            "gelu" | "gelu_tanh" | "relu" | "swiglu" | "geglu" | "geglu_tanh" => {
                self.activation(&func, span, &positional)
            }
            "attention" => self.attention(span, &positional, &mut args),
            "additive_attention" | "location_attention" | "location_sensitive_attention" => {
                self.additive_attention(&func, span, &positional, &mut args)
            }
            "concat" => self.concat(span, &positional),
            "mean_pool" | "max_pool" | "cls" => self.pool(&func, span, &positional),
            "normalize" => self.normalize(span, &positional),
            "patch_embedding" => self.patch_embedding(span, &positional, &mut args),
            "slice" => self.slice(span, &positional),
            "split" => {
                self.error(
                    span,
                    "`split` gives several tensors: bind them with `let (a, b) = split(x, [w1, w2]);`",
                );
                None
            }
            other => {
                let hint =
                    closest(other, FUNCTIONS).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                self.error(span, format!("unknown layer `{other}`{hint}; known: {}", FUNCTIONS.join(", ")));
                let quiet = std::mem::replace(&mut self.quiet, true);
                for arg in &positional {
                    self.eval(arg);
                }
                self.quiet = quiet;
                return Some(Val::Poison);
            }
        };
        for (name, _, span) in &args.named {
            self.error(*span, format!("`{func}` takes no argument `{name}`"));
        }
        for (name, span) in &args.flags {
            self.error(*span, format!("`{func}` takes no flag `{name}`"));
        }
        Some(result.unwrap_or(Val::Poison))
    }

    /// A positional tensor argument with a row per target token.
    fn tensor_arg(&mut self, func: &str, args: &[&Expr], i: usize, span: Span) -> Option<usize> {
        let t = self.any_tensor_arg(func, args, i, span)?;
        if self.cur.tensors[t].memory {
            let shape = self.cur.tensors[t].shape();
            self.error(
                args[i].span(),
                format!("`{func}` cannot read {shape}, a row per source token: the memory is only projected (`linear`) into cross-attention's keys and values"),
            );
            return None;
        }
        Some(t)
    }

    /// A positional tensor argument, which may be the memory or a projection of it.
    fn any_tensor_arg(&mut self, func: &str, args: &[&Expr], i: usize, span: Span) -> Option<usize> {
        let Some(e) = args.get(i) else {
            self.error(span, format!("`{func}` needs a tensor as argument {}", i + 1));
            return None;
        };
        match self.eval(e)? {
            Val::Tensor(t) if self.cur.tensors[t].pooled => {
                self.pooled_read(func, e.span(), t);
                None
            }
            Val::Tensor(t) => Some(t),
            Val::Poison => None,
            other => {
                let d = self.describe(other);
                self.error(e.span(), format!("`{func}` needs a tensor here, found {d}"));
                None
            }
        }
    }

    /// Rule: a pooled tensor (a row per sequence) is only normalised or returned; layers read
    /// per-token tensors.
    fn pooled_read(&mut self, func: &str, span: Span, t: usize) {
        let (shape, hint) = (self.cur.tensors[t].shape(), self.written(t));
        self.error(
            span,
            format!("`{func}` reads per-token tensors, but `{hint}` is pooled, {shape} (a row per sequence): a pooled vector is only normalised (`normalize`) or returned"),
        );
    }

    /// How a message names tensor `t`: its `let` name, or the call that computed it (`cls(…)`).
    fn written(&self, t: usize) -> String {
        let hint = &self.cur.tensors[t].hint;
        if FUNCTIONS.contains(&hint.as_str()) {
            format!("{hint}(…)")
        } else {
            hint.clone()
        }
    }

    /// A positional tensor argument of a pooling call, pooled or not.
    fn pool_arg(&mut self, func: &str, args: &[&Expr], span: Span) -> Option<usize> {
        let [e] = args else {
            self.error(span, format!("`{func}` takes one tensor: `{func}(x)`"));
            return None;
        };
        match self.eval(e)? {
            Val::Tensor(t) => Some(t),
            Val::Poison => None,
            other => {
                let d = self.describe(other);
                self.error(e.span(), format!("`{func}` needs a tensor here, found {d}"));
                None
            }
        }
    }

    /// `patch_embedding(image, width, size = 224, patch = 16, channels = 3, class_token = true)`:
    /// each image cut into `patch × patch` squares, each square projected to `width` (a
    /// `Conv2d(kernel = stride = patch)` checkpoint weight), the class token prepended when
    /// `class_token`, and learned positions added (one row per patch, plus the class token's).
    /// Weighted parts, innermost first: the projection, the class token (if any), the positions.
    fn patch_embedding(&mut self, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
        let form = "`patch_embedding(image, width, size = …, patch = …, channels = …, class_token = true)`";
        let (Some(image_expr), 2) = (pos.first(), pos.len()) else {
            self.error(span, format!("expected {form}"));
            return None;
        };
        match self.eval(image_expr)? {
            Val::Image => {}
            Val::Poison => return None,
            other => {
                let d = self.describe(other);
                self.error(
                    image_expr.span(),
                    format!("`patch_embedding` reads the input `image`, found {d}"),
                );
                return None;
            }
        }
        if self.section != 0 {
            self.error(
                span,
                "`patch_embedding` turns the images into the stream: write it before the layer loop",
            );
            return None;
        }
        let width = self.size_arg("patch_embedding", pos, 1, span, "the width")?;
        let mut named = |it: &mut Self, name: &str| -> Option<(usize, Span)> {
            let Some(e) = args.take(name) else {
                it.error(span, format!("`patch_embedding` needs `{name} = …`: {form}"));
                return None;
            };
            Some((it.positive(e, name)?, e.span()))
        };
        let (image_size, patch, channels) =
            (named(self, "size"), named(self, "patch"), named(self, "channels"));
        let ((image_size, _), (patch_size, patch_at), (channels, _)) = (image_size?, patch?, channels?);
        let class_token = self.flag_arg(args, "class_token", false)?;
        if !crate::check::patch_divides_image(self.cx, image_size, patch_size, patch_at) {
            return None;
        }
        let image = ImageInput { image_size, patch_size, channels };
        let rows = image.patches() + usize::from(class_token);
        let proj = self.field(
            FieldKind::Linear {
                input: image.patch_width(),
                output: width,
                bias: true,
                layout: Layout::Conv2d { channels, patch: patch_size },
            },
            true,
        );
        let cls =
            class_token.then(|| self.field(FieldKind::Embedding { rows: 1, width, batched: true }, true));
        let pos_field = self.field(FieldKind::Embedding { rows, width, batched: true }, true);
        let out = self.cur.tensor(width, span, "patch_embedding");
        self.cur.nodes.push(Node::Patches { image, proj, cls, pos: pos_field, out });
        Some(Val::Tensor(out))
    }

    /// `mean_pool(x)` (over each sequence's real tokens), `max_pool(x)`, `cls(x)` (the first
    /// token): one row per sequence, after the layers.
    fn pool(&mut self, func: &str, span: Span, pos: &[&Expr]) -> Option<Val> {
        let input = self.pool_arg(func, pos, span)?;
        if !self.pool_after_layers(func, span) || !self.pool_reads_per_token(func, pos[0].span(), input) {
            return None;
        }
        let pool = match func {
            "mean_pool" => Pool::Mean,
            "max_pool" => Pool::Max,
            _ => Pool::Cls,
        };
        let width = self.cur.tensors[input].width;
        let out = self.cur.tensor(width, span, func);
        self.cur.tensors[out].pooled = true;
        self.cur.nodes.push(Node::Pool { input, out, pool });
        Some(Val::Tensor(out))
    }

    /// Rule: pooling reads the final states, so it is written after the layer loop.
    fn pool_after_layers(&mut self, func: &str, span: Span) -> bool {
        if self.section != 2 {
            self.error(
                span,
                format!("`{func}` pools the final states into an output: write it after the layer loop"),
            );
            return false;
        }
        true
    }

    /// Rule: a pooling call reads a per-token tensor (a row per token), not one already pooled.
    fn pool_reads_per_token(&mut self, func: &str, span: Span, input: usize) -> bool {
        let t = &self.cur.tensors[input];
        if t.pooled || t.memory {
            let (shape, hint) = (t.shape(), self.written(input));
            let what = if t.pooled {
                "already pooled (a row per sequence): pool once"
            } else {
                "the encoder's memory"
            };
            self.error(span, format!("`{func}` pools per-token states [S, w] into a row per sequence, but `{hint}` is {shape}, {what}"));
            return false;
        }
        true
    }

    /// `normalize(v)`: each pooled row divided by its L2 norm (PyTorch's `F.normalize`).
    fn normalize(&mut self, span: Span, pos: &[&Expr]) -> Option<Val> {
        let input = self.pool_arg("normalize", pos, span)?;
        if !self.normalize_reads_pool(span, pos[0].span(), input) {
            return None;
        }
        let width = self.cur.tensors[input].width;
        let out = self.cur.tensor(width, span, "normalize");
        self.cur.tensors[out].pooled = true;
        self.cur.nodes.push(Node::Normalize { input, out });
        Some(Val::Tensor(out))
    }

    /// Rule: `normalize` L2-normalises a pooled vector, once: its input is a pooling call's
    /// result.
    fn normalize_reads_pool(&mut self, span: Span, arg: Span, input: usize) -> bool {
        let pooled_by = self.cur.nodes.iter().find(|n| n.out() == input);
        match pooled_by {
            Some(Node::Pool { .. }) => true,
            Some(Node::Normalize { .. }) => {
                self.error(span, "this vector is already normalised: normalise once");
                false
            }
            _ => {
                let shape = self.cur.tensors[input].shape();
                self.error(arg, format!("`normalize` L2-normalises a pooled vector, found {shape}: pool first, e.g. `normalize(mean_pool(x))`"));
                false
            }
        }
    }

    /// The outputs of `-> (a, b, …)`, each a tensor bound after the layers: per-token states or
    /// a pooled (and perhaps normalised) vector. Returns the final per-token tensor, which the
    /// tail computes, and the outputs.
    fn tuple_outputs(&mut self, names: &[syn::Ident]) -> Option<(usize, Vec<Output>)> {
        let errors = self.cx.len();
        outputs_unique(self.cx, names);
        outputs_not_methods(self.cx, names);
        let mut found: Vec<(syn::Ident, usize)> = Vec::new();
        for name in names {
            let key = name.to_string();
            let binding = self.scope.iter_mut().rev().find(|b| b.name == key);
            match binding.map(|b| {
                b.used = true;
                (b.val, b.section)
            }) {
                Some((Val::Tensor(t), 2)) => found.push((name.clone(), t)),
                Some((Val::Poison, _)) => {}
                Some((Val::Tensor(_), _)) => self.error(name.span(), format!("`{key}` is computed before or inside the layers; an output is the final states (`let {key} = x;` after the loop) or a pooling of them")),
                _ => self.output_produced(name),
            }
        }
        if self.cx.len() > errors {
            return None;
        }
        self.pooled_from_final_states(&found)
    }

    /// Rule: every output of a tuple is bound by a `let` in the body.
    fn output_produced(&mut self, name: &syn::Ident) {
        self.error(
            name.span(),
            format!("the forward pass never produces `{name}`: bind it after the layers, e.g. `let {name} = x;` (the final states) or `let {name} = normalize(mean_pool(x));`"),
        );
    }

    /// Rule: a tuple has at most one per-token output (the final states), and every pooled
    /// output pools that same tensor (the states after the final norm, if any).
    fn pooled_from_final_states(&mut self, found: &[(syn::Ident, usize)]) -> Option<(usize, Vec<Output>)> {
        let mut states: Option<(usize, &syn::Ident)> = None;
        let mut outputs = Vec::new();
        let mut sources: Vec<(usize, Span)> = Vec::new();
        for (name, t) in found {
            let kind = if self.cur.tensors[*t].pooled {
                let def = |t: usize| self.cur.nodes.iter().find(|n| n.out() == t).cloned();
                let (pool, normalize, source, span) = match def(*t) {
                    Some(Node::Normalize { input, .. }) => match def(input) {
                        Some(Node::Pool { input: src, pool, .. }) => {
                            (pool, true, src, self.cur.tensors[input].span)
                        }
                        _ => return None,
                    },
                    Some(Node::Pool { input: src, pool, .. }) => {
                        (pool, false, src, self.cur.tensors[*t].span)
                    }
                    _ => return None,
                };
                sources.push((source, span));
                OutputKind::Pooled { pool, normalize }
            } else {
                match states {
                    Some((s, first)) if s != *t => {
                        self.error(name.span(), format!("`{name}` and `{first}` are both per-token outputs: a composed encoder returns one, the final states (pool them for the others)"));
                        return None;
                    }
                    _ => states = Some((*t, name)),
                }
                OutputKind::States
            };
            outputs.push(Output { name: name.clone(), kind });
        }
        let last = states.map(|(t, _)| t).or(sources.first().map(|(s, _)| *s))?;
        for &(source, span) in &sources {
            if source != last {
                let (hint, want) =
                    (self.cur.tensors[source].hint.clone(), self.cur.tensors[last].hint.clone());
                self.error(span, format!("this pools `{hint}`, but the outputs are computed from the final states `{want}`: pool `{want}`"));
                return None;
            }
        }
        Some((last, outputs))
    }

    /// A positional size argument (≥ 1).
    fn size_arg(&mut self, func: &str, args: &[&Expr], i: usize, span: Span, what: &str) -> Option<usize> {
        let Some(e) = args.get(i) else {
            self.error(span, format!("`{func}` needs {what} as argument {}", i + 1));
            return None;
        };
        match self.constant(e)? {
            Const::Int(n) if n >= 1 => Some(n as usize),
            other => {
                self.error(
                    e.span(),
                    format!("{what} must be a whole number ≥ 1, found {}", other.describe()),
                );
                None
            }
        }
    }

    fn embedding(&mut self, func: &str, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
        let Some(index_expr) = pos.first() else {
            self.error(
                span,
                format!("`{func}` needs the ids it looks up: `tokens`, `positions` or `token_types`"),
            );
            return None;
        };
        let index = match self.eval(index_expr)? {
            Val::Input(i) => i,
            _ => {
                self.error(index_expr.span(), "expected `tokens`, `positions` or `token_types`");
                return None;
            }
        };
        let rows = self.size_arg(func, pos, 1, span, "the table's rows")?;
        let width = self.size_arg(func, pos, 2, span, "the width")?;
        let offset = match args.take("offset") {
            Some(e) => match self.constant(e)? {
                Const::Int(n) if n >= 0 => n as usize,
                other => {
                    self.error(
                        e.span(),
                        format!("`offset` is a whole number ≥ 0, found {}", other.describe()),
                    );
                    return None;
                }
            },
            None => 0,
        };
        let (kind, weighted) = if func == "sinusoidal" {
            if index != Index::Position {
                self.error(index_expr.span(), "a sinusoidal table is indexed by `positions`");
            }
            (FieldKind::Sinusoidal { rows, width }, false)
        } else {
            (FieldKind::Embedding { rows, width, batched: false }, true)
        };
        let field = self.field(kind, weighted);
        let out = self.cur.tensor(width, span, func);
        self.cur.nodes.push(Node::Gather { field, index, offset, acc: None, out });
        Some(Val::Tensor(out))
    }

    fn linear(&mut self, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
        // An image classifier's head projects the pooled states (`linear(cls(x), labels)`).
        let input = if self.image && self.section == 2 && !pos.is_empty() {
            self.pool_arg("linear", &pos[..1], span)?
        } else {
            self.any_tensor_arg("linear", pos, 0, span)?
        };
        let (in_width, memory) = (self.cur.tensors[input].width, self.cur.tensors[input].memory);
        let pooled = self.cur.tensors[input].pooled;
        let output = match pos.len() {
            2 => self.size_arg("linear", pos, 1, span, "the output width")?,
            3 => {
                let declared = self.size_arg("linear", pos, 1, span, "the input width")?;
                let output = self.size_arg("linear", pos, 2, span, "the output width")?;
                if declared != in_width {
                    let hint = self.cur.tensors[input].hint.clone();
                    let msg = if memory {
                        format!("cannot project the memory [M, {in_width}] with a [{declared} → {output}] projection: `{hint}` (the output of `fn encode`) is {in_width} wide, so this needs `linear({hint}, {in_width}, {output})`")
                    } else {
                        format!("this linear takes [S, {declared}] but `{hint}` is [S, {in_width}]")
                    };
                    self.error(pos[1].span(), msg);
                    return None;
                }
                output
            }
            _ => {
                self.error(span, "expected `linear(x, out)` or `linear(x, in, out)`");
                return None;
            }
        };
        // `bias = "name"`: the bias is a tensor of its own under the root (BART's
        // `final_logits_bias` beside a tied head).
        let bias_at = match args.named.iter().position(|(n, _, _)| n == "bias") {
            Some(i) => match args.named[i].1 {
                Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                    args.named.remove(i);
                    Some(super::lower::intern(&s.value()))
                }
                _ => None,
            },
            None => None,
        };
        let bias = bias_at.is_some() || self.flag_arg(args, "bias", true)?;
        let layout = match args.take("layout") {
            None => bias_at.map_or(Layout::Torch, |bias| Layout::BiasAt { bias }),
            Some(e) if bias_at.is_some() => {
                self.error(
                    e.span(),
                    "a bias stored apart (`bias = \"…\"`) goes with an nn.Linear weight: drop `layout`",
                );
                return None;
            }
            Some(Expr::Path(p)) if p.path.is_ident("torch") => Layout::Torch,
            Some(Expr::Path(p)) if p.path.is_ident("conv1d") => Layout::Conv1d,
            Some(Expr::Call(call)) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("per_head")) => {
                self.per_head_layout(call, output)?
            }
            Some(e @ Expr::Path(p)) if p.path.is_ident("in_proj") => self.in_proj_layout(e, output)?,
            Some(e @ Expr::Call(call)) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("in_proj")) => {
                self.in_proj_layout(e, output)?
            }
            Some(other) => {
                self.error(
                    other.span(),
                    "`layout` is `torch` (nn.Linear, `[out, in]`), `conv1d` (GPT-2, `[in, out]`), \
                     `per_head(heads)` (BLOOM's and GPT-NeoX's fused QKV, rows `[heads, 3, head_dim]`) or \
                     `in_proj` / `in_proj(start, total)` (nn.MultiheadAttention's packed `in_proj_weight`)",
                );
                return None;
            }
        };
        let field = self.field(FieldKind::Linear { input: in_width, output, bias, layout }, true);
        let out = if memory {
            self.cur.memory_tensor(output, span, "linear")
        } else {
            self.cur.tensor(output, span, "linear")
        };
        self.cur.tensors[out].pooled = pooled;
        self.cur.nodes.push(Node::Linear { field, input, out });
        Some(Val::Tensor(out))
    }

    fn flag_arg(&mut self, args: &mut Args, name: &str, default: bool) -> Option<bool> {
        match args.take(name) {
            None => Some(default),
            Some(e) => match self.constant(e)? {
                Const::Bool(b) => Some(b),
                other => {
                    self.error(
                        e.span(),
                        format!("`{name}` is `true` or `false`, found {}", other.describe()),
                    );
                    None
                }
            },
        }
    }

    fn norm(&mut self, func: &str, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
        let input = self.tensor_arg(func, pos, 0, span)?;
        let width = self.cur.tensors[input].width;
        let eps = match args.take("eps") {
            None if func == "rms_norm" => 1e-6,
            None => 1e-5,
            Some(e) => match self.constant(e)? {
                Const::Float(x) if x > 0.0 => x,
                other => {
                    self.error(e.span(), format!("`eps` is a number > 0, found {}", other.describe()));
                    return None;
                }
            },
        };
        let kind = if func == "rms_norm" {
            FieldKind::RmsNorm { width, eps }
        } else {
            FieldKind::LayerNorm { width, eps }
        };
        let field = self.field(kind, true);
        let out = self.cur.tensor(width, span, func);
        self.cur.nodes.push(Node::Norm { field, input, out });
        Some(Val::Tensor(out))
    }

    fn activation(&mut self, func: &str, span: Span, pos: &[&Expr]) -> Option<Val> {
        let input = self.tensor_arg(func, pos, 0, span)?;
        let width = self.cur.tensors[input].width;
        let act = match func {
            "gelu" => Activation::GeluErf,
            "gelu_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "swiglu" => Activation::SwiGlu,
            "geglu" => Activation::GeGluErf,
            _ => Activation::GeGluTanh,
        };
        if act.is_gated() {
            if !width.is_multiple_of(2) {
                self.error(
                    span,
                    format!("`{func}` splits its input into gate and up halves, but [S, {width}] is odd"),
                );
                return None;
            }
            let out = self.cur.tensor(width / 2, span, func);
            self.cur.nodes.push(Node::Glu { input, out, act });
            return Some(Val::Tensor(out));
        }
        let out = self.cur.tensor(width, span, func);
        self.cur.nodes.push(Node::Act { input, out, act });
        Some(Val::Tensor(out))
    }

    fn attention(&mut self, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
        let Some(heads_expr) = args.take("heads") else {
            self.error(span, "`attention` needs `heads = …`");
            return None;
        };
        let heads = self.positive(heads_expr, "heads")?;
        let kv_heads = match args.take("kv_heads") {
            Some(e) => self.positive(e, "kv_heads")?,
            None => heads,
        };
        if heads % kv_heads != 0 {
            self.error(span, format!("{kv_heads} key/value heads do not divide {heads} query heads"));
            return None;
        }
        let causal =
            args.flags.iter().position(|(f, _)| f == "causal").map(|i| args.flags.remove(i)).is_some();
        let (q, kv, head_dim) = match pos.len() {
            1 => {
                let qkv = self.tensor_arg("attention", pos, 0, span)?;
                let w = self.cur.tensors[qkv].width;
                let parts = heads + 2 * kv_heads;
                if !w.is_multiple_of(parts) {
                    self.error(
                        pos[0].span(),
                        format!("[S, {w}] does not split into {heads} query and 2 × {kv_heads} key/value heads: {w} / {parts} is not whole"),
                    );
                    return None;
                }
                (qkv, None, w / parts)
            }
            3 => {
                let q = self.tensor_arg("attention", pos, 0, span)?;
                let k = self.any_tensor_arg("attention", pos, 1, span)?;
                let v = self.any_tensor_arg("attention", pos, 2, span)?;
                if self.cur.tensors[k].memory || self.cur.tensors[v].memory {
                    return self.cross_attention(span, pos, (q, k, v), heads, kv_heads, causal, args);
                }
                let (wq, wk, wv) =
                    (self.cur.tensors[q].width, self.cur.tensors[k].width, self.cur.tensors[v].width);
                if wq % heads != 0 {
                    self.error(pos[0].span(), format!("queries [S, {wq}] do not split into {heads} heads"));
                    return None;
                }
                let hd = wq / heads;
                for (e, w, what) in [(pos[1], wk, "keys"), (pos[2], wv, "values")] {
                    if w != kv_heads * hd {
                        self.error(
                            e.span(),
                            format!(
                                "{what} are [S, {w}] but {kv_heads} key/value heads of {hd} need [S, {}]",
                                kv_heads * hd
                            ),
                        );
                        return None;
                    }
                }
                (q, Some((k, v)), hd)
            }
            _ => {
                self.error(span, "expected `attention(qkv, heads = …)` or `attention(q, k, v, heads = …)`");
                return None;
            }
        };
        let window = self.window_arg(args, causal)?;
        let sparse = self.sparse_arg(args)?;
        let rope = match args.take("rope") {
            None => None,
            Some(e) => {
                let theta = match self.constant(e)? {
                    Const::Float(t) if t > 0.0 => t,
                    other => {
                        self.error(
                            e.span(),
                            format!(
                                "`rope` is the rotary base θ (e.g. `10000.0`), found {}",
                                other.describe()
                            ),
                        );
                        return None;
                    }
                };
                let dims = match args.take("rotary_dims") {
                    Some(e) => self.positive(e, "rotary_dims")?,
                    None => head_dim,
                };
                if dims % 2 != 0 || dims > head_dim {
                    self.error(
                        span,
                        format!(
                            "rotary dims must be even and at most the head width {head_dim}, found {dims}"
                        ),
                    );
                    return None;
                }
                Some((theta, dims))
            }
        };
        let bias = match args.take("bias") {
            None => None,
            Some(e) => Some((self.position_bias(e, causal)?, At(e.span()))),
        };
        let scaled = self.flag_arg(args, "scaled", true)?;
        let out = self.cur.tensor(heads * head_dim, span, "context");
        self.cur.nodes.push(Node::Attention(AttentionNode {
            q,
            kv,
            out,
            heads,
            kv_heads,
            head_dim,
            causal,
            window,
            sparse,
            rope,
            bias,
            scaled,
        }));
        Some(Val::Tensor(out))
    }

    /// `window = N` (or `Some(N)` / `None`, e.g. chosen by the layer index): causal, the `N` keys
    /// ending at the query; bidirectional, centred on it (`N / 2` keys on either side, so `N` is
    /// even: the presets' rule).
    fn window_arg(&mut self, args: &mut Args, causal: bool) -> Option<Option<usize>> {
        let Some(e) = args.take("window") else { return Some(None) };
        let window = match self.constant(e)? {
            Const::Int(w) | Const::Opt(Some(w)) if w >= 1 => Some(w as usize),
            Const::Opt(None) => None,
            other => {
                self.error(
                    e.span(),
                    format!("`window` is a number of keys ≥ 1 (or `None`), found {}", other.describe()),
                );
                return None;
            }
        };
        if let (Some(w), false, false) = (window, causal, self.quiet) {
            let errors = self.cx.len();
            crate::check::local::centred_window_even(self.cx, w, e.span());
            if self.cx.len() > errors {
                return None;
            }
        }
        Some(window)
    }

    /// Rule: block-sparse layouts are implemented for single-stack models (as the presets'
    /// `sparse`); an encoder-decoder's attentions are dense.
    fn sparse_single_stack(&mut self, span: Span) -> bool {
        if self.seq2seq {
            self.error(span, "`sparse = …` is implemented for encoder-only and decoder-only models (`fn forward`) in this version; an encoder-decoder attends densely: remove it");
            return false;
        }
        true
    }

    /// `sparse = strided(block = 64, stride = 2)` or `sparse = fixed(block = 64, stride = 4,
    /// summary = 1)`: the Sparse Transformer's block layouts, checked by the presets' rules;
    /// `None` for dense attention, and a constant `if` to choose by layer (GPT-3's alternating
    /// dense and sparse layers: `sparse = if layer % 2 == 0 { strided(…) } else { None }`).
    fn sparse_arg(&mut self, args: &mut Args) -> Option<Option<Sparse>> {
        let Some(e) = args.take("sparse") else { return Some(None) };
        if !self.sparse_single_stack(e.span()) {
            return None;
        }
        self.sparse_layout(e)
    }

    /// Rule: a `sparse = …` value is a layout call, `None`, or a constant `if` (with an `else`)
    /// whose branches are such values.
    fn sparse_layout(&mut self, e: &Expr) -> Option<Option<Sparse>> {
        let layout = "`sparse = strided(block = 64, stride = 2)`, `sparse = fixed(block = 64, stride = 4, summary = 1)` or `sparse = None` (dense)";
        let one = |block: &syn::Block| match block.stmts.as_slice() {
            [syn::Stmt::Expr(e, None)] => Some(e.clone()),
            _ => None,
        };
        let call = match e {
            Expr::Path(p) if p.path.is_ident("None") => return Some(None),
            Expr::Paren(p) => return self.sparse_layout(&p.expr),
            Expr::Block(b) => {
                let Some(inner) = one(&b.block) else {
                    self.error(e.span(), format!("expected one block-sparse layout in the braces: {layout}"));
                    return None;
                };
                return self.sparse_layout(&inner);
            }
            Expr::If(i) => {
                let cond = match self.constant(&i.cond)? {
                    Const::Bool(b) => b,
                    other => {
                        self.error(
                            i.cond.span(),
                            format!("expected a condition, found {}", other.describe()),
                        );
                        return None;
                    }
                };
                let Some((_, otherwise)) = &i.else_branch else {
                    self.error(
                        i.if_token.span,
                        format!("a layout chosen by `if` needs an `else` ({layout})"),
                    );
                    return None;
                };
                if !cond {
                    return self.sparse_layout(otherwise);
                }
                let Some(inner) = one(&i.then_branch) else {
                    self.error(
                        i.then_branch.span(),
                        format!("expected one block-sparse layout in the braces: {layout}"),
                    );
                    return None;
                };
                return self.sparse_layout(&inner);
            }
            Expr::Call(call) => call,
            _ => {
                self.error(e.span(), format!("expected a block-sparse layout: {layout}"));
                return None;
            }
        };
        let pattern = match &*call.func {
            Expr::Path(p) if p.path.is_ident("strided") || p.path.is_ident("fixed") => {
                p.path.get_ident().map(ToString::to_string)
            }
            other => {
                self.error(other.span(), format!("the layouts are `strided` and `fixed`: {layout}"));
                return None;
            }
        };
        let fixed = pattern.as_deref() == Some("fixed");
        let mut sizes: Vec<(String, usize, Span)> = Vec::new();
        for arg in &call.args {
            let Expr::Assign(a) = arg else {
                self.error(arg.span(), format!("name each size: {layout}"));
                return None;
            };
            let name = match &*a.left {
                Expr::Path(p) => p.path.get_ident().map(ToString::to_string).unwrap_or_default(),
                _ => String::new(),
            };
            let known: &[&str] = if fixed { &["block", "stride", "summary"] } else { &["block", "stride"] };
            if !known.contains(&name.as_str()) || sizes.iter().any(|(n, _, _)| *n == name) {
                let what = if name == "summary" {
                    "`summary` belongs to `fixed(…)`"
                } else {
                    "unknown or repeated size"
                };
                self.error(a.left.span(), format!("{what}: {layout}"));
                return None;
            }
            let value = self.positive(&a.right, &name)?;
            sizes.push((name, value, a.right.span()));
        }
        let size = |name: &str| sizes.iter().find(|(n, _, _)| n == name).map(|&(_, v, s)| (v, s));
        let needed: &[&str] = if fixed { &["block", "stride", "summary"] } else { &["block", "stride"] };
        if let Some(missing) = needed.iter().find(|n| size(n).is_none()) {
            self.error(call.span(), format!("the layout needs `{missing}`: {layout}"));
            return None;
        }
        let (Some((block, block_at)), Some((stride, stride_at))) = (size("block"), size("stride")) else {
            return None;
        };
        if self.quiet {
            return None;
        }
        let errors = self.cx.len();
        crate::check::local::block_whole_tiles(self.cx, block, block_at);
        crate::check::local::stride_not_dense(self.cx, stride, stride_at);
        let pattern = match size("summary") {
            Some((summary, at)) => {
                if stride >= 2 {
                    crate::check::local::summary_below_stride(self.cx, summary, stride, at);
                }
                SparsePattern::Fixed { summary }
            }
            None => SparsePattern::Strided,
        };
        if self.cx.len() > errors {
            return None;
        }
        Some(Some(Sparse { pattern, block, stride }))
    }

    /// `attention(q, k, v, heads = …)` with keys and values projected from the memory: every
    /// target token sees every source token.
    #[allow(clippy::too_many_arguments)]
    fn cross_attention(
        &mut self,
        span: Span,
        pos: &[&Expr],
        (q, k, v): (usize, usize, usize),
        heads: usize,
        kv_heads: usize,
        causal: bool,
        args: &mut Args,
    ) -> Option<Val> {
        for (i, t, what) in [(1, k, "keys"), (2, v, "values")] {
            if !self.cur.tensors[t].memory {
                let shape = self.cur.tensors[t].shape();
                self.error(pos[i].span(), format!("cross-attention's {what} come from the memory too (`linear(memory, …)`), found {shape}, a row per target token"));
                return None;
            }
        }
        if causal {
            self.error(span, "cross-attention sees every source token: drop `causal`");
            return None;
        }
        if kv_heads != heads {
            self.error(span, "cross-attention has as many key/value heads as query heads");
            return None;
        }
        for name in ["window", "rope", "rotary_dims", "bias"] {
            if let Some(e) = args.take(name) {
                self.error(
                    e.span(),
                    format!("cross-attention takes no `{name}`: sources have no order relative to targets"),
                );
                return None;
            }
        }
        let wq = self.cur.tensors[q].width;
        if !wq.is_multiple_of(heads) {
            self.error(pos[0].span(), format!("queries [S, {wq}] do not split into {heads} heads"));
            return None;
        }
        let head_dim = wq / heads;
        for (e, t, what) in [(pos[1], k, "keys"), (pos[2], v, "values")] {
            let w = self.cur.tensors[t].width;
            if w != wq {
                self.error(
                    e.span(),
                    format!("{what} are [M, {w}] but {heads} heads of {head_dim} need [M, {wq}]"),
                );
                return None;
            }
        }
        let scaled = self.flag_arg(args, "scaled", true)?;
        let out = self.cur.tensor(wq, span, "context");
        self.cur.nodes.push(Node::Cross(CrossNode { q, k, v, out, heads, head_dim, scaled }));
        Some(Val::Tensor(out))
    }

    /// Rule: `layout = per_head(heads)` is a fused QKV stored with each head's query, key and value
    /// rows together (`[heads, 3, head_dim]`: BLOOM, GPT-NeoX), reordered at load to `[Q | K | V]`;
    /// its output splits into `3 × heads` equal parts.
    fn per_head_layout(&mut self, call: &syn::ExprCall, output: usize) -> Option<Layout> {
        let [heads_expr] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.error(call.span(), "`per_head` takes the number of heads: `layout = per_head(heads)`");
            return None;
        };
        let heads = self.positive(heads_expr, "heads")?;
        if !output.is_multiple_of(3 * heads) {
            self.error(
                heads_expr.span(),
                format!("a per-head fused QKV of {heads} heads has 3 × {heads} equal parts, but {output} outputs do not split into them"),
            );
            return None;
        }
        Some(Layout::HeadInterleaved { heads })
    }

    /// Rule: an attention's `bias` is `alibi` or `relative(buckets = …, max_distance = …,
    /// weights = "…")`: T5's buckets, an even number when bidirectional (half per direction; a
    /// causal attention's all count earlier keys), at least 4, with
    /// `max_distance` beyond the exact half (`> buckets / 2`); `weights` names the table's module,
    /// read once for every layer.
    fn position_bias(&mut self, e: &Expr, causal: bool) -> Option<BiasArg> {
        let expected = "`bias` is `alibi` or `relative(buckets = 32, max_distance = 128, weights = \"…\")`";
        match e {
            Expr::Path(p) if p.path.is_ident("alibi") => Some(BiasArg::Alibi),
            Expr::Call(call) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("relative")) => {
                let (mut buckets, mut max_distance, mut weights) = (None, None, None);
                for arg in &call.args {
                    let Expr::Assign(a) = arg else {
                        self.error(arg.span(), format!("expected `name = value`: {expected}"));
                        return None;
                    };
                    let key = match &*a.left {
                        Expr::Path(k) => k.path.get_ident().map(ToString::to_string).unwrap_or_default(),
                        _ => String::new(),
                    };
                    match key.as_str() {
                        "buckets" => buckets = Some((self.positive(&a.right, "buckets")?, a.right.span())),
                        "max_distance" => {
                            max_distance = Some((self.positive(&a.right, "max_distance")?, a.right.span()))
                        }
                        "weights" => match &*a.right {
                            Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                                weights = Some(s.value())
                            }
                            other => {
                                self.error(
                                    other.span(),
                                    "`weights` is the table's checkpoint name, a string such as \
                                     \"encoder.block.0.layer.0.SelfAttention.relative_attention_bias\"",
                                );
                                return None;
                            }
                        },
                        _ => {
                            self.error(
                                a.left.span(),
                                "`relative` takes `buckets`, `max_distance` and `weights`".to_string(),
                            );
                            return None;
                        }
                    }
                }
                let missing: Vec<&str> = [
                    ("`buckets`", buckets.is_none()),
                    ("`max_distance`", max_distance.is_none()),
                    ("`weights`", weights.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, absent)| absent.then_some(name))
                .collect();
                let (Some((buckets, b_span)), Some((max_distance, m_span)), Some(weights)) =
                    (buckets, max_distance, weights)
                else {
                    self.error(
                        call.span(),
                        format!(
                            "`relative` is missing {}: it takes `buckets` and `max_distance` (the checkpoint's \
                             `relative_attention_num_buckets` and `relative_attention_max_distance`) and \
                             `weights`, the `[buckets, heads]` table's name",
                            missing.join(" and ")
                        ),
                    );
                    return None;
                };
                if !causal && !buckets.is_multiple_of(2) {
                    self.error(
                        b_span,
                        format!("relative buckets are split in half by direction, so their number is even: {buckets} is odd"),
                    );
                    return None;
                }
                if buckets < 4 || max_distance <= buckets / 2 {
                    self.error(
                        m_span,
                        format!(
                            "{buckets} relative buckets need `max_distance` above {} (the last exactly-bucketed \
                             offset) and at least 4 buckets; found {max_distance} (T5 uses 32 buckets up to 128)",
                            buckets / 2
                        ),
                    );
                    return None;
                }
                Some(BiasArg::Relative { buckets, max_distance, weights })
            }
            other => {
                self.error(other.span(), format!("{expected}, found `{}`", quote::quote!(#other)));
                None
            }
        }
    }

    /// `concat(a, b, …)`: the tensors side by side.
    fn concat(&mut self, span: Span, pos: &[&Expr]) -> Option<Val> {
        if pos.len() < 2 {
            self.error(span, "`concat` joins two or more tensors along the features");
            return None;
        }
        let inputs: Vec<usize> =
            (0..pos.len()).map(|i| self.tensor_arg("concat", pos, i, span)).collect::<Option<_>>()?;
        let width = inputs.iter().map(|&t| self.cur.tensors[t].width).sum();
        let out = self.cur.tensor(width, span, "concat");
        self.cur.nodes.push(Node::Concat { inputs, out });
        Some(Val::Tensor(out))
    }

    /// `slice(x, start, width)`: columns `start..start + width`.
    fn slice(&mut self, span: Span, pos: &[&Expr]) -> Option<Val> {
        let input = self.tensor_arg("slice", pos, 0, span)?;
        let start = match pos.get(1).map(|e| (e, self.constant(e))) {
            Some((_, Some(Const::Int(n)))) if n >= 0 => n as usize,
            Some((e, _)) => {
                self.error(e.span(), "the first column is a whole number ≥ 0");
                return None;
            }
            None => {
                self.error(span, "expected `slice(x, start, width)`");
                return None;
            }
        };
        let width = self.size_arg("slice", pos, 2, span, "the width")?;
        let have = self.cur.tensors[input].width;
        if start + width > have {
            let hint = self.cur.tensors[input].hint.clone();
            self.error(
                span,
                format!("columns {start}..{} are outside `{hint}`, which is [S, {have}]", start + width),
            );
            return None;
        }
        let out = self.cur.tensor(width, span, "slice");
        self.cur.nodes.push(Node::Slice { input, start, out });
        Some(Val::Tensor(out))
    }

    /// `let (a, b, …) = split(x, [w1, w2, …]);`: consecutive column ranges covering `x`.
    fn split(&mut self, tuple: &syn::PatTuple, init: &Expr) {
        let Expr::Call(call) = init else {
            self.error(init.span(), "a tuple `let` takes `split(x, [w1, w2, …])`");
            return;
        };
        let (Some(x), Some(Expr::Array(widths)), 2) =
            (call.args.first(), call.args.iter().nth(1), call.args.len())
        else {
            self.error(call.span(), "expected `split(x, [w1, w2, …])`");
            return;
        };
        let Some(input) = self.tensor_arg("split", &[x], 0, call.span()) else { return };
        let widths: Option<Vec<usize>> = widths
            .elems
            .iter()
            .map(|e| match self.constant(e)? {
                Const::Int(n) if n >= 1 => Some(n as usize),
                other => {
                    self.error(
                        e.span(),
                        format!("a width is a whole number ≥ 1, found {}", other.describe()),
                    );
                    None
                }
            })
            .collect();
        let Some(widths) = widths else { return };
        let (total, have) = (widths.iter().sum::<usize>(), self.cur.tensors[input].width);
        if total != have {
            let hint = self.cur.tensors[input].hint.clone();
            self.error(
                call.args[1].span(),
                format!("the parts add up to {total} but `{hint}` is [S, {have}]"),
            );
            return;
        }
        if widths.len() != tuple.elems.len() {
            self.error(
                tuple.span(),
                format!("`split` gives {} tensors but the pattern names {}", widths.len(), tuple.elems.len()),
            );
            return;
        }
        let mut start = 0;
        for (pat, width) in tuple.elems.iter().zip(widths) {
            let Pat::Ident(p) = pat else {
                self.error(pat.span(), "expected a name");
                return;
            };
            let name = p.ident.to_string();
            let out = self.cur.tensor(width, p.ident.span(), &name);
            self.cur.nodes.push(Node::Slice { input, start, out });
            start += width;
            self.bind(&name, Val::Tensor(out), p.ident.span(), false);
        }
    }

    fn positive(&mut self, e: &Expr, what: &str) -> Option<usize> {
        match self.constant(e)? {
            Const::Int(n) if n >= 1 => Some(n as usize),
            other => {
                self.error(
                    e.span(),
                    format!("`{what}` must be a whole number ≥ 1, found {}", other.describe()),
                );
                None
            }
        }
    }
}

/// A call's named arguments and flags, taken one by one; what is left is reported as unknown.
struct Args<'e> {
    named: Vec<(String, &'e Expr, Span)>,
    flags: Vec<(String, Span)>,
}

impl<'e> Args<'e> {
    fn take(&mut self, name: &str) -> Option<&'e Expr> {
        let i = self.named.iter().position(|(n, _, _)| n == name)?;
        Some(self.named.remove(i).1)
    }
}
