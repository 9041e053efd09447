//! Layer calls: `func(positional…, name = value…, flag…)` split into its arguments, sent to the
//! layer's constructor, and every argument the layer did not take reported; plus the readers the
//! constructors share (a tensor, a size, a flag), each with its error.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use super::{Const, Interp, Val};
use crate::suggest::closest;

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

/// A call's named arguments and flags, taken one by one; what is left is reported as unknown.
pub(super) struct Args<'e> {
    pub(super) named: Vec<(String, &'e Expr, Span)>,
    pub(super) flags: Vec<(String, Span)>,
}

impl<'e> Args<'e> {
    pub(super) fn take(&mut self, name: &str) -> Option<&'e Expr> {
        let i = self.named.iter().position(|(n, _, _)| n == name)?;
        Some(self.named.remove(i).1)
    }
}

impl Interp<'_> {
    /// A layer call (`Some(…)` and `sqrt(…)` are constants). An unknown layer still reads its
    /// positional arguments, quietly, so a name read only there is not also reported unused.
    pub(super) fn call(&mut self, call: &syn::ExprCall) -> Option<Val> {
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
    pub(super) fn tensor_arg(&mut self, func: &str, args: &[&Expr], i: usize, span: Span) -> Option<usize> {
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
    pub(super) fn any_tensor_arg(
        &mut self,
        func: &str,
        args: &[&Expr],
        i: usize,
        span: Span,
    ) -> Option<usize> {
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
    pub(super) fn pooled_read(&mut self, func: &str, span: Span, t: usize) {
        let (shape, hint) = (self.cur.tensors[t].shape(), self.written(t));
        self.error(
            span,
            format!("`{func}` reads per-token tensors, but `{hint}` is pooled, {shape} (a row per sequence): a pooled vector is only normalised (`normalize`) or returned"),
        );
    }

    /// How a message names tensor `t`: its `let` name, or the call that computed it (`cls(…)`).
    pub(super) fn written(&self, t: usize) -> String {
        let hint = &self.cur.tensors[t].hint;
        if FUNCTIONS.contains(&hint.as_str()) {
            format!("{hint}(…)")
        } else {
            hint.clone()
        }
    }

    /// A positional tensor argument of a pooling call, pooled or not.
    pub(super) fn pool_arg(&mut self, func: &str, args: &[&Expr], span: Span) -> Option<usize> {
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

    /// A positional size argument (≥ 1).
    pub(super) fn size_arg(
        &mut self,
        func: &str,
        args: &[&Expr],
        i: usize,
        span: Span,
        what: &str,
    ) -> Option<usize> {
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

    /// A named size (≥ 1), such as `heads = …`.
    pub(super) fn positive(&mut self, e: &Expr, what: &str) -> Option<usize> {
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

    /// `name = true` / `false`, or `default` when it is not written.
    pub(super) fn flag_arg(&mut self, args: &mut Args, name: &str, default: bool) -> Option<bool> {
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
}
