//! The arguments of `attention` that shape its scores, as the kernel's mask does: which keys a
//! query sees (`window`, `sparse` block layouts, each of which may be chosen by the layer index)
//! and the position bias added to the scores (`bias = alibi | relative(…)`). Their rules are the
//! presets' (`check::local`), so a composed attention is checked as a preset's is.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use super::call::Args;
use super::{BiasArg, Const, Interp};
use crate::spec::{Sparse, SparsePattern};

/// The block-sparse layouts, quoted by their errors.
const SPARSE_LAYOUTS: &str = "`sparse = strided(block = 64, stride = 2)`, `sparse = fixed(block = 64, stride = 4, summary = 1)` or `sparse = None` (dense)";
/// The position biases, quoted by their errors.
const POSITION_BIASES: &str =
    "`bias` is `alibi` or `relative(buckets = 32, max_distance = 128, weights = \"…\")`";

impl Interp<'_> {
    /// `window = N` (or `Some(N)` / `None`, e.g. chosen by the layer index): causal, the `N` keys
    /// ending at the query; bidirectional, centred on it (`N / 2` keys on either side, so `N` is
    /// even: the presets' rule).
    pub(super) fn window_arg(&mut self, args: &mut Args, causal: bool) -> Option<Option<usize>> {
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
    pub(super) fn sparse_arg(&mut self, args: &mut Args) -> Option<Option<Sparse>> {
        let Some(e) = args.take("sparse") else { return Some(None) };
        if !self.sparse_single_stack(e.span()) {
            return None;
        }
        self.sparse_layout(e)
    }

    /// Rule: a `sparse = …` value is a layout call, `None`, or a constant `if` (with an `else`)
    /// whose branches are such values.
    fn sparse_layout(&mut self, e: &Expr) -> Option<Option<Sparse>> {
        match e {
            Expr::Path(p) if p.path.is_ident("None") => Some(None),
            Expr::Paren(p) => self.sparse_layout(&p.expr),
            Expr::Block(b) => {
                let Some(inner) = one_expr(&b.block) else {
                    self.error(
                        e.span(),
                        format!("expected one block-sparse layout in the braces: {SPARSE_LAYOUTS}"),
                    );
                    return None;
                };
                self.sparse_layout(&inner)
            }
            Expr::If(i) => self.sparse_if(i),
            Expr::Call(call) => self.sparse_call(call),
            _ => {
                self.error(e.span(), format!("expected a block-sparse layout: {SPARSE_LAYOUTS}"));
                None
            }
        }
    }

    /// `if cond { layout } else { layout }`: the branch a constant condition picks (the layer
    /// index is a constant in each layer's evaluation).
    fn sparse_if(&mut self, i: &syn::ExprIf) -> Option<Option<Sparse>> {
        let cond = match self.constant(&i.cond)? {
            Const::Bool(b) => b,
            other => {
                self.error(i.cond.span(), format!("expected a condition, found {}", other.describe()));
                return None;
            }
        };
        let Some((_, otherwise)) = &i.else_branch else {
            self.error(
                i.if_token.span,
                format!("a layout chosen by `if` needs an `else` ({SPARSE_LAYOUTS})"),
            );
            return None;
        };
        if !cond {
            return self.sparse_layout(otherwise);
        }
        let Some(inner) = one_expr(&i.then_branch) else {
            self.error(
                i.then_branch.span(),
                format!("expected one block-sparse layout in the braces: {SPARSE_LAYOUTS}"),
            );
            return None;
        };
        self.sparse_layout(&inner)
    }

    /// `strided(block = …, stride = …)` or `fixed(block = …, stride = …, summary = …)`, checked by
    /// the presets' rules (which report straight to the context, so not while errors are silenced).
    fn sparse_call(&mut self, call: &syn::ExprCall) -> Option<Option<Sparse>> {
        let fixed = match &*call.func {
            Expr::Path(p) if p.path.is_ident("strided") || p.path.is_ident("fixed") => {
                p.path.is_ident("fixed")
            }
            other => {
                self.error(other.span(), format!("the layouts are `strided` and `fixed`: {SPARSE_LAYOUTS}"));
                return None;
            }
        };
        let sizes = self.sparse_sizes(call, fixed)?;
        let size = |name: &str| sizes.iter().find(|(n, _, _)| n == name).map(|&(_, v, s)| (v, s));
        let needed: &[&str] = if fixed { &["block", "stride", "summary"] } else { &["block", "stride"] };
        if let Some(missing) = needed.iter().find(|n| size(n).is_none()) {
            self.error(call.span(), format!("the layout needs `{missing}`: {SPARSE_LAYOUTS}"));
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

    /// The sizes a layout call names: `block` and `stride`, and `fixed`'s `summary`; each once.
    fn sparse_sizes(&mut self, call: &syn::ExprCall, fixed: bool) -> Option<Vec<(String, usize, Span)>> {
        let mut sizes: Vec<(String, usize, Span)> = Vec::new();
        for arg in &call.args {
            let Expr::Assign(a) = arg else {
                self.error(arg.span(), format!("name each size: {SPARSE_LAYOUTS}"));
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
                self.error(a.left.span(), format!("{what}: {SPARSE_LAYOUTS}"));
                return None;
            }
            let value = self.positive(&a.right, &name)?;
            sizes.push((name, value, a.right.span()));
        }
        Some(sizes)
    }

    /// `bias = alibi` (BLOOM's slopes) or `bias = relative(buckets = …, max_distance = …, weights =
    /// "…")` (T5's learned buckets; `weights` names the table's module, read once for every
    /// layer).
    pub(super) fn position_bias(&mut self, e: &Expr, causal: bool) -> Option<BiasArg> {
        match e {
            Expr::Path(p) if p.path.is_ident("alibi") => Some(BiasArg::Alibi),
            Expr::Call(call) if matches!(&*call.func, Expr::Path(p) if p.path.is_ident("relative")) => {
                self.relative_bias(call, causal)
            }
            other => {
                self.error(other.span(), format!("{POSITION_BIASES}, found `{}`", quote::quote!(#other)));
                None
            }
        }
    }

    /// `relative(buckets = …, max_distance = …, weights = "…")`: all three are needed.
    fn relative_bias(&mut self, call: &syn::ExprCall, causal: bool) -> Option<BiasArg> {
        let (mut buckets, mut max_distance, mut weights) = (None, None, None);
        for arg in &call.args {
            let Expr::Assign(a) = arg else {
                self.error(arg.span(), format!("expected `name = value`: {POSITION_BIASES}"));
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
                    Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => weights = Some(s.value()),
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
        if !self.relative_buckets_fit((buckets, b_span), (max_distance, m_span), causal) {
            return None;
        }
        Some(BiasArg::Relative { buckets, max_distance, weights })
    }

    /// Rule: T5's relative buckets are an even number when bidirectional (half per direction; a
    /// causal attention's all count earlier keys), at least 4, with `max_distance` beyond the
    /// exact half (`> buckets / 2`).
    fn relative_buckets_fit(
        &mut self,
        (buckets, b_span): (usize, Span),
        (max_distance, m_span): (usize, Span),
        causal: bool,
    ) -> bool {
        if !causal && !buckets.is_multiple_of(2) {
            self.error(
                        b_span,
                        format!("relative buckets are split in half by direction, so their number is even: {buckets} is odd"),
                    );
            return false;
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
            return false;
        }
        true
    }
}

/// The one expression in braces (`{ strided(…) }`), if that is all they hold.
fn one_expr(block: &syn::Block) -> Option<Expr> {
    match block.stmts.as_slice() {
        [syn::Stmt::Expr(e, None)] => Some(e.clone()),
        _ => None,
    }
}
