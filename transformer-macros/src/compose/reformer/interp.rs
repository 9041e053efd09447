//! The statements of a composed Reformer's body: the streams' split before the loop, the layer
//! loop (each layer evaluated with its index bound, its two stream updates collected), the tail,
//! and the scope they bind into.

use std::rc::Rc;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, Pat, Stmt};

use super::recognise::{
    embeddings_are_tokens_plus_axial, head_over_both_streams, reversible_layer, streams_start_equal, Layer,
};
use super::{no_weight_attributes, Binding, Interp, Op, Tensor, Val, LAYER_FORM, MAX_LAYERS};
use crate::ast::Forward;
use crate::compose::constant::{self, Const};
use crate::spec::Reformer;

impl Interp<'_> {
    pub(super) fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.cx.error(span, msg);
        }
    }

    pub(super) fn bind(&mut self, name: &str, val: Val, span: Span) {
        self.scope.push(Binding { name: name.to_string(), val, span, used: false });
    }

    pub(super) fn dim(&self, name: &str) -> Option<usize> {
        self.dims.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The whole body: statements before the loop, the loop, the tail; then the recognition.
    pub(super) fn body(&mut self, forward: &Forward) -> Option<Reformer> {
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
        let result = self.tail(&stmts[loop_at + 1..], &names, start.width, for_loop.for_token.span);
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

    /// The statements after the loop, reading both streams as they leave the last layer (`at`):
    /// `let`s, then the result, an expression without `;`.
    fn tail(&mut self, after: &[Stmt], streams: &[String; 2], width: usize, at: Span) -> Option<Val> {
        for (i, name) in streams.iter().enumerate() {
            let t = Tensor { op: Op::Stream(i as u8 + 1), width, span: at };
            self.bind(name, Val::Tensor(Rc::new(t)), at);
        }
        let scope_before_tail = self.scope.len();
        let mut result = None;
        for (n, stmt) in after.iter().enumerate() {
            match stmt {
                Stmt::Expr(e, None) if n == after.len() - 1 => result = self.eval(e),
                Stmt::Expr(Expr::ForLoop(f), _) => self.error(
                    f.for_token.span,
                    "one repeated block per model: merge the loops (layers may vary by index)",
                ),
                _ => self.let_stmt(stmt),
            }
        }
        self.unused_from(scope_before_tail);
        result
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
        let count = self.layer_count(&for_loop.expr)?;
        let errors = self.cx.len();
        let mut layers = Vec::new();
        for layer in 0..count {
            self.quiet = layer > 0 && self.cx.len() > errors;
            let parsed = self.layer(for_loop, &var.ident, layer, streams, errors);
            layers.push(parsed);
        }
        self.quiet = false;
        if self.cx.len() > errors {
            return None;
        }
        layers.into_iter().collect()
    }

    /// The number of layers, `0..n` with `n` from 1 to the presets' bound.
    fn layer_count(&mut self, range: &Expr) -> Option<usize> {
        match range {
            Expr::Range(r) if matches!(r.limits, syn::RangeLimits::HalfOpen(_)) => {
                let start = r.start.as_deref().map(|e| self.constant(e));
                let end = r.end.as_deref().map(|e| self.constant(e));
                match (start, end) {
                    (Some(Some(Const::Int(0))), Some(Some(Const::Int(n))))
                        if (1..=MAX_LAYERS).contains(&n) =>
                    {
                        Some(n as usize)
                    }
                    _ => {
                        self.error(
                            r.span(),
                            format!("expected `0..n` with a whole number of layers from 1 to {MAX_LAYERS}"),
                        );
                        None
                    }
                }
            }
            other => {
                self.error(other.span(), "expected `0..layers`");
                None
            }
        }
    }

    /// One layer: the loop body evaluated with the index bound to `layer` and both streams as they
    /// enter it, its two updates recognised as a reversible layer. (`errors`, those before the
    /// loop: a layer missing an update says so only when nothing else went wrong.)
    fn layer(
        &mut self,
        for_loop: &syn::ExprForLoop,
        var: &syn::Ident,
        layer: usize,
        streams: &[String; 2],
        errors: usize,
    ) -> Option<Layer> {
        let depth = self.scope.len();
        self.bind(&var.to_string(), Val::Const(Const::Int(layer as i128)), var.span());
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
        match updates {
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
        }
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

    pub(super) fn constant(&mut self, e: &Expr) -> Option<Const> {
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
}
