//! The node constructors, each with its width rule and its errors under its own tokens: `+` and
//! `*`, the embeddings (`embedding`, `sinusoidal`, `patch_embedding`), `linear` (and its weight
//! layouts), the norms, the activations, and `concat` / `slice` / `split`. Attention has its own
//! module ([`super::attention`]), as do pooling ([`super::outputs`]) and the cross-attentions of
//! an encoder-decoder ([`super::cross`]).

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, Pat};

use super::call::Args;
use super::{Const, Interp, Node, Val};
use crate::graph::Index;
use crate::graph::{FieldKind, Layout};
use crate::spec::{Activation, ImageInput};

impl Interp<'_> {
    /// `a + b`: two per-token tensors of one width (or two constants).
    pub(super) fn add(&mut self, e: &Expr, b: &syn::ExprBinary) -> Option<Val> {
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
                    let (na, nc) = (self.written(a), self.written(c));
                    self.error(
                        b.op.span(),
                        format!(
                            "cannot add [S, {wa}] and [S, {wc}]: `{na}` and `{nc}` must have the same width"
                        ),
                    );
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

    /// `x * c` or `c * x`: a per-token tensor scaled by a number (or two constants multiplied).
    pub(super) fn scale(&mut self, e: &Expr, b: &syn::ExprBinary) -> Option<Val> {
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
                self.error(
                    b.op.span(),
                    "a tensor is scaled by a constant (`x * sqrt(d_model)`); two tensors do not multiply",
                );
                return Some(Val::Poison);
            }
            _ => return self.constant(e).map(Val::Const),
        };
        let Some(factor) = factor(c) else {
            self.error(b.op.span(), format!("a tensor is scaled by a number, found {}", c.describe()));
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

    /// `embedding(ids, rows, width[, offset = n])` (a learned table, row `id + offset`: BART's
    /// positions start at row 2) or `sinusoidal(positions, rows, width)` (computed, not loaded).
    pub(super) fn embedding(
        &mut self,
        func: &str,
        span: Span,
        pos: &[&Expr],
        args: &mut Args,
    ) -> Option<Val> {
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

    /// `patch_embedding(image, width, size = 224, patch = 16, channels = 3, class_token = true)`:
    /// each image cut into `patch × patch` squares, each square projected to `width` (a
    /// `Conv2d(kernel = stride = patch)` checkpoint weight), the class token prepended when
    /// `class_token`, and learned positions added (one row per patch, plus the class token's).
    /// Weighted parts, innermost first: the projection, the class token (if any), the positions.
    pub(super) fn patch_embedding(&mut self, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
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

    /// `linear(x, out)` or `linear(x, in, out)`, with `bias` and `layout`: a `[S, out]` tensor
    /// (`[M, out]` from the memory; an image classifier's head may project a pooled row).
    pub(super) fn linear(&mut self, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
        // An image classifier's head projects the pooled states (`linear(cls(x), labels)`).
        let input = if self.image && self.section == 2 && !pos.is_empty() {
            self.pool_arg("linear", &pos[..1], span)?
        } else {
            self.any_tensor_arg("linear", pos, 0, span)?
        };
        let (in_width, memory) = (self.cur.tensors[input].width, self.cur.tensors[input].memory);
        let pooled = self.cur.tensors[input].pooled;
        let output = self.linear_output(span, pos, input)?;
        let (bias, layout) = self.linear_weight(args, output)?;
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

    /// The output width of `linear(x, out)`; `linear(x, in, out)` also states the input's width,
    /// which must be the input's.
    fn linear_output(&mut self, span: Span, pos: &[&Expr], input: usize) -> Option<usize> {
        let (in_width, memory) = (self.cur.tensors[input].width, self.cur.tensors[input].memory);
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
        Some(output)
    }

    /// How a linear's weight is stored: whether it has a bias, and its `layout` (`torch`,
    /// `conv1d`, `per_head(heads)`, `in_proj…`, or a bias stored apart, `bias = "name"`).
    fn linear_weight(&mut self, args: &mut Args, output: usize) -> Option<(bool, Layout)> {
        // `bias = "name"`: the bias is a tensor of its own under the root (BART's
        // `final_logits_bias` beside a tied head).
        let bias_at = match args.named.iter().position(|(n, _, _)| n == "bias") {
            Some(i) => match args.named[i].1 {
                Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                    args.named.remove(i);
                    Some(crate::compose::lower::intern(&s.value()))
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
        Some((bias, layout))
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

    /// `layer_norm(x[, eps = …])` / `rms_norm(x[, eps = …])`: as wide as `x`.
    pub(super) fn norm(&mut self, func: &str, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
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

    /// `gelu(x)`, `relu(x)`, …: as wide as `x`; the gated ones (`swiglu`, `geglu`, …) split `x`
    /// into gate and up halves and are half as wide.
    pub(super) fn activation(&mut self, func: &str, span: Span, pos: &[&Expr]) -> Option<Val> {
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

    /// `concat(a, b, …)`: the tensors side by side.
    pub(super) fn concat(&mut self, span: Span, pos: &[&Expr]) -> Option<Val> {
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
    pub(super) fn slice(&mut self, span: Span, pos: &[&Expr]) -> Option<Val> {
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
    pub(super) fn split(&mut self, tuple: &syn::PatTuple, init: &Expr) {
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
}
