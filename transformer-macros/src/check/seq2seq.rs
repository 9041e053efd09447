//! Encoder-decoder models: the `encoder: { … }` and `decoder: { … }` sections, what each stack
//! takes from the top level, and the rules that join the two stacks.
//!
//! A stack's keys are the top-level ones with its section's on top, so dims shared by both
//! stacks are written once and a section overrides only what differs.

use proc_macro2::Span;

use super::layouts::layout_conflict;
use super::{
    attention_kind, heads_divide_d_model, keys_known_and_unique, known_name, list, local, positive_size,
    Entries, MAX_HEADS, MAX_LAYERS, MAX_WIDTH,
};
use crate::ast::{Entry, Value};
use crate::ctxt::Ctxt;
use crate::spec::{
    Activation, Attention, CrossKind, NormKind, Placement, Positions, Seq2Seq, Stack, WeightScheme,
};

/// Keys a section may give.
const SECTION_KEYS: &[&str] = &[
    "layers",
    "d_model",
    "heads",
    "head_dim",
    "d_ff",
    "attention",
    "cross_attention",
    "cross_attention_kind",
    "attention_dim",
    "location_filters",
    "location_kernel",
    "window",
    "sparse",
];

/// The decoder-section keys that choose and shape the cross-attention kind.
const CROSS_KIND_KEYS: &[&str] =
    &["cross_attention_kind", "attention_dim", "location_filters", "location_kernel"];

/// Cross-attention kinds.
const CROSS_KINDS: &[&str] = &["multi_head", "additive", "location", "location_sensitive"];

/// Widest additive scoring MLP and most location filters.
const MAX_ATTENTION_DIM: usize = 1 << 14;
/// Widest location convolution.
const MAX_LOCATION_KERNEL: usize = 1 << 10;

/// What a decoder's cross-attention may name as its memory.
const MEMORIES: &[&str] = &["encoder"];

/// The two sections as written (a missing or malformed one is empty, its error reported).
pub(super) struct Sections<'a> {
    pub encoder: Entries<'a>,
    pub decoder: Entries<'a>,
    /// Whether `decoder: { … }` is missing (reported; the decoder is then not validated further).
    decoder_missing: bool,
    /// Where `decoder: { … }` was written: errors about a key it lacks point there.
    decoder_span: Span,
}

/// Rule: an encoder-decoder model has both sections, each a `{ key: value, … }` of stack keys
/// given once; `attention` and `cross_attention` are per stack, so never at the top level.
pub(super) fn sections<'a>(cx: &mut Ctxt, top: &Entries<'a>) -> Option<Sections<'a>> {
    if let Some(cross) = top.get("cross_attention") {
        cx.error(
            cross.key.span(),
            "`cross_attention` belongs to a decoder: write it inside `decoder: { … }` of an encoder-decoder model",
        );
    }
    let (encoder, decoder) = (top.get("encoder"), top.get("decoder"));
    if encoder.is_none() && decoder.is_none() {
        if let Some(start) = top.get("decoder_start") {
            cx.error(
                start.key.span(),
                "`decoder_start` belongs to encoder-decoder models (with `encoder: { … }` and `decoder: { … }`): \
                 remove it",
            );
        }
        return None;
    }
    let mut section = |name: &str, other: &str| -> Entries<'a> {
        let Some(entry) = top.get(name) else {
            let at = top[other].key.span();
            cx.error(
                at,
                format!("an encoder-decoder model declares both stacks: add `{name}: {{ layers: …, attention: … }}`"),
            );
            return Entries::new();
        };
        match &entry.value {
            Value::Section { entries, .. } => keys_known_and_unique(cx, entries, SECTION_KEYS),
            other => {
                cx.error(
                    other.span(),
                    format!(
                        "`{name}` expects a section such as `{{ layers: 6, attention: … }}`, found {}",
                        other.describe()
                    ),
                );
                Entries::new()
            }
        }
    };
    let sections = Sections {
        encoder: section("encoder", "decoder"),
        decoder: section("decoder", "encoder"),
        decoder_missing: decoder.is_none(),
        decoder_span: decoder.map_or_else(|| top["encoder"].key.span(), |d| d.value.span()),
    };
    if let Some(attention) = top.get("attention") {
        cx.error(
            attention.key.span(),
            "each stack of an encoder-decoder model gives its own `attention`: move it into \
             `encoder: { … }` (`bidirectional`) and `decoder: { … }` (`causal`)",
        );
    }
    Some(sections)
}

/// The top-level entries with a section's on top.
pub(super) fn merged<'a>(top: &Entries<'a>, section: &Entries<'a>) -> Entries<'a> {
    let mut out = top.clone();
    out.extend(section.iter().map(|(k, v)| (k.clone(), *v)));
    out
}

/// The encoder's validated values (absent where invalid, already reported).
pub(super) struct EncoderView<'a, 'e> {
    pub entries: &'e Entries<'a>,
    pub d_model: Option<usize>,
    pub heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub attention: Option<Attention>,
}

/// Validates the decoder's own keys and the rules joining it to the encoder.
pub(super) fn decoder(
    cx: &mut Ctxt,
    top: &Entries,
    sections: &Sections,
    encoder: &EncoderView,
    weights: Option<WeightScheme>,
    vocab: Option<usize>,
) -> Option<Seq2Seq> {
    encoder_attends_both_ways(cx, encoder);
    if let Some(cross) = sections.encoder.get("cross_attention") {
        cx.error(
            cross.key.span(),
            "the encoder has no memory to attend to: `cross_attention` belongs in `decoder: { … }`",
        );
    }
    cross_kind_keys_belong_to_the_decoder(cx, &sections.encoder);
    if sections.decoder_missing {
        return None;
    }
    let own = &sections.decoder;
    let entries = merged(top, own);
    let attention = decoder_is_causal(cx, own, sections.decoder_span);
    let memory = cross_attention_names_the_encoder(cx, own, sections.decoder_span);
    let cross = cross_attention_kind(cx, own, weights);

    // A decoder value: its section's (validated here), else the top level's (validated with the
    // encoder; re-read silently), else missing.
    let size = |cx: &mut Ctxt, key: &str, max: usize| match (own.get(key), top.get(key)) {
        (Some(e), _) => positive_size(cx, e, max),
        (None, Some(e)) => positive_size(&mut Ctxt::new(), e, max),
        (None, None) => None,
    };
    let d_model = size(cx, "d_model", MAX_WIDTH);
    let heads = size(cx, "heads", MAX_HEADS);
    let head_dim_given = size(cx, "head_dim", MAX_WIDTH);
    let layers = size(cx, "layers", MAX_LAYERS);
    let d_ff = size(cx, "d_ff", MAX_WIDTH * 16);
    // The decoder's own window (the encoder's is validated with the encoder's keys).
    let windows = match own.get("window") {
        Some(entry) => local::windows(cx, entry, layers),
        None => Some(Vec::new()),
    };
    let missing: Vec<&str> =
        ["d_model", "heads", "layers", "d_ff"].into_iter().filter(|k| !entries.contains_key(*k)).collect();
    if !missing.is_empty() {
        cx.error(
            sections.decoder_span,
            format!(
                "the decoder needs {}: give them in `decoder: {{ … }}`, or at the top level for both stacks",
                list(&missing)
            ),
        );
    }
    if let (Some(d), Some(h), None) = (d_model, heads, entries.get("head_dim")) {
        if own.contains_key("heads") || own.contains_key("d_model") {
            heads_divide_d_model(cx, d, h, entries["heads"]);
        }
    }
    let head_dim = head_dim_given.or(d_model.zip(heads).map(|(d, h)| d / h));
    if let (Some(enc), Some(dec)) = (encoder.d_model, d_model) {
        memory_width_matches(cx, enc, dec, encoder.entries, &entries);
    }
    if let Some(scheme @ (WeightScheme::T5 | WeightScheme::Torch)) = weights {
        one_head_layout(cx, scheme, encoder, (d_model, heads, head_dim), &entries);
    }
    let decoder_start = top.get("decoder_start").and_then(|e| token_id(cx, e, vocab));
    attention.filter(|a| *a == Attention::Causal)?;
    memory?;
    let cross = cross?;
    Some(Seq2Seq {
        decoder: Stack {
            d_model: d_model?,
            heads: heads?,
            head_dim: head_dim?,
            layers: layers?,
            d_ff: d_ff?,
        },
        decoder_start: decoder_start?,
        cross,
        decoder_windows: windows?,
    })
}

/// Rule: only a decoder has a cross-attention, so the keys choosing its kind go in
/// `decoder: { … }`.
fn cross_kind_keys_belong_to_the_decoder(cx: &mut Ctxt, encoder: &Entries) {
    for key in CROSS_KIND_KEYS {
        if let Some(entry) = encoder.get(*key) {
            cx.error(
                entry.key.span(),
                format!("the encoder has no cross-attention: `{key}` belongs in `decoder: {{ … }}`"),
            );
        }
    }
}

/// Rule: `cross_attention_kind` names a kind (`multi_head` when absent), and each kind is given
/// exactly the keys that shape it: `attention_dim` for `additive` and `location_sensitive`,
/// `location_filters` and an odd `location_kernel` for `location_sensitive`; the non-multi-head
/// kinds load `weights: torch` checkpoints.
fn cross_attention_kind(cx: &mut Ctxt, own: &Entries, weights: Option<WeightScheme>) -> Option<CrossKind> {
    let kind_entry = own.get("cross_attention_kind").copied();
    let name = match kind_entry {
        Some(entry) => known_name(cx, entry, CROSS_KINDS)?,
        None => "multi_head",
    };
    let wants: &[&str] = match name {
        "additive" => &["attention_dim"],
        "location_sensitive" => &["attention_dim", "location_filters", "location_kernel"],
        _ => &[],
    };
    let mut ok = kind_keys_fit(cx, own, name, kind_entry, wants);
    if let (Some(entry), Some(scheme)) = (kind_entry, weights) {
        ok &= additive_kinds_load_torch(cx, entry, name, scheme);
    }
    let size = |cx: &mut Ctxt, key: &str, max: usize| own.get(key).and_then(|e| positive_size(cx, e, max));
    let attention_dim = size(cx, "attention_dim", MAX_ATTENTION_DIM);
    let filters = size(cx, "location_filters", MAX_ATTENTION_DIM);
    let kernel = size(cx, "location_kernel", MAX_LOCATION_KERNEL);
    if let (Some(k), Some(entry)) = (kernel, own.get("location_kernel")) {
        ok &= location_kernel_is_odd(cx, k, entry);
    }
    if !ok {
        return None;
    }
    Some(match name {
        "additive" => CrossKind::Additive { attention_dim: attention_dim? },
        "location" => CrossKind::Location,
        "location_sensitive" => {
            CrossKind::LocationSensitive { attention_dim: attention_dim?, filters: filters?, kernel: kernel? }
        }
        _ => CrossKind::MultiHead,
    })
}

/// Rule: a cross-attention kind takes the keys that shape it (`wants`) and no others of
/// [`CROSS_KIND_KEYS`]. A missing key is reported at the kind; a key of another kind at itself.
fn kind_keys_fit(
    cx: &mut Ctxt,
    own: &Entries,
    kind: &str,
    kind_entry: Option<&Entry>,
    wants: &[&str],
) -> bool {
    let mut ok = true;
    let missing: Vec<&str> = wants.iter().copied().filter(|k| !own.contains_key(*k)).collect();
    if let (false, Some(entry)) = (missing.is_empty(), kind_entry) {
        let what = if kind == "additive" {
            "`attention_dim` is the width of the scoring MLP `energyᵀ tanh(W_q s + W_k h + b)`"
        } else {
            "`attention_dim` is the scoring MLP's width, `location_filters` the number of convolution \
             filters over the previous and cumulative alignments, `location_kernel` their (odd) width"
        };
        cx.error(
            entry.value.span(),
            format!(
                "`cross_attention_kind: {kind}` needs {} in the decoder's section: {what}",
                list(&missing)
            ),
        );
        ok = false;
    }
    for key in CROSS_KIND_KEYS[1..].iter().filter(|k| !wants.contains(k)) {
        if let Some(entry) = own.get(*key) {
            let owners = if *key == "attention_dim" {
                "`cross_attention_kind: additive` or `location_sensitive`"
            } else {
                "`cross_attention_kind: location_sensitive`"
            };
            let kind = if kind_entry.is_some() {
                format!("`{kind}` cross-attention")
            } else {
                "the default `multi_head` cross-attention".to_string()
            };
            cx.error(
                entry.key.span(),
                format!("`{key}` shapes {owners}; {kind} has no such part: remove it"),
            );
            ok = false;
        }
    }
    ok
}

/// Rule: the location convolution is centred on each source position, so its width is odd.
fn location_kernel_is_odd(cx: &mut Ctxt, kernel: usize, entry: &Entry) -> bool {
    if kernel % 2 == 1 {
        return true;
    }
    cx.error(
        entry.value.span(),
        format!(
            "`location_kernel` must be odd: the convolution is centred on each source position with \
             (kernel - 1) / 2 zeros each side; use {} or {}",
            kernel - 1,
            kernel + 1
        ),
    );
    false
}

/// Rule: additive and location cross-attention load `weights: torch` checkpoints (an
/// `nn.Transformer` whose decoder layers hold `cross_attn` and `cross_out` in place of
/// `multihead_attn`); T5 and BART have no such layers.
fn additive_kinds_load_torch(cx: &mut Ctxt, entry: &Entry, kind: &str, scheme: WeightScheme) -> bool {
    if kind == "multi_head" || scheme == WeightScheme::Torch {
        return true;
    }
    let name = if scheme == WeightScheme::T5 { "t5" } else { "bart" };
    cx.error(
        entry.value.span(),
        format!(
            "`{kind}` cross-attention is loaded from `weights: torch` checkpoints (`cross_attn` and `cross_out` \
             in each decoder layer); `weights: {name}` checkpoints have multi-head cross-attention only"
        ),
    );
    false
}

/// Rule: the encoder sees the whole source: `attention: bidirectional`.
fn encoder_attends_both_ways(cx: &mut Ctxt, encoder: &EncoderView) {
    if encoder.attention == Some(Attention::Causal) {
        cx.error(
            encoder.entries["attention"].value.span(),
            "an encoder attends to the whole source: use `attention: bidirectional` (the decoder is the causal stack)",
        );
    }
}

/// Rule: the decoder generates, so its self-attention is `causal`.
fn decoder_is_causal(cx: &mut Ctxt, own: &Entries, decoder_span: Span) -> Option<Attention> {
    let Some(entry) = own.get("attention") else {
        cx.error(decoder_span, "the decoder needs `attention: causal` in its section");
        return None;
    };
    let attention = attention_kind(cx, entry)?;
    if attention != Attention::Causal {
        cx.error(entry.value.span(), "a decoder generates one token after another: use `attention: causal`");
    }
    Some(attention)
}

/// Rule: the decoder's cross-attention names its memory, the encoder.
fn cross_attention_names_the_encoder(cx: &mut Ctxt, own: &Entries, decoder_span: Span) -> Option<()> {
    let Some(entry) = own.get("cross_attention") else {
        cx.error(
            decoder_span,
            "the decoder attends to the encoder's output: add `cross_attention: encoder` to its section",
        );
        return None;
    };
    known_name(cx, entry, MEMORIES).map(|_| ())
}

/// Rule: cross-attention projects the encoder's rows with `[d_model, d_model]` key/value weights
/// in every supported checkpoint format, so both stacks have the same `d_model`.
fn memory_width_matches(cx: &mut Ctxt, encoder: usize, decoder: usize, enc: &Entries, dec: &Entries) {
    if encoder == decoder {
        return;
    }
    cx.error(
        dec["d_model"].value.span(),
        format!(
            "the decoder's cross-attention reads the encoder's output, [S, {encoder}], but this decoder is \
             [S, {decoder}]: its key/value projections are [d_model, d_model], so use `d_model: {encoder}` \
             in both stacks"
        ),
    );
    cx.error(enc["d_model"].value.span(), format!("the encoder's output width, {encoder}, is set here"));
}

/// Rule: T5 and `torch.nn.Transformer` configs have one head count and head width for both stacks.
fn one_head_layout(
    cx: &mut Ctxt,
    scheme: WeightScheme,
    encoder: &EncoderView,
    (d_model, heads, head_dim): (Option<usize>, Option<usize>, Option<usize>),
    dec: &Entries,
) {
    let name = if scheme == WeightScheme::T5 { "t5" } else { "torch" };
    // Head widths are compared only when nothing else differs: a different head count or model
    // width already explains a different derived head width.
    let same_shape = encoder.heads == heads && encoder.d_model == d_model;
    let head_dims = if same_shape { (encoder.head_dim, head_dim) } else { (None, None) };
    let pairs = [("heads", encoder.heads, heads), ("head_dim", head_dims.0, head_dims.1)];
    for (key, enc, decv) in pairs {
        if let (Some(e), Some(d)) = (enc, decv) {
            if e != d {
                // Point at where each stack's value was written (head_dim may be derived).
                let at = |entries: &Entries| {
                    entries.get(key).or_else(|| entries.get("heads")).map(|e| e.value.span())
                };
                if let Some(span) = at(dec) {
                    cx.error(
                        span,
                        format!(
                            "`weights: {name}` checkpoints give both stacks one `{key}`: the decoder has {d}, \
                             the encoder {e}"
                        ),
                    );
                }
                if let Some(span) = at(encoder.entries) {
                    cx.error(span, format!("the encoder's `{key}`, {e}, comes from here"));
                }
            }
        }
    }
}

/// Rule: `decoder_start` is a token id of the vocabulary.
fn token_id(cx: &mut Ctxt, entry: &Entry, vocab: Option<usize>) -> Option<u32> {
    let parsed = match &entry.value {
        Value::Int(lit) => lit.base10_parse::<u32>().ok(),
        _ => None,
    };
    match (parsed, vocab) {
        (Some(id), Some(v)) if (id as usize) < v => Some(id),
        (Some(id), Some(v)) => {
            cx.error(
                entry.value.span(),
                format!("`decoder_start` {id} is not a token id: the vocabulary has ids 0..{v}"),
            );
            None
        }
        (Some(id), None) => Some(id),
        (None, _) => {
            cx.error(
                entry.value.span(),
                format!(
                    "`decoder_start` expects a token id such as `0` (the checkpoint's `decoder_start_token_id`), found {}",
                    entry.value.describe()
                ),
            );
            None
        }
    }
}

/// Rule: encoder-decoder checkpoint formats (`t5`, `bart`, `torch`) go with the two sections,
/// the single-stack formats without them; `t5` alone is T5's encoder (`T5EncoderModel`).
pub(super) fn scheme_fits_the_family(
    cx: &mut Ctxt,
    top: &Entries,
    weights: Option<WeightScheme>,
    seq2seq: bool,
) {
    let Some(scheme) = weights else { return };
    let two_stacks = matches!(scheme, WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch);
    let at = top["weights"].value.span();
    if two_stacks && !seq2seq && scheme != WeightScheme::T5 {
        cx.error(
            at,
            "this checkpoint format is an encoder-decoder model: declare `encoder: { layers: …, attention: \
             bidirectional }` and `decoder: { layers: …, attention: causal, cross_attention: encoder }`",
        );
    }
    if !two_stacks && seq2seq {
        let section = top.get("encoder").or_else(|| top.get("decoder")).map_or(at, |e| e.key.span());
        cx.error(
            section,
            "encoder-decoder models load `weights: t5`, `weights: bart` or `weights: torch`; this checkpoint \
             format has one stack",
        );
        cx.error(at, "single-stack format chosen here");
    }
}

/// The layout choices a checkpoint format constrains.
pub(super) struct Choices {
    pub placement: Option<Placement>,
    pub norm: Option<NormKind>,
    pub positions: Option<Positions>,
    pub activation: Option<Activation>,
    pub scale_embeddings: Option<bool>,
}

/// Rule: each encoder-decoder format fixes its norms, positions, feed-forward and head:
/// T5 is pre-norm RMS with relative buckets and no embedding scale; BART post-norm LayerNorm with
/// learned positions and a tied head; `torch.nn.Transformer` (as in the paper) post-norm with
/// sinusoidal positions, embeddings scaled by `sqrt(d_model)` and an untied `generator`. Any of
/// them may bias self-attention scores instead (`alibi`, or T5's `relative` buckets with the table
/// in each stack's first layer); none rotates queries and keys.
pub(super) fn layout(cx: &mut Ctxt, entries: &Entries, scheme: WeightScheme, c: &Choices) {
    let (name, pre, norm, positions) = match scheme {
        WeightScheme::T5 => ("t5", true, NormKind::RmsNorm, "relative"),
        WeightScheme::Bart => ("bart", false, NormKind::LayerNorm, "learned"),
        _ => ("torch", false, NormKind::LayerNorm, "sinusoidal"),
    };
    let conflict = |cx: &mut Ctxt, key: &str, message: String| layout_conflict(cx, entries, key, &message);
    if c.placement.is_some_and(|p| (p == Placement::Pre) != pre) {
        let want = if pre { "pre" } else { "post" };
        conflict(
            cx,
            "norm_placement",
            format!("`weights: {name}` checkpoints are {want}-norm: use `norm_placement: {want}`"),
        );
    }
    if c.norm.is_some_and(|n| n != norm) {
        let want = if norm == NormKind::RmsNorm { "rms_norm" } else { "layer_norm" };
        conflict(cx, "norm", format!("`weights: {name}` checkpoints use `norm: {want}`"));
    }
    let positions_fit = match c.positions {
        None | Some(Positions::Relative { .. } | Positions::Alibi) => true,
        Some(Positions::Learned) => positions == "learned",
        Some(Positions::Sinusoidal) => positions == "sinusoidal",
        // A key value never parses to axial positions (only a Reformer has them).
        Some(Positions::Rope { .. } | Positions::Axial { .. }) => false,
    };
    if !positions_fit {
        let or = if positions == "relative" { "`alibi`" } else { "a score bias: `alibi`, `relative`" };
        conflict(
            cx,
            "positions",
            format!("`weights: {name}` checkpoints use `positions: {positions}` (or {or})"),
        );
    }
    let activation_fits = match (scheme, c.activation) {
        (_, None) => true,
        (WeightScheme::T5, Some(a)) => a != Activation::SwiGlu,
        (WeightScheme::Torch, Some(a)) => matches!(a, Activation::Relu | Activation::GeluErf),
        (_, Some(a)) => !a.is_gated(),
    };
    if !activation_fits {
        let want = match scheme {
            WeightScheme::T5 => "`relu` (`DenseReluDense`) or `geglu_tanh` (v1.1's gated-gelu)",
            WeightScheme::Torch => "`relu` or `gelu_erf` (`nn.Transformer`'s two activations)",
            _ => "an ungated activation such as `gelu_erf`",
        };
        conflict(cx, "activation", format!("`weights: {name}` feed-forwards take {want}"));
    }
    let head = entries.get("lm_head").map(|e| matches!(&e.value, Value::Name(n) if n == "tied"));
    match (scheme, head) {
        (WeightScheme::Bart, Some(false)) => conflict(
            cx,
            "lm_head",
            "`weights: bart` heads are tied to `model.shared`: use `lm_head: tied`".into(),
        ),
        (WeightScheme::Torch, Some(true)) => conflict(
            cx,
            "lm_head",
            "`weights: torch` models end in their own `generator` linear: use `lm_head: untied`".into(),
        ),
        _ => {}
    }
    match (scheme, c.scale_embeddings) {
        (WeightScheme::T5, Some(true)) => conflict(
            cx,
            "embedding_scale",
            "`weights: t5` embeddings are not scaled: use `embedding_scale: none` or leave it out".into(),
        ),
        (WeightScheme::Torch, Some(false)) => conflict(
            cx,
            "embedding_scale",
            "`weights: torch` models scale embeddings as the paper does: use `embedding_scale: sqrt_d_model`"
                .into(),
        ),
        (WeightScheme::Torch, None) if !entries.contains_key("embedding_scale") => cx.error(
            entries["weights"].value.span(),
            "`weights: torch` models scale embeddings by sqrt(d_model) as the paper does: add \
             `embedding_scale: sqrt_d_model`",
        ),
        _ => {}
    }
}
