//! What a composed encoder-decoder's decoder layers may add beyond multi-head cross-attention:
//! the additive and location cross-attentions of the encoder-decoder preset's
//! `cross_attention_kind` (`additive_attention`, `location_attention`,
//! `location_sensitive_attention`), and `nn.MultiheadAttention`'s packed projections
//! (`layout = in_proj`), so `torch.nn.Transformer` checkpoints compose.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use super::call::Args;
use super::{AdditiveNode, Interp, Node, Val};
use crate::graph::{AdditiveKind, FieldKind, Layout};

/// The longest source a location kernel may span (the preset's bound on `location_kernel`).
const MAX_LOCATION_KERNEL: usize = 1 << 10;

impl Interp<'_> {
    /// `additive_attention(x, memory, dim = …)` (Bahdanau), `location_attention(x, memory)`
    /// (Luong's location) and `location_sensitive_attention(x, memory, dim = …, filters = …,
    /// kernel = …)` (Tacotron 2): each row of `x` attends to the memory's rows; the result is the
    /// context `Σ α_j h_j`, as wide as the memory.
    pub(super) fn additive_attention(
        &mut self,
        func: &str,
        span: Span,
        pos: &[&Expr],
        args: &mut Args,
    ) -> Option<Val> {
        if pos.len() != 2 {
            self.error(
                span,
                format!("expected `{func}(x, memory, …)`: the decoder rows and the encoder's memory"),
            );
            return None;
        }
        let query = self.tensor_arg(func, pos, 0, span)?;
        let memory = self.any_tensor_arg(func, pos, 1, span)?;
        // The sizes are read first, so a wrong memory is the one error.
        let scoring = match func {
            "additive_attention" => {
                Some(AdditiveKind::Bahdanau { attention: self.size_named(func, span, args, "dim")? })
            }
            "location_sensitive_attention" => {
                let attention = self.size_named(func, span, args, "dim")?;
                let filters = self.size_named(func, span, args, "filters")?;
                let kernel_expr = args.take("kernel");
                let Some(kernel_expr) = kernel_expr else {
                    self.error(span, format!("`{func}` needs `kernel = …`: the (odd) width of the convolution over the previous and cumulative alignments"));
                    return None;
                };
                let kernel = self.positive(kernel_expr, "kernel")?;
                if !location_kernel_odd(self, kernel, kernel_expr.span()) {
                    return None;
                }
                Some(AdditiveKind::LocationSensitive { attention, filters, kernel })
            }
            // Luong's location scores each source position: sized by the longest source.
            _ => None,
        };
        if !self.reads_raw_memory(func, pos[1], memory) {
            return None;
        }
        let max_source = self.max_source(span)?;
        let kind = scoring.unwrap_or(AdditiveKind::Location { max_source });
        let (q, m) = (self.cur.tensors[query].width, self.cur.tensors[memory].width);
        let field = self.field(FieldKind::Additive { kind, query: q, memory: m }, true);
        let out = self.cur.tensor(m, span, "cross_context");
        self.cur.nodes.push(Node::Additive(AdditiveNode { field, input: query, out, kind, max_source }));
        Some(Val::Tensor(out))
    }

    /// Rule: an additive or location cross-attention reads the encoder's memory itself (its
    /// rows are the values; the keys are projected inside the attention), not a projection of it.
    fn reads_raw_memory(&mut self, func: &str, arg: &Expr, t: usize) -> bool {
        if Some(t) == self.cur.memory {
            return true;
        }
        let shape = self.cur.tensors[t].shape();
        let what = if self.cur.tensors[t].memory {
            format!("a projection of the memory {shape}")
        } else {
            format!("{shape}, a row per target token")
        };
        let name = self.memory.map_or("memory", |m| m.name);
        self.error(
            arg.span(),
            format!("`{func}` reads the encoder's memory itself (it projects its keys inside), found {what}: pass `{name}`"),
        );
        false
    }

    /// A required named size `name = …` of `func`.
    fn size_named(&mut self, func: &str, span: Span, args: &mut Args, name: &str) -> Option<usize> {
        let Some(e) = args.take(name) else {
            let what = match name {
                "dim" => "the width of the scoring MLP `energyᵀ tanh(W_q s + W_k h + b)`",
                _ => "the number of convolution filters over the previous and cumulative alignments",
            };
            self.error(span, format!("`{func}` needs `{name} = …`: {what}"));
            return None;
        };
        self.positive(e, name)
    }

    /// Rule: alignments cover the longest source, `max_positions` (as the preset's: one position
    /// range serves sources and targets).
    fn max_source(&mut self, span: Span) -> Option<usize> {
        match self.dims.get("max_positions") {
            Some(&m) if m > 0 => Some(m),
            _ => {
                self.error(span, "additive and location cross-attention keep alignments over the longest source: declare `max_positions: …` in the struct");
                None
            }
        }
    }

    /// `layout = in_proj` or `layout = in_proj(start, total)`: `nn.MultiheadAttention`'s packed
    /// `in_proj_weight` `[total, in]` / `in_proj_bias`, of which this linear is rows
    /// `start..start + out` (bare `in_proj`: all of them, a fused `[Q | K | V]`).
    pub(super) fn in_proj_layout(&mut self, e: &Expr, output: usize) -> Option<Layout> {
        let call = match e {
            Expr::Path(_) => return Some(Layout::InProj { total: output, first: 0 }),
            Expr::Call(call) => call,
            _ => return None,
        };
        let [start_expr, total_expr] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.error(call.span(), "`in_proj` takes the first row and the packed weight's rows: `layout = in_proj(start, total)`, e.g. keys `in_proj(d_model, 3 * d_model)`");
            return None;
        };
        let start = match self.constant(start_expr)? {
            super::Const::Int(s) if s >= 0 => s as usize,
            other => {
                self.error(
                    start_expr.span(),
                    format!("the first row is a number ≥ 0, found {}", other.describe()),
                );
                return None;
            }
        };
        let total = self.positive(total_expr, "total")?;
        if !in_proj_rows_fit(self, start, output, total, start_expr.span()) {
            return None;
        }
        Some(Layout::InProj { total, first: start })
    }
}

/// Rule: an `in_proj(start, total)` slice lies inside the packed weight: `start + out ≤ total`.
fn in_proj_rows_fit(it: &mut Interp, start: usize, output: usize, total: usize, span: Span) -> bool {
    if start + output <= total {
        return true;
    }
    let hint = match total.checked_sub(output) {
        Some(last) => format!("so it starts at row {last} at most"),
        None => format!("more than the {total} rows there are"),
    };
    it.error(
        span,
        format!("this linear's {output} outputs from row {start} are rows {start}..{} of a packed weight of {total} rows: they do not fit ({output} rows, {hint})", start + output),
    );
    false
}

/// Rule: a location-sensitive kernel is odd, centred on each source position with
/// `(kernel − 1) / 2` zeros either side (the preset's `location_kernel` rule), and at most 1024.
fn location_kernel_odd(it: &mut Interp, kernel: usize, span: Span) -> bool {
    if !kernel.is_multiple_of(2) && kernel <= MAX_LOCATION_KERNEL {
        return true;
    }
    let msg = if kernel.is_multiple_of(2) {
        format!("`kernel` must be odd: the convolution is centred on each source position with (kernel - 1) / 2 zeros each side; use {} or {}", kernel - 1, kernel + 1)
    } else {
        format!("`kernel` is at most {MAX_LOCATION_KERNEL}, found {kernel}")
    };
    it.error(span, msg);
    false
}
