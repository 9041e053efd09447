//! Statements and expressions: `let name = …;`, `name = …;` (a loop body's update of the stream),
//! the checkpoint names a statement's `#[weights …]` gives the fields it created, and what an
//! expression is: a name, `+`, `*`, a layer call or a constant.

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, BinOp, Expr, LitStr, Pat, Stmt, Token};

use super::{FieldDef, Interp, Val};
use crate::ctxt::Ctxt;
use crate::graph::FieldKind;

/// The checkpoint names a statement's `#[weights = "…"]` / `#[weights("…", …)]` gives.
pub(super) fn weight_names(cx: &mut Ctxt, attrs: &[Attribute]) -> Option<(Vec<String>, Span)> {
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
pub(super) fn expr_attrs(e: &Expr) -> &[Attribute] {
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
    /// One statement of a section: `let name = …;`, `let (a, b) = split(…);` or `name = …;`.
    pub(super) fn stmt(&mut self, stmt: &Stmt, in_loop: bool) {
        self.begin_stmt(stmt);
        match stmt {
            Stmt::Local(local) => self.let_stmt(local),
            Stmt::Expr(Expr::Assign(a), Some(_)) => self.assign(a),
            Stmt::Expr(Expr::ForLoop(f), _) if in_loop => {
                self.error(f.for_token.span, "loops do not nest: one repeated block per model");
            }
            Stmt::Expr(e, _) => {
                self.error(e.span(), "expected `let name = …;` or `name = …;`");
            }
            other => self.error(other.span(), "expected `let name = …;` or `name = …;`"),
        }
    }

    /// Starts a statement: its place in source order (a use of a `let` at or after it is a
    /// cycle), and the errors before it (its fields are named only when it adds none).
    pub(super) fn begin_stmt(&mut self, stmt: &Stmt) {
        self.at = self.order.get(&(stmt as *const Stmt)).copied().unwrap_or(self.at);
        self.stmt_errors = self.cx.len();
        self.poisoned = false;
    }

    /// `let name = …;` (the tensor takes the name, and so does its field when it made one), or
    /// `let (a, b, …) = split(…);`.
    fn let_stmt(&mut self, local: &syn::Local) {
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

    /// `name = …;`: a new value for a name bound before (in a layer, the stream's update).
    fn assign(&mut self, a: &syn::ExprAssign) {
        let names = weight_names(self.cx, expr_attrs(&Expr::Assign(a.clone())));
        let Expr::Path(p) = &*a.left else {
            self.error(a.left.span(), "expected a name on the left of `=`");
            return;
        };
        let name = p.path.get_ident().map(ToString::to_string).unwrap_or_default();
        if self.lookup_quiet(&name).is_none() {
            self.error(a.left.span(), format!("cannot assign to `{name}`: it is not defined (use `let`)"));
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

    /// Names the fields the statement created: from its attribute, or the `let` name when it
    /// created exactly one.
    pub(super) fn finish_names(
        &mut self,
        names: Option<(Vec<String>, Span)>,
        binding: Option<&str>,
        span: Span,
    ) {
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

    pub(super) fn field(&mut self, kind: FieldKind, weighted: bool) -> usize {
        self.cur.fields.push(FieldDef { kind, weight: String::new() });
        let f = self.cur.fields.len() - 1;
        if weighted {
            self.pending.push(f);
        }
        f
    }

    pub(super) fn eval(&mut self, e: &Expr) -> Option<Val> {
        match e {
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Path(p) => self.read_name(p),
            Expr::Binary(b) if matches!(b.op, BinOp::Add(_)) => self.add(e, b),
            Expr::Binary(b) if matches!(b.op, BinOp::Mul(_)) => self.scale(e, b),
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
}
