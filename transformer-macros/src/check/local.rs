//! Rules of the attention layouts that limit which keys a query sees: local windows (`window`,
//! one size or one per layer) and block-sparse layouts (`sparse: { … }`).

use super::{keys_known_and_unique, known_name, list, positive_size, Entries, MAX_POSITIONS};
use proc_macro2::Span;

use crate::ast::{Entry, Value};
use crate::ctxt::Ctxt;
use crate::spec::{Attention, Sparse, SparsePattern};

/// The attention kernel's key tile: a block-sparse block is a whole number of them.
const KEY_TILE: usize = 64;
const SPARSE_KEYS: &[&str] = &["pattern", "block", "stride", "summary"];
const PATTERNS: &[&str] = &["strided", "fixed"];

/// `window: 8` (every layer) or `window: [8, global, …]` (one per layer).
pub fn windows(cx: &mut Ctxt, entry: &Entry, layers: Option<usize>) -> Option<Vec<Option<usize>>> {
    match &entry.value {
        Value::List { items, span } => {
            let windows: Vec<_> = items.iter().map(|item| layer_window(cx, item)).collect();
            if let Some(layers) = layers.filter(|&n| n != items.len()) {
                cx.error(
                    *span,
                    format!(
                        "`window` lists one entry per layer: found {} for `layers: {layers}`",
                        items.len()
                    ),
                );
                return None;
            }
            windows.into_iter().collect()
        }
        Value::Int(_) | Value::NegInt { .. } | Value::Float { .. } => {
            let w = positive_size(cx, entry, MAX_POSITIONS)?;
            Some(vec![Some(w); layers?])
        }
        other => {
            cx.error(
                other.span(),
                format!(
                    "`window` expects a number of keys such as `8`, or one entry per layer such as \
                     `[8, global, 8, global]`, found {}",
                    other.describe()
                ),
            );
            None
        }
    }
}

/// One entry of a per-layer window list: a positive number of keys, or `global`.
fn layer_window(cx: &mut Ctxt, item: &Value) -> Option<Option<usize>> {
    match item {
        Value::Name(name) if name == "global" => Some(None),
        Value::Int(lit) => match lit.base10_parse::<usize>() {
            Ok(w) if (1..=MAX_POSITIONS).contains(&w) => Some(Some(w)),
            _ => {
                cx.error(
                    lit.span(),
                    format!("a window is a number of keys from 1 to {MAX_POSITIONS}, found `{lit}`"),
                );
                None
            }
        },
        other => {
            cx.error(
                other.span(),
                format!(
                    "each layer's window is a number of keys such as `8`, or `global`; found {}",
                    other.describe()
                ),
            );
            None
        }
    }
}

/// Rule: a bidirectional window is centred on the query (`w / 2` keys on either side, Longformer's
/// `attention_window`), so each one is even. Reported under each written window: the one number,
/// or each odd entry of a per-layer list.
pub fn centred_windows_even(cx: &mut Ctxt, entry: &Entry, attention: Attention) {
    if attention != Attention::Bidirectional {
        return;
    }
    let written = match &entry.value {
        Value::List { items, .. } => items.iter().collect(),
        single => vec![single],
    };
    for value in written {
        let Value::Int(lit) = value else { continue };
        if let Ok(w) = lit.base10_parse::<usize>() {
            centred_window_even(cx, w, lit.span());
        }
    }
}

/// [`centred_windows_even`] for one window `w` written at `span` (a preset's entry, a composed
/// attention's `window = …`).
pub fn centred_window_even(cx: &mut Ctxt, w: usize, span: Span) {
    if w % 2 == 1 {
        cx.error(
            span,
            format!(
                "a `bidirectional` window is centred on the query (`w / 2` keys on either side, \
                 as Longformer's `attention_window`), so it must be even: {w} is odd (try {} or {})",
                w - 1,
                w + 1
            ),
        );
    }
}

/// `sparse: { … }` (every layer) or `sparse: [{ … }, dense, …]` (one entry per layer, `dense`
/// for a layer without a layout, as GPT-3's alternating layers).
pub fn sparse_layers(cx: &mut Ctxt, entry: &Entry, layers: Option<usize>) -> Option<Vec<Option<Sparse>>> {
    match &entry.value {
        Value::List { items, span } => {
            let layouts: Vec<_> = items.iter().map(|item| layer_sparse(cx, item)).collect();
            if let Some(layers) = layers.filter(|&n| n != items.len()) {
                sparse_list_length(cx, items.len(), layers, *span);
                return None;
            }
            layouts.into_iter().collect()
        }
        Value::Section { entries, span } => {
            let layout = sparse(cx, entries, *span)?;
            Some(vec![Some(layout); layers?])
        }
        other => {
            cx.error(
                other.span(),
                format!(
                    "`sparse` expects a layout such as `{{ pattern: strided, block: 64, stride: 4 }}`, or one \
                     entry per layer such as `[{{ pattern: strided, block: 64, stride: 4 }}, dense]`, found {}",
                    other.describe()
                ),
            );
            None
        }
    }
}

/// Rule: a per-layer `sparse` list has one entry per layer. `span` is the list.
fn sparse_list_length(cx: &mut Ctxt, found: usize, layers: usize, span: Span) {
    cx.error(
        span,
        format!(
            "`sparse` lists one entry per layer (a layout `{{ … }}` or `dense`): found {found} for `layers: {layers}`"
        ),
    );
}

/// Rule: each entry of a per-layer `sparse` list is a layout `{ … }` or `dense` (the layer
/// attends to every key its `attention` and `window` allow).
fn layer_sparse(cx: &mut Ctxt, item: &Value) -> Option<Option<Sparse>> {
    match item {
        Value::Name(name) if name == "dense" => Some(None),
        Value::Section { entries, span } => sparse(cx, entries, *span).map(Some),
        other => {
            cx.error(
                other.span(),
                format!(
                    "each layer's `sparse` entry is a layout such as `{{ pattern: strided, block: 64, stride: 4 }}`, \
                     or `dense`; found {}",
                    other.describe()
                ),
            );
            None
        }
    }
}

/// One layout `{ pattern: strided | fixed, block: 64, stride: 4[, summary: 1] }` written at `span`.
fn sparse(cx: &mut Ctxt, entries: &[Entry], span: Span) -> Option<Sparse> {
    let span = &span;
    let keys = keys_known_and_unique(cx, entries, SPARSE_KEYS);
    for key in ["pattern", "block", "stride"] {
        if !keys.contains_key(key) {
            cx.error(*span, format!("the `sparse` layout needs `{key}` ({})", about(key)));
        }
    }
    let pattern = keys.get("pattern").and_then(|e| known_name(cx, e, PATTERNS));
    let block = keys.get("block").and_then(|e| positive_size(cx, e, MAX_POSITIONS));
    let stride = keys.get("stride").and_then(|e| positive_size(cx, e, MAX_POSITIONS));
    let summary = keys.get("summary").and_then(|e| positive_size(cx, e, MAX_POSITIONS));
    if let (Some(b), Some(entry)) = (block, keys.get("block")) {
        block_whole_tiles(cx, b, entry.value.span());
    }
    if let (Some(s), Some(entry)) = (stride, keys.get("stride")) {
        stride_not_dense(cx, s, entry.value.span());
    }
    match (pattern, keys.get("summary")) {
        (Some("strided"), Some(e)) => {
            cx.error(e.key.span(), "`summary` belongs to `pattern: fixed`: remove it");
        }
        (Some("fixed"), None) => cx.error(
            keys["pattern"].value.span(),
            format!("`pattern: fixed` needs `summary`: {}", about("summary")),
        ),
        (Some("fixed"), Some(e)) => {
            if let (Some(c), Some(l)) = (summary, stride.filter(|&l| l >= 2)) {
                summary_below_stride(cx, c, l, e.value.span());
            }
        }
        _ => {}
    }
    let pattern = match pattern? {
        "fixed" => SparsePattern::Fixed { summary: summary? },
        _ => SparsePattern::Strided,
    };
    Some(Sparse { pattern, block: block?, stride: stride? })
}

fn about(key: &str) -> &'static str {
    match key {
        "pattern" => "`strided` or `fixed`, the Sparse Transformer's two layouts",
        "block" => "positions per block, a multiple of 64",
        "stride" => "blocks per band (strided) or per group (fixed)",
        _ => "how many blocks at the end of each group every later query sees, the paper's `c`",
    }
}

/// Rule: a stride of 2 or more (with 1 every block is visible: dense attention). `span` is the
/// written stride.
pub fn stride_not_dense(cx: &mut Ctxt, stride: usize, span: Span) {
    if stride < 2 {
        cx.error(span, "a stride of 1 makes every block visible: leave `sparse` out for dense attention, or use a stride of 2 or more");
    }
}

/// Rule: the fixed pattern's `summary` blocks per group are fewer than the group's `stride`
/// blocks (otherwise every block is visible). `span` is the written summary.
pub fn summary_below_stride(cx: &mut Ctxt, summary: usize, stride: usize, span: Span) {
    if summary >= stride {
        cx.error(
            span,
            format!(
                "`summary` must be below `stride` ({stride}): with {summary} summary blocks per group of {stride} \
                 every block is visible and attention is dense"
            ),
        );
    }
}

/// Rule: a block is a whole number of the kernel's 64-key tiles, so no tile straddles two blocks.
/// `span` is the written block size.
pub fn block_whole_tiles(cx: &mut Ctxt, block: usize, span: Span) {
    if !block.is_multiple_of(KEY_TILE) {
        let below = block / KEY_TILE * KEY_TILE;
        let suggestion =
            if below == 0 { format!("{KEY_TILE}") } else { format!("{below} or {}", below + KEY_TILE) };
        cx.error(
            span,
            format!(
                "a sparse block is a whole number of the attention kernel's {KEY_TILE}-key tiles (so a \
                 tile never straddles two blocks): {block} is not; try {suggestion}"
            ),
        );
    }
}

/// Rule: an encoder-decoder gives each stack its own `window` (in its section: the encoder's
/// centred, the decoder's causal); block-sparse layouts are implemented for single-stack models
/// in this version.
pub fn windows_per_stack(cx: &mut Ctxt, top: &Entries, sections: [&Entries; 2]) {
    if let Some(e) = top.get("window") {
        cx.error(
            e.key.span(),
            "each stack of an encoder-decoder model gives its own `window`: move it into `encoder: { … }` \
             (centred on each query) and/or `decoder: { … }` (ending at each query)",
        );
    }
    for entries in [top].into_iter().chain(sections) {
        if let Some(e) = entries.get("sparse") {
            cx.error(
                e.key.span(),
                "`sparse` is implemented for encoder-only and decoder-only models in this version; \
                 an encoder-decoder model's stacks attend globally or through a `window`: remove it",
            );
        }
    }
}

/// Attention kinds that are written as keys: `attention` says only which direction.
pub fn attention_hint(word: &str) -> Option<String> {
    let hint = match word {
        "windowed" | "local" | "sliding" => "a local window is its own key: keep `attention: causal` (or `bidirectional`) and add `window: 8`, or one per layer such as `window: [8, global]`",
        "sparse" | "block_sparse" => "a block-sparse layout is its own key: keep `attention: causal` (or `bidirectional`) and add `sparse: { pattern: strided, block: 64, stride: 4 }`",
        "lsh" | "reformer" => "LSH attention is a layer kind of the Reformer preset: declare `weights: reformer`, list each layer's kind in `attn_layers: [lsh, local, …]` and give an `lsh: { … }` section",
        "grouped_query" | "multi_query" => "grouped-query attention is `kv_heads`: keep `attention: causal` and add `kv_heads: 2` (1 for multi-query)",
        _ => return None,
    };
    Some(format!(
        "`attention` says only whether a query sees later keys ({}); {hint}",
        list(&["bidirectional", "causal"])
    ))
}
