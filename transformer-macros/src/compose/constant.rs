//! Compile-time constants of a composed model: dims (`head_dim: d_model / heads`) and per-layer
//! parameters (`window = if layer % 2 == 0 { Some(8) } else { None }`), evaluated from `syn`
//! expressions with every error at the expression that caused it.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Lit, UnOp};

/// A constant value.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Const {
    Int(i128),
    Float(f64),
    Bool(bool),
    /// `Some(n)` / `None`: an optional integer (a window that some layers do not have).
    Opt(Option<i128>),
}

impl Const {
    pub fn describe(&self) -> String {
        match self {
            Const::Int(n) => format!("the integer {n}"),
            Const::Float(x) => format!("the number {x}"),
            Const::Bool(b) => format!("`{b}`"),
            Const::Opt(Some(n)) => format!("`Some({n})`"),
            Const::Opt(None) => "`None`".to_string(),
        }
    }
}

/// Evaluates `expr`; `lookup` resolves a name (a dim, the layer index) or returns `None`.
pub fn eval(expr: &Expr, lookup: &dyn Fn(&str) -> Option<Const>) -> syn::Result<Const> {
    let err = |span: Span, msg: String| Err(syn::Error::new(span, msg));
    match expr {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Int(i) => Ok(Const::Int(i.base10_parse()?)),
            Lit::Float(f) => Ok(Const::Float(f.base10_parse()?)),
            Lit::Bool(b) => Ok(Const::Bool(b.value)),
            other => err(other.span(), "expected a number".into()),
        },
        Expr::Path(p) if p.path.is_ident("None") => Ok(Const::Opt(None)),
        Expr::Path(p) => {
            let Some(ident) = p.path.get_ident() else {
                return err(p.span(), "expected a name or a number".into());
            };
            lookup(&ident.to_string())
                .map_or_else(|| err(ident.span(), format!("cannot find `{ident}` among the dims")), Ok)
        }
        Expr::Paren(p) => eval(&p.expr, lookup),
        Expr::Group(g) => eval(&g.expr, lookup),
        Expr::Call(call) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("Some")) => {
            match (call.args.len(), call.args.first().map(|a| eval(a, lookup)).transpose()?) {
                (1, Some(Const::Int(n))) => Ok(Const::Opt(Some(n))),
                _ => err(call.span(), "`Some(…)` takes one integer".into()),
            }
        }
        // `sqrt(d_model)`: the paper's embedding scale.
        Expr::Call(call) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("sqrt")) => {
            match (call.args.len(), call.args.first().map(|a| eval(a, lookup)).transpose()?) {
                (1, Some(Const::Int(n))) if n >= 0 => Ok(Const::Float((n as f64).sqrt())),
                (1, Some(Const::Float(x))) if x >= 0.0 => Ok(Const::Float(x.sqrt())),
                _ => err(call.span(), "`sqrt(…)` takes one number ≥ 0".into()),
            }
        }
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => match eval(&u.expr, lookup)? {
            Const::Int(n) => Ok(Const::Int(-n)),
            Const::Float(x) => Ok(Const::Float(-x)),
            other => err(u.span(), format!("cannot negate {}", other.describe())),
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Not(_)) => match eval(&u.expr, lookup)? {
            Const::Bool(b) => Ok(Const::Bool(!b)),
            other => err(u.span(), format!("`!` needs a condition, found {}", other.describe())),
        },
        Expr::If(i) => {
            let cond = match eval(&i.cond, lookup)? {
                Const::Bool(b) => b,
                other => return err(i.cond.span(), format!("a condition, found {}", other.describe())),
            };
            let Some((_, otherwise)) = &i.else_branch else {
                return err(i.if_token.span, "a constant `if` needs an `else`".into());
            };
            if cond {
                block_value(&i.then_branch, lookup)
            } else {
                eval(otherwise, lookup)
            }
        }
        Expr::Block(b) => block_value(&b.block, lookup),
        Expr::Binary(b) => binary(b, eval(&b.left, lookup)?, eval(&b.right, lookup)?),
        other => err(
            other.span(),
            "expected a constant: a number, a dim, arithmetic, `sqrt(…)` or `if … { … } else { … }`".into(),
        ),
    }
}

fn block_value(block: &syn::Block, lookup: &dyn Fn(&str) -> Option<Const>) -> syn::Result<Const> {
    match block.stmts.as_slice() {
        [syn::Stmt::Expr(e, None)] => eval(e, lookup),
        _ => Err(syn::Error::new(block.brace_token.span.join(), "expected one value in the braces")),
    }
}

fn binary(b: &syn::ExprBinary, left: Const, right: Const) -> syn::Result<Const> {
    let span = b.op.span();
    let fail = |msg: String| Err(syn::Error::new(span, msg));
    match (left, right) {
        (Const::Int(l), Const::Int(r)) => match b.op {
            BinOp::Add(_) => Ok(Const::Int(l + r)),
            BinOp::Sub(_) => Ok(Const::Int(l - r)),
            BinOp::Mul(_) => Ok(Const::Int(l * r)),
            BinOp::Div(_) | BinOp::Rem(_) if r == 0 => fail(format!("division of {l} by zero")),
            BinOp::Div(_) if l % r != 0 => fail(format!(
                "{l} / {r} is not a whole number (remainder {}): a dim must divide exactly",
                l % r
            )),
            BinOp::Div(_) => Ok(Const::Int(l / r)),
            BinOp::Rem(_) => Ok(Const::Int(l % r)),
            BinOp::Eq(_) => Ok(Const::Bool(l == r)),
            BinOp::Ne(_) => Ok(Const::Bool(l != r)),
            BinOp::Lt(_) => Ok(Const::Bool(l < r)),
            BinOp::Le(_) => Ok(Const::Bool(l <= r)),
            BinOp::Gt(_) => Ok(Const::Bool(l > r)),
            BinOp::Ge(_) => Ok(Const::Bool(l >= r)),
            _ => fail("this operator does not apply to integers".into()),
        },
        (Const::Float(l), Const::Float(r)) => match b.op {
            BinOp::Add(_) => Ok(Const::Float(l + r)),
            BinOp::Sub(_) => Ok(Const::Float(l - r)),
            BinOp::Mul(_) => Ok(Const::Float(l * r)),
            BinOp::Div(_) => Ok(Const::Float(l / r)),
            _ => fail("this operator does not apply to numbers".into()),
        },
        (Const::Bool(l), Const::Bool(r)) => match b.op {
            BinOp::And(_) => Ok(Const::Bool(l && r)),
            BinOp::Or(_) => Ok(Const::Bool(l || r)),
            BinOp::Eq(_) => Ok(Const::Bool(l == r)),
            BinOp::Ne(_) => Ok(Const::Bool(l != r)),
            _ => fail("this operator does not apply to conditions".into()),
        },
        (l, r) => fail(format!("cannot combine {} and {}", l.describe(), r.describe())),
    }
}
