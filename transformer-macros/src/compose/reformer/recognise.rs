//! The recognition of a composed Reformer's expression trees as the preset's parts, one named
//! rule per part: the embeddings, the streams' split, each reversible layer, the head over both
//! streams; then what the preset takes once, checked the same in every layer, and the spec.

use std::rc::Rc;

use proc_macro2::Span;

use super::{AttentionCall, Interp, Op, Tensor, Val, LAYER_FORM};
use crate::spec::{Activation, Reformer, ReformerAttention, ReformerLocal, ReformerLsh};

/// One recognised layer.
pub(super) struct Layer {
    attention: AttentionCall,
    /// The attention's and the feed-forward's norm eps, with where each was written.
    eps: (f64, Span),
    ff_eps: (f64, Span),
    act: (Activation, Span),
    d_ff: (usize, Span),
}

/// A spec with the recognised dims; [`expand`](super::expand) fills in the name, visibility and spans.
fn placeholder_spec(vocab_size: usize, d_model: usize, heads: usize, d_ff: usize) -> Reformer {
    Reformer {
        attrs: Vec::new(),
        vis: syn::Visibility::Inherited,
        name: syn::Ident::new("Reformer", Span::call_site()),
        vocab_size,
        max_positions: 0,
        d_model,
        heads,
        head_dim: 0,
        d_ff,
        activation: Activation::GeluErf,
        eps: 0.0,
        causal: false,
        layers: Vec::new(),
        lsh: None,
        local: None,
        axial_shape: [0; 2],
        axial_dims: [0; 2],
        vocab_span: Span::call_site(),
    }
}

impl Interp<'_> {
    /// Joins the layers' parts into a spec: one eps, one activation, one `d_ff`, one direction,
    /// one geometry per attention kind, and chunks that keep the padding in the table.
    pub(super) fn assemble(
        &mut self,
        d_model: usize,
        vocab: usize,
        shape: [usize; 2],
        axial_dims: [usize; 2],
        eps: (f64, Span),
        layers: Vec<Layer>,
    ) -> Option<Reformer> {
        let errors = self.cx.len();
        let first = &layers[0];
        let e = |x: f64| format!("{x:e}");
        let eps_everywhere = layers
            .iter()
            .flat_map(|l| [(e(l.eps.0), l.eps.1), (e(l.ff_eps.0), l.ff_eps.1)])
            .chain([(e(eps.0), eps.1)]);
        same_across_layers(self, "layer_norm `eps`", eps_everywhere);
        let act = layers.iter().map(|l| (activation_name(l.act.0), l.act.1));
        same_across_layers(self, "feed-forward activation", act);
        same_across_layers(self, "`d_ff`", layers.iter().map(|l| l.d_ff));
        let heads = layers.iter().map(|l| (l.attention.heads, l.attention.span));
        same_across_layers(self, "heads", heads);
        let directions = layers.iter().map(|l| (direction(l.attention.causal), l.attention.span));
        same_across_layers(self, "attention direction", directions);
        let of_kind = |kind| layers.iter().map(|l| l.attention).filter(move |a| a.kind == kind);
        for kind in [ReformerAttention::Lsh, ReformerAttention::Local] {
            same_across_layers(self, "chunking and hashing", of_kind(kind).map(|a| (geometry(a), a.span)));
        }
        let max_positions = shape[0] * shape[1];
        let chunks: Vec<AttentionCall> =
            [of_kind(ReformerAttention::Lsh).next(), of_kind(ReformerAttention::Local).next()]
                .into_iter()
                .flatten()
                .collect();
        padding_stays_in_the_table(self, max_positions, &chunks);
        if self.cx.len() > errors {
            return None;
        }
        let lsh = of_kind(ReformerAttention::Lsh).next().map(|a| {
            let (buckets, hashes) = a.hashing.unwrap_or((2, 1));
            ReformerLsh {
                chunk: a.chunk,
                chunks_before: a.chunks_before,
                chunks_after: a.chunks_after,
                buckets,
                hashes,
            }
        });
        let local = of_kind(ReformerAttention::Local).next().map(|a| ReformerLocal {
            chunk: a.chunk,
            chunks_before: a.chunks_before,
            chunks_after: a.chunks_after,
        });
        Some(Reformer {
            max_positions,
            activation: first.act.0,
            eps: eps.0,
            causal: first.attention.causal,
            layers: layers.iter().map(|l| l.attention.kind).collect(),
            lsh,
            local,
            axial_shape: shape,
            axial_dims,
            ..placeholder_spec(vocab, d_model, first.attention.heads, first.d_ff.0)
        })
    }
}

/// Rule: the two streams start as the same tensor, the embeddings: `let (x1, x2) = (x, x);`.
pub(super) fn streams_start_equal(
    it: &mut Interp,
    span: Span,
    names: &[(String, Span)],
    values: &[Option<Val>],
) -> Option<Rc<Tensor>> {
    let form = "a Reformer's two streams both start as the embeddings: `let (x1, x2) = (x, x);`";
    match (names, values) {
        ([a, b], [Some(Val::Tensor(x)), Some(Val::Tensor(y))]) if Rc::ptr_eq(x, y) && a.0 != b.0 => {
            let x = x.clone();
            it.bind(&a.0, Val::Tensor(x.clone()), a.1);
            it.bind(&b.0, Val::Tensor(x.clone()), b.1);
            Some(x)
        }
        (_, [_, _]) if values.iter().any(|v| matches!(v, Some(Val::Poison) | None)) => None,
        _ => {
            it.error(span, form);
            None
        }
    }
}

/// Rule: the embeddings are the token embeddings plus axial positions of the same width (HF's
/// `ReformerEmbeddings`). Returns the vocabulary and the axial shape and dims.
pub(super) fn embeddings_are_tokens_plus_axial(
    it: &mut Interp,
    x: &Tensor,
) -> Option<(usize, [usize; 2], [usize; 2])> {
    if let Op::Add(a, b) = &x.op {
        let (a, b) = if matches!(a.op, Op::Axial { .. }) { (b, a) } else { (a, b) };
        if let (Op::Embedding { vocab }, Op::Axial { shape, dims }) = (&a.op, &b.op) {
            return Some((*vocab, *shape, *dims));
        }
    }
    it.error(
        x.span,
        "a Reformer's streams start from `embedding(tokens, vocab_size, d_model) + axial_positions(shape = [s0, s1], dims = [d0, d1])`",
    );
    None
}

/// The stream a tensor is, when it is one as it entered the layer.
fn stream_of(t: &Tensor) -> Option<u8> {
    match t.op {
        Op::Stream(s) => Some(s),
        _ => None,
    }
}

/// Rule: a reversible layer is `Y1 = X1 + Attention(LayerNorm(X2))` then `Y2 = X2 +
/// FeedForward(LayerNorm(Y1))` (Kitaev et al. 2020, eq. 3; HF's `ReversibleLayer`): the first
/// stream reads the second, the second reads the *updated* first, so each layer can be undone.
pub(super) fn reversible_layer(
    it: &mut Interp,
    first: &(Rc<Tensor>, Span),
    second: &(Rc<Tensor>, Span),
    streams: &[String; 2],
) -> Option<Layer> {
    let [s1, s2] = streams;
    let residual = |t: &Tensor, stream: u8| -> Option<Rc<Tensor>> {
        match &t.op {
            Op::Add(a, b) if stream_of(a) == Some(stream) => Some(b.clone()),
            Op::Add(a, b) if stream_of(b) == Some(stream) => Some(a.clone()),
            _ => None,
        }
    };
    let Some(attn) = residual(&first.0, 1) else {
        it.error(
            first.1,
            format!("`{s1}` is updated as its old value plus the attention over `{s2}`: {LAYER_FORM}"),
        );
        return None;
    };
    let Op::Attention { call, input } = &attn.op else {
        it.error(attn.span, format!("the first stream adds an attention sublayer, `lsh_attention(…)` or `local_attention(…)`: {LAYER_FORM}"));
        return None;
    };
    let eps = normed_stream(it, input, 2, streams, "the attention reads")?;
    let Some(ff) = residual(&second.0, 2) else {
        it.error(second.1, format!("`{s2}` is updated as its old value plus the feed-forward of the updated `{s1}`: {LAYER_FORM}"));
        return None;
    };
    // linear(act(linear(layer_norm(y1), d_ff)), d_model)
    let shape_error = |it: &mut Interp, at: Span| {
        it.error(at, format!("the second stream adds a feed-forward, `linear(gelu(linear(layer_norm({s1}, eps = …), d_ff)), d_model)` (`gelu`, `gelu_tanh` or `relu`): {LAYER_FORM}"));
    };
    let Op::Linear { input: hidden, bias: out_bias } = &ff.op else {
        shape_error(it, ff.span);
        return None;
    };
    let Op::Act { act, input: inner } = &hidden.op else {
        shape_error(it, hidden.span);
        return None;
    };
    let Op::Linear { input: normed, bias: in_bias } = &inner.op else {
        shape_error(it, inner.span);
        return None;
    };
    for (bias, at) in [(in_bias, inner.span), (out_bias, ff.span)] {
        if !bias {
            it.error(at, "HF's Reformer feed-forward linears have biases: remove `bias = false`");
        }
    }
    let Op::Norm { eps: ff_eps, input: y1 } = &normed.op else {
        shape_error(it, normed.span);
        return None;
    };
    if !Rc::ptr_eq(y1, &first.0) {
        let old = stream_of(y1) == Some(1);
        let message = if old {
            format!("the feed-forward reads `{s1}` as it entered the layer; a reversible layer's second stream reads the *updated* first stream (`Y2 = X2 + FeedForward(Y1)`): update `{s1}` first, then read it")
        } else {
            format!("the feed-forward reads the updated first stream `{s1}` (`Y2 = X2 + FeedForward(Y1)`): {LAYER_FORM}")
        };
        it.error(normed.span, message);
        return None;
    }
    Some(Layer {
        attention: *call,
        eps,
        ff_eps: (*ff_eps, normed.span),
        act: (*act, hidden.span),
        d_ff: (inner.width, inner.span),
    })
}

/// Rule: an attention sublayer reads the layer norm of the other stream as it entered the layer
/// (`Attention(LayerNorm(X2))`). Returns the norm's eps.
fn normed_stream(
    it: &mut Interp,
    t: &Tensor,
    stream: u8,
    streams: &[String; 2],
    what: &str,
) -> Option<(f64, Span)> {
    let name = &streams[usize::from(stream - 1)];
    match &t.op {
        Op::Norm { eps, input } if stream_of(input) == Some(stream) => Some((*eps, t.span)),
        Op::Norm { input, .. } => {
            it.error(
                input.span,
                format!(
                    "{what} `layer_norm({name}, …)`, the other stream as it entered the layer: {LAYER_FORM}"
                ),
            );
            None
        }
        _ => {
            it.error(t.span, format!("{what} `layer_norm({name}, eps = …)` (a Reformer normalises before each sublayer): {LAYER_FORM}"));
            None
        }
    }
}

/// Rule: the head is `linear(layer_norm(concat(x1, x2), eps = …), vocab_size)`: both streams as
/// they leave the last layer, side by side, normalised, projected with a bias (HF's
/// `lm_head.decoder`). Returns the norm's eps and the vocabulary.
pub(super) fn head_over_both_streams(it: &mut Interp, t: &Tensor) -> Option<((f64, Span), usize)> {
    let form = "a Reformer ends with `linear(layer_norm(concat(x1, x2), eps = …), vocab_size)`";
    let Op::Linear { input: normed, bias } = &t.op else {
        it.error(t.span, form);
        return None;
    };
    if !bias {
        it.error(t.span, "HF's Reformer head (`lm_head.decoder`) has a bias: remove `bias = false`");
    }
    let Op::Norm { eps, input: joined } = &normed.op else {
        it.error(normed.span, form);
        return None;
    };
    match &joined.op {
        Op::Concat(a, b) if stream_of(a) == Some(1) && stream_of(b) == Some(2) => {
            Some(((*eps, normed.span), t.width))
        }
        _ => {
            it.error(joined.span, format!("{form}: the final norm reads both streams, first then second"));
            None
        }
    }
}

/// Rule: what the preset takes once (norm eps, activation, `d_ff`, heads, direction, each kind's
/// chunking and hashing) is the same in every layer and sublayer (and the final norm); the error
/// sits on the first that differs, with the first layer's.
fn same_across_layers<T: PartialEq + std::fmt::Display>(
    it: &mut Interp,
    what: &str,
    mut values: impl Iterator<Item = (T, Span)>,
) {
    let Some((first, first_at)) = values.next() else { return };
    if let Some((other, at)) = values.find(|(v, _)| *v != first) {
        it.error(
            at,
            format!("this {what} ({other}) differs from the first layer's ({first}): a Reformer's layers share one"),
        );
        it.error(first_at, format!("the first layer's {what} ({first}) is given here"));
    }
}

/// How messages name an activation.
fn activation_name(act: Activation) -> &'static str {
    match act {
        Activation::GeluErf => "`gelu`",
        Activation::GeluTanh => "`gelu_tanh`",
        _ => "`relu`",
    }
}

/// How messages name a direction.
fn direction(causal: bool) -> &'static str {
    if causal {
        "`causal`"
    } else {
        "bidirectional"
    }
}

/// How messages name an attention's chunking and hashing.
fn geometry(a: AttentionCall) -> String {
    let hashing = a.hashing.map(|(b, h)| format!(", buckets = {b}, hashes = {h}")).unwrap_or_default();
    format!(
        "chunk = {}, chunks_before = {}, chunks_after = {}{hashing}",
        a.chunk, a.chunks_before, a.chunks_after
    )
}

/// Rule: inputs are padded to a multiple of the chunk lengths' least common multiple, so the
/// position table (`shape[0] · shape[1]` rows) is such a multiple: each chunk length divides it
/// (then so does their least common multiple).
fn padding_stays_in_the_table(it: &mut Interp, max_positions: usize, calls: &[AttentionCall]) {
    for call in calls.iter().filter(|c| !max_positions.is_multiple_of(c.chunk)) {
        it.error(
            call.chunk_span,
            format!(
                "inputs are padded to a multiple of each chunk length, so a chunk divides the axial table's {max_positions} positions: {} does not (try one dividing {max_positions})",
                call.chunk
            ),
        );
    }
}
