//! Validation: one pass over every key, one named function per rule, every error collected.
//! [`validate`] runs the rule groups in order: keys, sizes, named choices (with [`positions`]),
//! images ([`image`]), the attention's direction, the decoder of an encoder-decoder
//! ([`seq2seq`]), then the checkpoint format's own rules ([`layouts`]).

mod image;
mod layouts;
pub mod local;
mod positions;
pub mod reformer;
mod seq2seq;

use std::collections::HashMap;

use syn::Ident;

use crate::ast::{Entry, ModelInput, Value};
use crate::ctxt::Ctxt;
use crate::spec::{
    Activation, Attention, Classifier, LmHead, Norm, NormKind, Placement, Pooling, Positions, Seq2Seq,
    Sparse, Spec, WeightScheme,
};
use crate::suggest::closest;
pub use image::patch_divides_image;
use image::{images, images_attend_both_ways, Images};

/// Every key the grammar knows, in the order `docs/keys.md` documents them.
const KEYS: &[&str] = &[
    "vocab_size",
    "max_positions",
    "type_vocab_size",
    "d_model",
    "heads",
    "head_dim",
    "kv_heads",
    "layers",
    "d_ff",
    "activation",
    "norm",
    "norm_eps",
    "norm_placement",
    "positions",
    "rope_theta",
    "rotary_dims",
    "relative_buckets",
    "relative_max_distance",
    "attention",
    "window",
    "sparse",
    "weights",
    "lm_head",
    "embedding_scale",
    "residual",
    "encoder",
    "decoder",
    "decoder_start",
    "cross_attention",
    "image_size",
    "patch_size",
    "channels",
    "labels",
    "pooling",
];

/// Keys only text models take, and keys only image models take.
const TEXT_KEYS: &[&str] = &["vocab_size", "type_vocab_size", "lm_head"];
const IMAGE_KEYS: &[&str] = &["image_size", "patch_size", "channels", "labels", "pooling"];

/// Keys that may be left out.
/// Keys that may be left out (`lm_head` is required of decoders by its own rule; an image model
/// may state `max_positions`, which must then equal its patch count, or leave it out).
const OPTIONAL: &[&str] = &[
    "type_vocab_size",
    "lm_head",
    "kv_heads",
    "window",
    "sparse",
    "rope_theta",
    "rotary_dims",
    "residual",
    "head_dim",
    "relative_buckets",
    "relative_max_distance",
    "embedding_scale",
];
/// Keys of encoder-decoder models only (required there).
const SEQ2SEQ_KEYS: &[&str] = &["encoder", "decoder", "decoder_start"];

const ACTIVATIONS: &[&str] = &["gelu_erf", "gelu_tanh", "relu", "swiglu", "geglu_tanh", "geglu_erf"];
const NORMS: &[&str] = &["layer_norm", "rms_norm"];
const PLACEMENTS: &[&str] = &["pre", "post"];
const POSITIONS: &[&str] = &["learned", "sinusoidal", "rope", "relative", "alibi"];
const ATTENTIONS: &[&str] = &["bidirectional", "causal"];
/// Weight schemes. A `weights: reformer` model is validated by [`reformer::validate`] and never
/// reaches this list's users; it is listed so that a misspelling suggests it.
const SCHEMES: &[&str] =
    &["bert", "gpt2", "vit", "llama", "bloom", "neox", "t5", "bart", "torch", "reformer"];
const RESIDUALS: &[&str] = &["sequential", "parallel"];
const EMBEDDING_SCALES: &[&str] = &["sqrt_d_model", "none"];
const POOLINGS: &[&str] = &["cls", "mean"];
const LM_HEADS: &[&str] = &["tied", "untied"];

/// Upper bounds that catch typos (an extra zero) long before the allocator would.
const MAX_VOCAB: usize = 10_000_000;
const MAX_POSITIONS: usize = 1 << 20;
const MAX_WIDTH: usize = 1 << 16;
const MAX_HEADS: usize = 1024;
const MAX_LAYERS: usize = 1024;
const MAX_TYPE_VOCAB: usize = 1 << 16;
const MAX_IMAGE: usize = 1 << 14;
const MAX_CHANNELS: usize = 64;
const MAX_LABELS: usize = 1 << 20;
const MAX_BUCKETS: usize = 1 << 12;

/// Checks the whole input; returns the spec or every error found.
///
/// The phases run in a fixed order, and each reports its errors in the order it checks its keys:
/// that order is the order of the errors a user sees.
pub fn validate(input: &ModelInput) -> Result<Spec, syn::Error> {
    let mut cx = Ctxt::new();
    let top = keys_known_and_unique(&mut cx, &input.entries, KEYS);
    let sections = seq2seq::sections(&mut cx, &top);
    // An encoder-decoder model is validated as its encoder (the top-level keys with the encoder
    // section's on top), then the decoder's own keys and the rules joining the two.
    let entries = match &sections {
        Some(sections) => seq2seq::merged(&top, &sections.encoder),
        None => top.clone(),
    };
    let is_image = IMAGE_KEYS.iter().any(|k| entries.contains_key(*k));
    keys_present(&mut cx, input, &entries, is_image, sections.is_some());
    keys_fit_the_input(&mut cx, &entries, is_image);

    let sizes = sizes(&mut cx, &top, &entries, sections.as_ref());
    let choices = choices(&mut cx, &entries, &sizes);
    let images = images(&mut cx, &entries, &sizes, choices.pooling);
    rms_norm_is_pre_norm(&mut cx, &entries, &choices);
    direction_rules(&mut cx, &entries, &sizes, &choices, sections.is_some());
    let decoder = sections.as_ref().and_then(|sections| {
        let encoder = seq2seq::EncoderView {
            entries: &entries,
            d_model: sizes.d_model,
            heads: sizes.heads,
            head_dim: sizes.head_dim,
            attention: choices.attention,
        };
        seq2seq::decoder(&mut cx, &top, sections, &encoder, choices.weights, sizes.vocab_size)
    });
    seq2seq::scheme_fits_the_family(&mut cx, &top, choices.weights, sections.is_some());
    layouts::scheme_layout(&mut cx, &entries, &choices, &sizes, is_image, sections.is_some());
    images_attend_both_ways(&mut cx, &entries, is_image, choices.attention);

    cx.check()?;
    spec(input, &entries, is_image, sizes, choices, images, decoder, sections.is_some())
}

/// The size keys, validated, with the rules between them.
struct Sizes {
    vocab_size: Option<usize>,
    max_positions: Option<usize>,
    type_vocab_size: Option<usize>,
    d_model: Option<usize>,
    heads: Option<usize>,
    /// `head_dim` as written; `head_dim` is it or else `d_model / heads`.
    head_dim_given: Option<usize>,
    head_dim: Option<usize>,
    kv_heads: Option<usize>,
    layers: Option<usize>,
    d_ff: Option<usize>,
    windows: Option<Vec<Option<usize>>>,
    sparse: Option<Vec<Option<Sparse>>>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    channels: Option<usize>,
    labels: Option<usize>,
}

/// Every size (`None` where absent or invalid, reported), the layers' windows and sparse
/// layouts, and the rules between sizes: heads split `d_model`, key/value heads group the heads.
fn sizes(cx: &mut Ctxt, top: &Entries, entries: &Entries, sections: Option<&seq2seq::Sections>) -> Sizes {
    let size = |cx: &mut Ctxt, key: &str, max: usize| given_size(cx, entries, key, max);
    let vocab_size = size(cx, "vocab_size", MAX_VOCAB);
    let max_positions = size(cx, "max_positions", MAX_POSITIONS);
    let type_vocab_size = size(cx, "type_vocab_size", MAX_TYPE_VOCAB);
    let d_model = size(cx, "d_model", MAX_WIDTH);
    let heads = size(cx, "heads", MAX_HEADS);
    let head_dim_given = size(cx, "head_dim", MAX_WIDTH);
    let kv_heads = size(cx, "kv_heads", MAX_HEADS);
    let layers = size(cx, "layers", MAX_LAYERS);
    let d_ff = size(cx, "d_ff", MAX_WIDTH * 16);
    let windows = entries.get("window").and_then(|e| local::windows(cx, e, layers));
    let sparse = entries.get("sparse").and_then(|e| local::sparse_layers(cx, e, layers));
    if let Some(sections) = sections {
        local::windows_per_stack(cx, top, [&sections.encoder, &sections.decoder]);
    }
    let image_size = size(cx, "image_size", MAX_IMAGE);
    let patch_size = size(cx, "patch_size", MAX_IMAGE);
    let channels = size(cx, "channels", MAX_CHANNELS);
    let labels = size(cx, "labels", MAX_LABELS);
    if let (Some(d), Some(h), None) = (d_model, heads, entries.get("head_dim")) {
        heads_divide_d_model(cx, d, h, entries["heads"]);
    }
    let head_dim = head_dim_given.or(d_model.zip(heads).map(|(d, h)| d / h));
    if let (Some(h), Some(kv)) = (heads, kv_heads) {
        kv_heads_divide_heads(cx, h, kv, entries["kv_heads"]);
    }
    Sizes {
        vocab_size,
        max_positions,
        type_vocab_size,
        d_model,
        heads,
        head_dim_given,
        head_dim,
        kv_heads,
        layers,
        d_ff,
        windows,
        sparse,
        image_size,
        patch_size,
        channels,
        labels,
    }
}

/// The named choices (and `norm_eps`), validated: `None` where absent or invalid (reported).
struct Choices {
    activation: Option<Activation>,
    norm_kind: Option<NormKind>,
    norm_eps: Option<f64>,
    placement: Option<Placement>,
    positions: Option<Positions>,
    parallel: Option<bool>,
    scale_embeddings: Option<bool>,
    attention: Option<Attention>,
    weights: Option<WeightScheme>,
    lm_head: Option<LmHead>,
    pooling: Option<Pooling>,
}

/// Every named choice, with the rules between choices that hold whatever the checkpoint format.
fn choices(cx: &mut Ctxt, entries: &Entries, sizes: &Sizes) -> Choices {
    let name = |cx: &mut Ctxt, key: &str, valid: &[&'static str]| given_name(cx, entries, key, valid);
    let activation = name(cx, "activation", ACTIVATIONS).map(|n| match n {
        "gelu_erf" => Activation::GeluErf,
        "gelu_tanh" => Activation::GeluTanh,
        "swiglu" => Activation::SwiGlu,
        "geglu_tanh" => Activation::GeGluTanh,
        "geglu_erf" => Activation::GeGluErf,
        _ => Activation::Relu,
    });
    let norm_kind = name(cx, "norm", NORMS).map(|n| match n {
        "rms_norm" => NormKind::RmsNorm,
        _ => NormKind::LayerNorm,
    });
    let norm_eps = entries.get("norm_eps").and_then(|e| positive_eps(cx, e));
    let placement = name(cx, "norm_placement", PLACEMENTS).map(|n| match n {
        "pre" => Placement::Pre,
        _ => Placement::Post,
    });
    let position = positions::positions(cx, entries, sizes);
    let parallel = name(cx, "residual", RESIDUALS).map(|n| n == "parallel");
    parallel_residual_is_pre_norm(cx, entries, parallel, placement);
    let scale_embeddings = name(cx, "embedding_scale", EMBEDDING_SCALES).map(|n| n == "sqrt_d_model");
    let attention = entries.get("attention").and_then(|e| attention_kind(cx, e));
    positions::relative_buckets(cx, entries, &position, attention);
    let weights = name(cx, "weights", SCHEMES).map(|n| match n {
        "gpt2" => WeightScheme::Gpt2,
        "vit" => WeightScheme::Vit,
        "llama" => WeightScheme::Llama,
        "bloom" => WeightScheme::Bloom,
        "neox" => WeightScheme::NeoX,
        "t5" => WeightScheme::T5,
        "bart" => WeightScheme::Bart,
        "torch" => WeightScheme::Torch,
        _ => WeightScheme::Bert,
    });
    let lm_head = name(cx, "lm_head", LM_HEADS).map(|n| match n {
        "tied" => LmHead::Tied,
        _ => LmHead::Untied,
    });
    let pooling = name(cx, "pooling", POOLINGS).map(|n| match n {
        "cls" => Pooling::Cls,
        _ => Pooling::Mean,
    });
    Choices {
        activation,
        norm_kind,
        norm_eps,
        placement,
        positions: position.positions,
        parallel,
        scale_embeddings,
        attention,
        weights,
        lm_head,
        pooling,
    }
}

/// A size key's value, if given (else `None`; a missing key is reported by `keys_present`).
fn given_size(cx: &mut Ctxt, entries: &Entries, key: &str, max: usize) -> Option<usize> {
    entries.get(key).and_then(|e| positive_size(cx, e, max))
}

/// A name-valued key's value, if given.
fn given_name(cx: &mut Ctxt, entries: &Entries, key: &str, valid: &[&'static str]) -> Option<&'static str> {
    entries.get(key).and_then(|e| known_name(cx, e, valid))
}

/// Rule: `norm: rms_norm` is implemented pre-norm (as LLaMA and T5 place it).
fn rms_norm_is_pre_norm(cx: &mut Ctxt, entries: &Entries, c: &Choices) {
    if let (Some(NormKind::RmsNorm), Some(Placement::Post)) = (c.norm_kind, c.placement) {
        cx.error(
            entries["norm_placement"].value.span(),
            "`norm: rms_norm` is implemented pre-norm (as LLaMA and T5 place it): use `norm_placement: pre`",
        );
    }
}

/// Rule: a parallel residual adds attention and feed-forward of one normalised input, so it is
/// pre-norm.
fn parallel_residual_is_pre_norm(
    cx: &mut Ctxt,
    entries: &Entries,
    parallel: Option<bool>,
    placement: Option<Placement>,
) {
    if let (Some(true), Some(Placement::Post)) = (parallel, placement) {
        layout_conflict_with(
            cx,
            entries,
            "residual",
            "norm_placement",
            "a parallel residual adds attention and feed-forward of the same normalised input: it needs `norm_placement: pre`",
            "post-norm chosen here",
        );
    }
}

/// The rules that follow from the attention's direction: a single-stack decoder has a head and an
/// encoder none, key/value grouping is a decoder's, and centred windows are even.
fn direction_rules(cx: &mut Ctxt, entries: &Entries, sizes: &Sizes, c: &Choices, is_seq2seq: bool) {
    let two_stack_format =
        matches!(c.weights, Some(WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch));
    if let (Some(attention), false, false) = (c.attention, is_seq2seq, two_stack_format) {
        decoders_have_a_head(cx, attention, entries["attention"], entries.get("lm_head").copied());
    }
    if let Some(attention) = c.attention {
        decoder_only_options(cx, attention, sizes.heads, sizes.kv_heads, entries);
        if let (Some(_), Some(entry)) = (&sizes.windows, entries.get("window")) {
            local::centred_windows_even(cx, entry, attention);
        }
    }
}

/// The validated model, from values every rule has passed: `is_image` and `is_seq2seq` say which
/// of `images` and `decoder` it has.
fn spec(
    input: &ModelInput,
    entries: &Entries,
    is_image: bool,
    sizes: Sizes,
    c: Choices,
    images: Images,
    decoder: Option<Seq2Seq>,
    is_seq2seq: bool,
) -> Result<Spec, syn::Error> {
    // Every required value was reported if absent or invalid, so all are present here.
    let missing = || syn::Error::new(input.name.span(), "internal error: a checked key has no value");
    Ok(Spec {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        // An image model has no vocabulary: one row keeps every width positive.
        vocab_size: if is_image { 1 } else { sizes.vocab_size.ok_or_else(missing)? },
        max_positions: match images.positions {
            Some(n) => n,
            None => sizes.max_positions.ok_or_else(missing)?,
        },
        type_vocab_size: sizes.type_vocab_size,
        image: if is_image { Some(images.input.ok_or_else(missing)?) } else { None },
        d_model: sizes.d_model.ok_or_else(missing)?,
        heads: sizes.heads.ok_or_else(missing)?,
        head_dim: sizes.head_dim.ok_or_else(missing)?,
        kv_heads: sizes.kv_heads.or(sizes.heads).ok_or_else(missing)?,
        windows: sizes.windows.unwrap_or_default(),
        sparse: sizes.sparse.unwrap_or_default(),
        layers: sizes.layers.ok_or_else(missing)?,
        d_ff: sizes.d_ff.ok_or_else(missing)?,
        activation: c.activation.ok_or_else(missing)?,
        norm: Norm {
            kind: c.norm_kind.ok_or_else(missing)?,
            eps: c.norm_eps.ok_or_else(missing)?,
            placement: c.placement.ok_or_else(missing)?,
        },
        positions: c.positions.ok_or_else(missing)?,
        attention: c.attention.ok_or_else(missing)?,
        weights: c.weights.ok_or_else(missing)?,
        d_model_span: entries["d_model"].value.span(),
        vocab_span: entries
            .get(if is_image { "labels" } else { "vocab_size" })
            .map_or(input.name.span(), |e| e.value.span()),
        lm_head: c.lm_head,
        classifier: if is_image {
            Some(Classifier {
                labels: sizes.labels.ok_or_else(missing)?,
                pooling: c.pooling.ok_or_else(missing)?,
            })
        } else {
            None
        },
        scale_embeddings: c.scale_embeddings.unwrap_or(false),
        parallel: c.parallel.unwrap_or(false),
        dims: None,
        reversible: None,
        seq2seq: if is_seq2seq { Some(decoder.ok_or_else(missing)?) } else { None },
    })
}

/// Rule: every key is one the grammar knows (else suggest the closest), and none is given twice
/// (reported at both places).
fn keys_known_and_unique<'a>(cx: &mut Ctxt, given: &'a [Entry], known: &[&str]) -> Entries<'a> {
    let mut seen: HashMap<String, &Entry> = HashMap::new();
    for entry in given {
        let key = entry.key.to_string();
        if !known.contains(&key.as_str()) {
            // At the top level, a Reformer's own key asks for its preset.
            if let Some(message) = reformer::reformer_only_key(&key).filter(|_| known == KEYS) {
                cx.error(entry.key.span(), message);
                continue;
            }
            let hint = match closest(&key, known) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("expected one of {}", list(known)),
            };
            cx.error(entry.key.span(), format!("unknown key `{key}`: {hint}"));
            continue;
        }
        if let Some(first) = seen.get(&key) {
            cx.error(entry.key.span(), format!("duplicate key `{key}`: give each key once"));
            cx.error(first.key.span(), format!("`{key}` first given here"));
            continue;
        }
        seen.insert(key, entry);
    }
    seen
}

/// Rule: every required key is given. Reported at the model's name, which is where the keys go;
/// a key already suggested for a misspelt one (`d_modle` → `d_model`) is not reported again.
fn keys_present(
    cx: &mut Ctxt,
    input: &ModelInput,
    entries: &HashMap<String, &Entry>,
    is_image: bool,
    is_seq2seq: bool,
) {
    let suggested: Vec<&str> = input
        .entries
        .iter()
        .map(|e| e.key.to_string())
        .filter(|k| !KEYS.contains(&k.as_str()))
        .filter_map(|k| closest(&k, KEYS))
        .collect();
    let missing: Vec<&str> = KEYS
        .iter()
        .copied()
        .filter(|k| {
            if is_image {
                !TEXT_KEYS.contains(k) && *k != "max_positions"
            } else {
                !IMAGE_KEYS.contains(k)
            }
        })
        // The sections' own rule reports a missing `encoder` or `decoder`.
        .filter(|k| !SEQ2SEQ_KEYS.contains(k) || (is_seq2seq && *k == "decoder_start"))
        // `cross_attention` belongs in the decoder's section (checked there); `lm_head` is
        // required of every encoder-decoder model.
        .filter(|k| *k != "cross_attention" && (*k != "lm_head" || !is_seq2seq))
        .filter(|k| !OPTIONAL.contains(k) && !entries.contains_key(*k) && !suggested.contains(k))
        .chain(is_seq2seq.then_some("lm_head").filter(|k| !entries.contains_key(*k)))
        .collect();
    if !missing.is_empty() {
        let (s, them) = if missing.len() == 1 { ("", "it") } else { ("s", "them") };
        cx.error(
            input.name.span(),
            format!(
                "model `{}` is missing the key{s} {}: add {them} inside the braces",
                input.name,
                list(&missing)
            ),
        );
    }
}

/// Rule: a model reads tokens or images, not both: an image model (any of `image_size`,
/// `patch_size`, `channels`, `labels`, `pooling`) takes no vocabulary, token types or LM head.
fn keys_fit_the_input(cx: &mut Ctxt, entries: &HashMap<String, &Entry>, is_image: bool) {
    if !is_image {
        return;
    }
    for key in TEXT_KEYS {
        if let Some(entry) = entries.get(*key) {
            cx.error(
                entry.key.span(),
                format!(
                    "`{key}` belongs to text models, and this one reads images (it declares {}): remove `{key}`",
                    list(&IMAGE_KEYS.iter().copied().filter(|k| entries.contains_key(*k)).collect::<Vec<_>>())
                ),
            );
        }
    }
}

/// Rule: sizes are whole numbers from 1 to a sane maximum.
fn positive_size(cx: &mut Ctxt, entry: &Entry, max: usize) -> Option<usize> {
    let key = &entry.key;
    match &entry.value {
        Value::Int(lit) => match lit.base10_parse::<u64>() {
            Ok(0) => cx.error(lit.span(), format!("`{key}` must be at least 1, found 0")),
            Ok(n) if n as u128 > max as u128 => cx.error(
                lit.span(),
                format!(
                    "`{key}` of {} is larger than the supported maximum of {}; is there an extra digit?",
                    grouped(n as u128),
                    grouped(max as u128)
                ),
            ),
            Ok(n) => return Some(n as usize),
            Err(e) => cx.error(lit.span(), format!("`{key}` must be a whole number: {e}")),
        },
        Value::NegInt { value, span } => {
            cx.error(*span, format!("`{key}` must be at least 1, found {value}"))
        }
        Value::Float { value, span, text } if value.fract() == 0.0 && *value >= 1.0 && *value < 1e18 => {
            let message =
                format!("`{key}` expects a whole number, found the number `{text}`: write `{value}`");
            cx.error(*span, message)
        }
        other => cx.error(
            other.span(),
            format!("`{key}` expects a whole number such as `384`, found {}", other.describe()),
        ),
    }
    None
}

/// Rule: `d_model` splits evenly across `heads`; else name the nearest head counts that do.
fn heads_divide_d_model(cx: &mut Ctxt, d_model: usize, heads: usize, heads_entry: &Entry) {
    if d_model.is_multiple_of(heads) {
        return;
    }
    let below = (1..heads).rev().find(|&h| d_model.is_multiple_of(h));
    let above = (heads + 1..=d_model).find(|&h| d_model.is_multiple_of(h));
    let nearest: Vec<String> = below.into_iter().chain(above).map(|h| format!("{h}")).collect();
    cx.error(
        heads_entry.value.span(),
        format!(
            "`d_model` of {d_model} does not split into {heads} heads ({d_model} / {heads} is not whole); \
             the nearest head counts that divide {d_model} are {}",
            nearest.join(" and ")
        ),
    );
}

/// Rule: the norm epsilon is a positive number.
fn positive_eps(cx: &mut Ctxt, entry: &Entry) -> Option<f64> {
    let value = match &entry.value {
        Value::Float { value, .. } => *value,
        Value::Int(lit) => lit.base10_parse::<f64>().ok()?,
        Value::NegInt { value, .. } => *value as f64,
        other => {
            cx.error(
                other.span(),
                format!("`norm_eps` expects a number such as `1e-12`, found {}", other.describe()),
            );
            return None;
        }
    };
    if value.is_finite() && value > 0.0 {
        return Some(value);
    }
    cx.error(
        entry.value.span(),
        format!(
            "`norm_eps` must be a positive number such as `1e-12` (it keeps the division by the \
             standard deviation finite), found {}",
            entry.value.describe()
        ),
    );
    None
}

/// Rule: a name-valued key names one of its known values (else list them and suggest the closest).
fn known_name(cx: &mut Ctxt, entry: &Entry, valid: &[&'static str]) -> Option<&'static str> {
    let key = &entry.key;
    let Value::Name(ident) = &entry.value else {
        cx.error(
            entry.value.span(),
            format!("`{key}` expects one of {}, found {}", list(valid), entry.value.describe()),
        );
        return None;
    };
    let word = ident.to_string();
    if let Some(v) = valid.iter().find(|v| **v == word) {
        return Some(v);
    }
    cx.error(ident.span(), unknown_name_message(key, &word, valid));
    None
}

/// Rule: the attention kind is a direction this version implements; kinds that are keys or
/// presets of their own (windows, sparse layouts, LSH) say where they go.
fn attention_kind(cx: &mut Ctxt, entry: &Entry) -> Option<Attention> {
    if let Value::Name(ident) = &entry.value {
        let word = ident.to_string();
        if let Some(hint) = local::attention_hint(&word) {
            cx.error(ident.span(), hint);
            return None;
        }
    }
    known_name(cx, entry, ATTENTIONS).map(|n| match n {
        "causal" => Attention::Causal,
        _ => Attention::Bidirectional,
    })
}

/// Rule: a causal model (a decoder) ends in a language-model head, tied or untied; a
/// bidirectional one (an encoder) has none in this version.
fn decoders_have_a_head(cx: &mut Ctxt, attention: Attention, attention_entry: &Entry, head: Option<&Entry>) {
    match (attention, head) {
        (Attention::Causal, None) => cx.error(
            attention_entry.value.span(),
            "a `causal` model generates text and needs a head: add `lm_head: tied` (sharing the token \
             embeddings, as GPT-2 does) or `lm_head: untied`",
        ),
        (Attention::Bidirectional, Some(head)) => cx.error(
            head.key.span(),
            "`lm_head` belongs to `causal` models; a `bidirectional` encoder returns hidden states and \
             embeddings: remove `lm_head`",
        ),
        _ => {}
    }
}

/// Rule: grouped-query attention shares each key/value head among an equal group of query heads,
/// so `kv_heads` divides `heads`; else name the nearest counts that do.
fn kv_heads_divide_heads(cx: &mut Ctxt, heads: usize, kv_heads: usize, entry: &Entry) {
    if heads.is_multiple_of(kv_heads) && kv_heads <= heads {
        return;
    }
    let divisors: Vec<String> =
        (1..=heads).filter(|d| heads.is_multiple_of(*d)).map(|d| d.to_string()).collect();
    cx.error(
        entry.value.span(),
        format!(
            "`kv_heads` of {kv_heads} does not group {heads} query heads evenly; the counts that do are {}",
            divisors.join(", ")
        ),
    );
}

/// Rule: key/value grouping is a decoder feature in this version: with `attention: bidirectional`,
/// `kv_heads` must equal `heads`.
fn decoder_only_options(
    cx: &mut Ctxt,
    attention: Attention,
    heads: Option<usize>,
    kv_heads: Option<usize>,
    entries: &HashMap<String, &Entry>,
) {
    if attention != Attention::Bidirectional {
        return;
    }
    if let (Some(h), Some(kv)) = (heads, kv_heads) {
        if h != kv {
            cx.error(
                entries["kv_heads"].value.span(),
                format!("grouped-query attention is implemented for `causal` models; a `bidirectional` model needs `kv_heads: {h}` (or leave it out)"),
            );
        }
    }
}

/// Rule: a positive number (integer or float), e.g. RoPE's base.
fn positive_number(cx: &mut Ctxt, entry: &Entry, example: &str) -> Option<f64> {
    let value = match &entry.value {
        Value::Float { value, .. } => *value,
        Value::Int(lit) => lit.base10_parse::<f64>().ok()?,
        Value::NegInt { value, .. } => *value as f64,
        other => {
            cx.error(
                other.span(),
                format!("`{}` expects a number such as {example}, found {}", entry.key, other.describe()),
            );
            return None;
        }
    };
    if value.is_finite() && value > 0.0 {
        return Some(value);
    }
    cx.error(
        entry.value.span(),
        format!("`{}` must be a positive number such as {example}, found {value}", entry.key),
    );
    None
}

type Entries<'a> = HashMap<String, &'a Entry>;

/// Reports a value that conflicts with another key, at both.
fn layout_conflict_with(
    cx: &mut Ctxt,
    entries: &Entries,
    key: &str,
    other: &str,
    message: &str,
    other_message: &str,
) {
    cx.error(entries[key].value.span(), message);
    if let Some(o) = entries.get(other) {
        cx.error(o.key.span(), other_message);
    }
}

fn unknown_name_message(key: &Ident, word: &str, valid: &[&str]) -> String {
    match closest(word, valid) {
        Some(s) => format!("unknown {key} `{word}`: did you mean `{s}`? expected one of {}", list(valid)),
        None => format!("unknown {key} `{word}`: expected one of {}", list(valid)),
    }
}

/// `10000000` as `10_000_000`, so an extra digit shows.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// `a`, `b` or `c` as "`a`, `b`, `c`".
fn list(items: &[&str]) -> String {
    items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
}
