//! `attention(…)`: self-attention over a fused `[Q | K | V]` or three projections, and
//! cross-attention when the keys and values are projections of the encoder's memory; each with
//! its head-width rules, rotary positions, and the score arguments of [`super::masks`].

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use super::call::Args;
use super::{At, AttentionNode, Const, CrossNode, Interp, Node, Val};

impl Interp<'_> {
    /// `attention(qkv, heads = …)` or `attention(q, k, v, heads = …)`, with `kv_heads`, `causal`,
    /// `window`, `sparse`, `rope` (and `rotary_dims`), `bias` and `scaled`: `[S, heads · head_dim]`.
    pub(super) fn attention(&mut self, span: Span, pos: &[&Expr], args: &mut Args) -> Option<Val> {
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
                let (qkv, head_dim) = self.fused_qkv(span, pos, heads, kv_heads)?;
                (qkv, None, head_dim)
            }
            3 => {
                let q = self.tensor_arg("attention", pos, 0, span)?;
                let k = self.any_tensor_arg("attention", pos, 1, span)?;
                let v = self.any_tensor_arg("attention", pos, 2, span)?;
                if self.cur.tensors[k].memory || self.cur.tensors[v].memory {
                    return self.cross_attention(span, pos, (q, k, v), heads, kv_heads, causal, args);
                }
                let head_dim = self.separate_qkv(pos, (q, k, v), heads, kv_heads)?;
                (q, Some((k, v)), head_dim)
            }
            _ => {
                self.error(span, "expected `attention(qkv, heads = …)` or `attention(q, k, v, heads = …)`");
                return None;
            }
        };
        let window = self.window_arg(args, causal)?;
        let sparse = self.sparse_arg(args)?;
        let rope = self.rope_arg(args, span, head_dim)?;
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

    /// Rule: a fused `[Q | K | V]` splits into `heads` query and `2 × kv_heads` key/value heads,
    /// all of one width. Returns the tensor and the head width.
    fn fused_qkv(
        &mut self,
        span: Span,
        pos: &[&Expr],
        heads: usize,
        kv_heads: usize,
    ) -> Option<(usize, usize)> {
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
        Some((qkv, w / parts))
    }

    /// Rule: the queries split into `heads` heads, and the keys and values are `kv_heads` heads
    /// of that width. Returns the head width.
    fn separate_qkv(
        &mut self,
        pos: &[&Expr],
        (q, k, v): (usize, usize, usize),
        heads: usize,
        kv_heads: usize,
    ) -> Option<usize> {
        let (wq, wk, wv) = (self.cur.tensors[q].width, self.cur.tensors[k].width, self.cur.tensors[v].width);
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
        Some(hd)
    }

    /// `rope = θ` (and `rotary_dims = n`): rotary positions on the queries and keys, over the
    /// leading `n` dims of each head (all of them by default), an even number.
    fn rope_arg(&mut self, args: &mut Args, span: Span, head_dim: usize) -> Option<Option<(f64, usize)>> {
        let Some(e) = args.take("rope") else { return Some(None) };
        let theta = match self.constant(e)? {
            Const::Float(t) if t > 0.0 => t,
            other => {
                self.error(
                    e.span(),
                    format!("`rope` is the rotary base θ (e.g. `10000.0`), found {}", other.describe()),
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
                format!("rotary dims must be even and at most the head width {head_dim}, found {dims}"),
            );
            return None;
        }
        Some(Some((theta, dims)))
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
}
