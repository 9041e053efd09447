//! A composed Reformer's expressions: names, `+`, a per-layer `if`, and the layer calls
//! (`embedding`, `axial_positions`, `lsh_attention`, `local_attention`, `layer_norm`, `linear`,
//! the activations, `concat`), each building a [`Tensor`] with its width, and each mismatch an
//! error under its own expression.

use std::rc::Rc;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Stmt};

use super::{
    AttentionCall, Interp, Op, Tensor, Val, FUNCTIONS, MAX_BUCKETS, MAX_HASHES, MAX_NEIGHBOURS,
    MAX_POSITIONS, MAX_VOCAB,
};
use crate::compose::constant::Const;
use crate::spec::{Activation, ReformerAttention};

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

impl Interp<'_> {
    fn tensor(&mut self, op: Op, width: usize, span: Span) -> Option<Val> {
        Some(Val::Tensor(Rc::new(Tensor { op, width, span })))
    }

    pub(super) fn eval(&mut self, e: &Expr) -> Option<Val> {
        match e {
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Group(g) => self.eval(&g.expr),
            Expr::Path(p) => self.read(p),
            Expr::Binary(b) if matches!(b.op, BinOp::Add(_)) => self.add(e, b),
            Expr::If(i) => self.choose(i),
            Expr::Call(call) => self.call(call),
            Expr::Lit(_) | Expr::Binary(_) | Expr::Unary(_) => self.constant(e).map(Val::Const),
            other => {
                self.error(other.span(), "expected a layer call, a name, `+` or a constant");
                Some(Val::Poison)
            }
        }
    }

    /// A name: a binding (marked used), or a dim.
    fn read(&mut self, p: &syn::ExprPath) -> Option<Val> {
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

    /// `a + b`: two tensors of one width (or two constants).
    fn add(&mut self, e: &Expr, b: &syn::ExprBinary) -> Option<Val> {
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
            (Some(Val::Poison), _) | (_, Some(Val::Poison)) | (None, _) | (_, None) => Some(Val::Poison),
            _ => {
                self.error(b.op.span(), "`+` adds two tensors of one width");
                Some(Val::Poison)
            }
        }
    }

    /// `if cond { a } else { b }` with a constant condition (such as `layer % 2 == 0`): the
    /// branch it picks, one expression.
    fn choose(&mut self, i: &syn::ExprIf) -> Option<Val> {
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
                self.error(
                    i.span(),
                    "a per-layer choice is `if … { tensor } else { tensor }`, one expression in each branch",
                );
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
