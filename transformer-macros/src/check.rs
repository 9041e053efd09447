//! Validation: one pass over every key, one named function per rule, every error collected.
//! Encoder-decoder models' sections and cross-stack rules are in [`seq2seq`].

pub mod local;
pub mod reformer;
mod seq2seq;

use std::collections::HashMap;

use proc_macro2::Span;
use syn::Ident;

use crate::ast::{Entry, ModelInput, Value};
use crate::ctxt::Ctxt;
use crate::spec::{
    Activation, Attention, Classifier, ImageInput, LmHead, Norm, NormKind, Placement, Pooling, Positions,
    Spec, WeightScheme,
};
use crate::suggest::closest;

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

    let size =
        |cx: &mut Ctxt, key: &str, max: usize| entries.get(key).and_then(|e| positive_size(cx, e, max));
    let vocab_size = size(&mut cx, "vocab_size", MAX_VOCAB);
    let max_positions = size(&mut cx, "max_positions", MAX_POSITIONS);
    let type_vocab_size = size(&mut cx, "type_vocab_size", MAX_TYPE_VOCAB);
    let d_model = size(&mut cx, "d_model", MAX_WIDTH);
    let heads = size(&mut cx, "heads", MAX_HEADS);
    let head_dim_given = size(&mut cx, "head_dim", MAX_WIDTH);
    let kv_heads = size(&mut cx, "kv_heads", MAX_HEADS);
    let layers = size(&mut cx, "layers", MAX_LAYERS);
    let d_ff = size(&mut cx, "d_ff", MAX_WIDTH * 16);
    let windows = entries.get("window").and_then(|e| local::windows(&mut cx, e, layers));
    let sparse = entries.get("sparse").and_then(|e| local::sparse_layers(&mut cx, e, layers));
    if let Some(sections) = &sections {
        local::windows_per_stack(&mut cx, &top, [&sections.encoder, &sections.decoder]);
    }
    let image_size = size(&mut cx, "image_size", MAX_IMAGE);
    let patch_size = size(&mut cx, "patch_size", MAX_IMAGE);
    let channels = size(&mut cx, "channels", MAX_CHANNELS);
    let labels = size(&mut cx, "labels", MAX_LABELS);
    if let (Some(d), Some(h), None) = (d_model, heads, entries.get("head_dim")) {
        heads_divide_d_model(&mut cx, d, h, entries["heads"]);
    }
    let head_dim = head_dim_given.or(d_model.zip(heads).map(|(d, h)| d / h));
    if let (Some(h), Some(kv)) = (heads, kv_heads) {
        kv_heads_divide_heads(&mut cx, h, kv, entries["kv_heads"]);
    }

    let name = |cx: &mut Ctxt, key: &str, valid: &[&'static str]| {
        entries.get(key).and_then(|e| known_name(cx, e, valid))
    };
    let activation = name(&mut cx, "activation", ACTIVATIONS).map(|n| match n {
        "gelu_erf" => Activation::GeluErf,
        "gelu_tanh" => Activation::GeluTanh,
        "swiglu" => Activation::SwiGlu,
        "geglu_tanh" => Activation::GeGluTanh,
        "geglu_erf" => Activation::GeGluErf,
        _ => Activation::Relu,
    });
    let norm_kind = name(&mut cx, "norm", NORMS).map(|n| match n {
        "rms_norm" => NormKind::RmsNorm,
        _ => NormKind::LayerNorm,
    });
    let norm_eps = entries.get("norm_eps").and_then(|e| positive_eps(&mut cx, e));
    let placement = name(&mut cx, "norm_placement", PLACEMENTS).map(|n| match n {
        "pre" => Placement::Pre,
        _ => Placement::Post,
    });
    let rope_theta = entries.get("rope_theta").and_then(|e| positive_number(&mut cx, e, "`10000.0`"));
    let rotary_dims = size(&mut cx, "rotary_dims", MAX_WIDTH);
    let buckets = size(&mut cx, "relative_buckets", MAX_BUCKETS);
    let max_distance = size(&mut cx, "relative_max_distance", MAX_POSITIONS);
    let positions = name(&mut cx, "positions", POSITIONS).and_then(|n| match n {
        "learned" => Some(Positions::Learned),
        "sinusoidal" => Some(Positions::Sinusoidal),
        "alibi" => Some(Positions::Alibi),
        "relative" => buckets
            .zip(max_distance)
            .map(|(buckets, max_distance)| Positions::Relative { buckets, max_distance }),
        _ => rope_theta
            .zip(rotary_dims.or(head_dim))
            .map(|(theta, rotary_dims)| Positions::Rope { theta, rotary_dims }),
    });
    if let Some(p) = entries.get("positions") {
        rope_theta_goes_with_rope(&mut cx, p, entries.get("rope_theta").copied());
        buckets_go_with_relative(&mut cx, p, &entries);
    }
    if let (Some(Positions::Rope { .. }), Some(hd)) = (positions, head_dim) {
        let derived = match (head_dim_given, d_model, heads) {
            (None, Some(d), Some(h)) => format!(" ({d} / {h})"),
            _ => String::new(),
        };
        match (rotary_dims, entries.get("rotary_dims")) {
            (Some(r), Some(entry)) => rotary_dims_fit(&mut cx, r, hd, entry),
            _ => rope_needs_even_head_dim(&mut cx, hd, &derived, entries["positions"]),
        }
    }
    if let (Some(entry), false) =
        (entries.get("rotary_dims"), matches!(positions, Some(Positions::Rope { .. })))
    {
        if entries.get("positions").is_some_and(|p| !matches!(&p.value, Value::Name(n) if n == "rope")) {
            cx.error(entry.key.span(), "`rotary_dims` belongs to `positions: rope`: remove it");
        }
    }
    let parallel = name(&mut cx, "residual", RESIDUALS).map(|n| n == "parallel");
    if let (Some(true), Some(Placement::Post)) = (parallel, placement) {
        layout_conflict_with(
            &mut cx,
            &entries,
            "residual",
            "norm_placement",
            "a parallel residual adds attention and feed-forward of the same normalised input: it needs `norm_placement: pre`",
            "post-norm chosen here",
        );
    }
    let scale_embeddings = name(&mut cx, "embedding_scale", EMBEDDING_SCALES).map(|n| n == "sqrt_d_model");
    let attention = entries.get("attention").and_then(|e| attention_kind(&mut cx, e));
    if let (Some(b), Some(entry)) = (buckets, entries.get("relative_buckets")) {
        // An encoder-decoder is checked as its (bidirectional) encoder: its buckets are even.
        if attention != Some(Attention::Causal) {
            relative_buckets_even(&mut cx, b, entry);
        }
        if let (Some(m), Some(max_entry)) = (max_distance, entries.get("relative_max_distance")) {
            relative_buckets_fit(&mut cx, b, m, max_entry);
        }
    }
    let weights = name(&mut cx, "weights", SCHEMES).map(|n| match n {
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
    let lm_head = name(&mut cx, "lm_head", LM_HEADS).map(|n| match n {
        "tied" => LmHead::Tied,
        _ => LmHead::Untied,
    });
    let pooling = name(&mut cx, "pooling", POOLINGS).map(|n| match n {
        "cls" => Pooling::Cls,
        _ => Pooling::Mean,
    });
    let image = match (image_size, patch_size, channels) {
        (Some(image_size), Some(patch_size), Some(channels)) => {
            Some(ImageInput { image_size, patch_size, channels }).filter(|_| {
                patch_divides_image(&mut cx, image_size, patch_size, entries["patch_size"].value.span())
            })
        }
        _ => None,
    };
    let image_positions = image.zip(pooling).map(|(i, p)| i.patches() + usize::from(p == Pooling::Cls));
    if let (Some(needed), Some(entry)) = (image_positions, entries.get("max_positions")) {
        positions_cover_the_patches(&mut cx, needed, max_positions, entry);
    }
    if let (Some(NormKind::RmsNorm), Some(Placement::Post)) = (norm_kind, placement) {
        cx.error(
            entries["norm_placement"].value.span(),
            "`norm: rms_norm` is implemented pre-norm (as LLaMA and T5 place it): use `norm_placement: pre`",
        );
    }
    let two_stack_format =
        matches!(weights, Some(WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch));
    if let (Some(attention), None, false) = (attention, &sections, two_stack_format) {
        decoders_have_a_head(&mut cx, attention, entries["attention"], entries.get("lm_head").copied());
    }
    if let Some(attention) = attention {
        decoder_only_options(&mut cx, attention, heads, kv_heads, &entries);
        if let (Some(_), Some(entry)) = (&windows, entries.get("window")) {
            local::centred_windows_even(&mut cx, entry, attention);
        }
    }
    let decoder = sections.as_ref().and_then(|sections| {
        let encoder = seq2seq::EncoderView { entries: &entries, d_model, heads, head_dim, attention };
        seq2seq::decoder(&mut cx, &top, sections, &encoder, weights, vocab_size)
    });
    seq2seq::scheme_fits_the_family(&mut cx, &top, weights, sections.is_some());
    if let (Some(WeightScheme::T5), None) = (weights, &sections) {
        t5_alone_is_its_encoder(&mut cx, &entries, attention);
    }
    match weights {
        Some(WeightScheme::Bert) => bert_layout(&mut cx, &entries, placement, attention),
        Some(WeightScheme::Gpt2) => gpt2_layout(&mut cx, &entries, placement, positions, attention),
        Some(WeightScheme::Vit) => vit_layout(&mut cx, &entries, placement, positions, attention, is_image),
        Some(WeightScheme::Llama) => {
            llama_layout(&mut cx, &entries, placement, norm_kind, positions, activation, attention)
        }
        Some(WeightScheme::NeoX) => neox_layout(&mut cx, &entries, norm_kind, positions, attention),
        Some(WeightScheme::Bloom) => {
            bloom_layout(&mut cx, &entries, placement, norm_kind, positions, activation, attention)
        }
        Some(scheme @ (WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch)) => {
            let choices =
                seq2seq::Choices { placement, norm: norm_kind, positions, activation, scale_embeddings };
            seq2seq::layout(&mut cx, &entries, scheme, &choices);
        }
        // `check/reformer.rs` validates a Reformer before these rules could see one.
        Some(WeightScheme::Reformer) | None => {}
    }
    if let Some(scheme @ (WeightScheme::Bert | WeightScheme::Gpt2 | WeightScheme::Vit)) = weights {
        classic_layout(&mut cx, &entries, scheme, norm_kind, positions, activation, heads, kv_heads);
    }
    if is_image && attention == Some(Attention::Causal) {
        layout_conflict_with(
            &mut cx,
            &entries,
            "attention",
            "image_size",
            "an image model attends to all patches: use `attention: bidirectional`",
            "image input declared here",
        );
    }

    cx.check()?;
    // Every required value was reported above if absent or invalid, so all are present here.
    let missing = || syn::Error::new(input.name.span(), "internal error: a checked key has no value");
    Ok(Spec {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        // An image model has no vocabulary: one row keeps every width positive.
        vocab_size: if is_image { 1 } else { vocab_size.ok_or_else(missing)? },
        max_positions: match image_positions {
            Some(n) => n,
            None => max_positions.ok_or_else(missing)?,
        },
        type_vocab_size,
        image: if is_image { Some(image.ok_or_else(missing)?) } else { None },
        d_model: d_model.ok_or_else(missing)?,
        heads: heads.ok_or_else(missing)?,
        head_dim: head_dim.ok_or_else(missing)?,
        kv_heads: kv_heads.or(heads).ok_or_else(missing)?,
        windows: windows.unwrap_or_default(),
        sparse: sparse.unwrap_or_default(),
        layers: layers.ok_or_else(missing)?,
        d_ff: d_ff.ok_or_else(missing)?,
        activation: activation.ok_or_else(missing)?,
        norm: Norm {
            kind: norm_kind.ok_or_else(missing)?,
            eps: norm_eps.ok_or_else(missing)?,
            placement: placement.ok_or_else(missing)?,
        },
        positions: positions.ok_or_else(missing)?,
        attention: attention.ok_or_else(missing)?,
        weights: weights.ok_or_else(missing)?,
        d_model_span: entries["d_model"].value.span(),
        vocab_span: entries
            .get(if is_image { "labels" } else { "vocab_size" })
            .map_or(input.name.span(), |e| e.value.span()),
        lm_head,
        classifier: if is_image {
            Some(Classifier { labels: labels.ok_or_else(missing)?, pooling: pooling.ok_or_else(missing)? })
        } else {
            None
        },
        scale_embeddings: scale_embeddings.unwrap_or(false),
        parallel: parallel.unwrap_or(false),
        dims: None,
        reversible: None,
        seq2seq: match sections {
            Some(_) => Some(decoder.ok_or_else(missing)?),
            None => None,
        },
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

/// Rule: patches tile the image: `image_size` is a multiple of `patch_size`; else name the
/// nearest patch sizes that divide it.
/// `span` is the written patch size (a preset's entry, a composed `patch = …`).
pub fn patch_divides_image(cx: &mut Ctxt, image_size: usize, patch_size: usize, span: Span) -> bool {
    if image_size.is_multiple_of(patch_size) {
        return true;
    }
    let below = (1..patch_size).rev().find(|&p| image_size.is_multiple_of(p));
    let above = (patch_size + 1..=image_size).find(|&p| image_size.is_multiple_of(p));
    let nearest: Vec<String> = below.into_iter().chain(above).map(|p| p.to_string()).collect();
    cx.error(
        span,
        format!(
            "patches of {patch_size} do not tile an image of {image_size} ({image_size} / {patch_size} is not whole); \
             the nearest patch sizes that divide {image_size} are {}",
            nearest.join(" and ")
        ),
    );
    false
}

/// Rule: an image model's position table has one row per patch, plus one for the class token
/// when pooling by it.
fn positions_cover_the_patches(cx: &mut Ctxt, needed: usize, given: Option<usize>, entry: &Entry) {
    if let Some(given) = given.filter(|&g| g != needed) {
        cx.error(
            entry.value.span(),
            format!(
                "this image model has {needed} positions (its patches, plus the class token with \
                 `pooling: cls`), but `max_positions` is {given}: write `max_positions: {needed}` or leave it out"
            ),
        );
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

/// Rule: BERT checkpoints are post-norm bidirectional encoders; their tensor names have no place
/// for a final norm or a causal head.
fn bert_layout(cx: &mut Ctxt, entries: &Entries, placement: Option<Placement>, attention: Option<Attention>) {
    if placement == Some(Placement::Pre) {
        layout_conflict(
            cx,
            entries,
            "norm_placement",
            "`weights: bert` checkpoints are post-norm: use `norm_placement: post`",
        );
    }
    if attention == Some(Attention::Causal) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "`weights: bert` checkpoints are encoders: use `attention: bidirectional`",
        );
    }
}

/// Rule: GPT-2 checkpoints are pre-norm causal decoders with learned positions and no token
/// types.
fn gpt2_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    positions: Option<Positions>,
    attention: Option<Attention>,
) {
    if placement == Some(Placement::Post) {
        layout_conflict(
            cx,
            entries,
            "norm_placement",
            "`weights: gpt2` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if positions == Some(Positions::Sinusoidal) {
        layout_conflict(
            cx,
            entries,
            "positions",
            "`weights: gpt2` checkpoints learn their positions (`wpe`): use `positions: learned`",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "`weights: gpt2` checkpoints are decoders: use `attention: causal`",
        );
    }
    if let Some(types) = entries.get("type_vocab_size") {
        cx.error(
            types.key.span(),
            "`weights: gpt2` checkpoints have no token-type embeddings: remove `type_vocab_size`",
        );
        cx.error(entries["weights"].value.span(), "GPT-2 naming chosen here");
    }
}

/// Rule: ViT checkpoints are pre-norm bidirectional image encoders with learned positions.
fn vit_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    positions: Option<Positions>,
    attention: Option<Attention>,
    is_image: bool,
) {
    if placement == Some(Placement::Post) {
        layout_conflict(
            cx,
            entries,
            "norm_placement",
            "`weights: vit` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if positions == Some(Positions::Sinusoidal) {
        layout_conflict(
            cx,
            entries,
            "positions",
            "`weights: vit` checkpoints learn their positions: use `positions: learned`",
        );
    }
    vit_positions_stay_learned(cx, entries, positions);
    if attention == Some(Attention::Causal) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "`weights: vit` checkpoints are encoders: use `attention: bidirectional`",
        );
    }
    if !is_image {
        cx.error(
            entries["weights"].value.span(),
            "`weights: vit` checkpoints read images: declare `image_size`, `patch_size`, `channels`, `labels` and `pooling`",
        );
    }
}

/// Rule: `weights: t5` without `encoder`/`decoder` sections is T5's encoder alone
/// (`T5EncoderModel`): bidirectional, with no head and no token types; like the encoder-decoder
/// stacks it is built from, it attends globally with a sequential residual.
fn t5_alone_is_its_encoder(cx: &mut Ctxt, entries: &Entries, attention: Option<Attention>) {
    if attention == Some(Attention::Causal) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "a `weights: t5` model without sections is T5's encoder (`T5EncoderModel`): use `attention: \
             bidirectional`, or declare `encoder: { … }` and `decoder: { … }` for the whole model",
        );
    }
    for key in ["lm_head", "type_vocab_size"] {
        if let Some(entry) = entries.get(key) {
            cx.error(
                entry.key.span(),
                format!("T5's encoder alone (`T5EncoderModel`) has no `{key}`: remove it"),
            );
        }
    }
    let parallel = entries.get("residual").filter(|e| matches!(&e.value, Value::Name(n) if n == "parallel"));
    for entry in ["window", "sparse"].iter().filter_map(|k| entries.get(*k)).chain(parallel) {
        cx.error(
            entry.key.span(),
            format!(
                "`{}` is not implemented for T5's encoder alone in this version (it lowers through the \
                 encoder-decoder stack): remove it",
                entry.key
            ),
        );
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

/// Rule: `rope_theta` is given exactly when `positions: rope` is.
fn rope_theta_goes_with_rope(cx: &mut Ctxt, positions: &Entry, theta: Option<&Entry>) {
    let is_rope = matches!(&positions.value, Value::Name(n) if n == "rope");
    match (is_rope, theta) {
        (true, None) => cx.error(
            positions.value.span(),
            "`positions: rope` needs its base: add `rope_theta: 10000.0` (the checkpoint's `rope_theta`)",
        ),
        (false, Some(theta)) => cx.error(
            theta.key.span(),
            "`rope_theta` belongs to `positions: rope`: remove it or use rotary positions",
        ),
        _ => {}
    }
}

/// Rule: rotary embeddings rotate pairs of dimensions, so the head width is even.
fn rope_needs_even_head_dim(cx: &mut Ctxt, head_dim: usize, derived: &str, positions: &Entry) {
    if !head_dim.is_multiple_of(2) {
        cx.error(
            positions.value.span(),
            format!("rotary positions rotate pairs of dimensions, but a head is {head_dim} wide{derived}: use an even head width"),
        );
    }
}

/// Rule: `relative_buckets` and `relative_max_distance` are given exactly when
/// `positions: relative` is.
fn buckets_go_with_relative(cx: &mut Ctxt, positions: &Entry, entries: &Entries) {
    let is_relative = matches!(&positions.value, Value::Name(n) if n == "relative");
    let keys = ["relative_buckets", "relative_max_distance"];
    if is_relative {
        let missing: Vec<&str> = keys.into_iter().filter(|k| !entries.contains_key(*k)).collect();
        if !missing.is_empty() {
            cx.error(
                positions.value.span(),
                format!(
                    "`positions: relative` needs {} (the checkpoint's `relative_attention_num_buckets` and \
                     `relative_attention_max_distance`, e.g. 32 and 128)",
                    list(&missing)
                ),
            );
        }
    } else {
        for key in keys {
            if let Some(e) = entries.get(key) {
                cx.error(e.key.span(), format!("`{key}` belongs to `positions: relative`: remove it"));
            }
        }
    }
}

/// Rule: T5's buckets are half exact (one per offset) and half logarithmic up to
/// `relative_max_distance`, in each direction: at least 4 buckets, and the farthest distance beyond
/// the exact ones (`max_distance > buckets / 2`), else the logarithmic half is empty.
fn relative_buckets_fit(cx: &mut Ctxt, buckets: usize, max_distance: usize, entry: &Entry) {
    if buckets >= 4 && max_distance > buckets / 2 {
        return;
    }
    cx.error(
        entry.value.span(),
        format!(
            "{buckets} relative buckets need `relative_max_distance` above {} (the last exactly-bucketed \
             offset) and at least 4 buckets; found {max_distance} (T5 uses 32 buckets up to 128)",
            buckets / 2
        ),
    );
}

/// Rule: T5 buckets split into two halves (keys before and after the query) in a bidirectional
/// stack (an encoder, and so an encoder-decoder's shared setting), so their number is even; a
/// causal stack's buckets all count keys before the query.
fn relative_buckets_even(cx: &mut Ctxt, buckets: usize, entry: &Entry) {
    if !buckets.is_multiple_of(2) {
        cx.error(
            entry.value.span(),
            format!(
                "relative buckets are split in half by direction, so their number is even: {buckets} is odd"
            ),
        );
    }
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

/// Rule: LLaMA/Mistral checkpoints are pre-norm causal decoders with RMS norms, SwiGLU
/// feed-forwards and no position table: rotary positions, or a score bias (ALiBi as in MPT, or
/// T5's relative buckets with the table in `model.layers.0.self_attn.relative_attention_bias`).
fn llama_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    activation: Option<Activation>,
    attention: Option<Attention>,
) {
    let conflict = |cx: &mut Ctxt, key: &str, message: &str| layout_conflict(cx, entries, key, message);
    if placement == Some(Placement::Post) {
        conflict(
            cx,
            "norm_placement",
            "`weights: llama` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if norm == Some(NormKind::LayerNorm) {
        conflict(cx, "norm", "`weights: llama` checkpoints use RMS norms: use `norm: rms_norm`");
    }
    if matches!(positions, Some(Positions::Learned | Positions::Sinusoidal)) {
        conflict(
            cx,
            "positions",
            "`weights: llama` checkpoints have no position table: use `positions: rope` (or a score bias: \
             `alibi`, `relative`)",
        );
    }
    if matches!(activation, Some(a) if a != Activation::SwiGlu) {
        conflict(
            cx,
            "activation",
            "`weights: llama` feed-forwards are gated (`gate_proj`, `up_proj`): use `activation: swiglu`",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        conflict(cx, "attention", "`weights: llama` checkpoints are decoders: use `attention: causal`");
    }
    if let Some(types) = entries.get("type_vocab_size") {
        cx.error(
            types.key.span(),
            "`weights: llama` checkpoints have no token-type embeddings: remove `type_vocab_size`",
        );
    }
}

/// Rule: partial rotary turns the first `rotary_dims` of each head, in pairs: an even number no
/// larger than the head.
fn rotary_dims_fit(cx: &mut Ctxt, rotary_dims: usize, head_dim: usize, entry: &Entry) {
    if rotary_dims.is_multiple_of(2) && rotary_dims <= head_dim {
        return;
    }
    cx.error(
        entry.value.span(),
        format!(
            "`rotary_dims` of {rotary_dims} must be even and at most the head width, {head_dim} (GPT-NeoX: \
             `rotary_pct × head_dim`)"
        ),
    );
}

/// Rule: GPT-NeoX checkpoints are LayerNorm causal decoders with no position table: rotary
/// positions (partial: `rotary_dims`), or a score bias (ALiBi, or T5's relative buckets with the
/// table in `gpt_neox.layers.0.attention.relative_attention_bias`); `residual: parallel` matches
/// `use_parallel_residual: true`, their default.
fn neox_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    attention: Option<Attention>,
) {
    let conflict = |cx: &mut Ctxt, key: &str, message: &str| layout_conflict(cx, entries, key, message);
    if norm == Some(NormKind::RmsNorm) {
        conflict(cx, "norm", "`weights: neox` checkpoints use LayerNorm: use `norm: layer_norm`");
    }
    if matches!(positions, Some(Positions::Learned | Positions::Sinusoidal)) {
        conflict(
            cx,
            "positions",
            "`weights: neox` checkpoints have no position table: use `positions: rope` (or a score bias: \
             `alibi`, `relative`)",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        conflict(cx, "attention", "`weights: neox` checkpoints are decoders: use `attention: causal`");
    }
}

/// Rule: BLOOM checkpoints are pre-norm LayerNorm causal decoders with ALiBi positions and an
/// ungated GELU (tanh) feed-forward.
fn bloom_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    activation: Option<Activation>,
    attention: Option<Attention>,
) {
    let conflict = |cx: &mut Ctxt, key: &str, message: &str| layout_conflict(cx, entries, key, message);
    if placement == Some(Placement::Post) {
        conflict(
            cx,
            "norm_placement",
            "`weights: bloom` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if norm == Some(NormKind::RmsNorm) {
        conflict(cx, "norm", "`weights: bloom` checkpoints use LayerNorm: use `norm: layer_norm`");
    }
    if positions.is_some_and(|p| p != Positions::Alibi) {
        conflict(
            cx,
            "positions",
            "`weights: bloom` checkpoints bias scores by distance: use `positions: alibi`",
        );
    }
    if activation.is_some_and(|a| a != Activation::GeluTanh) {
        conflict(
            cx,
            "activation",
            "`weights: bloom` feed-forwards use the tanh GELU: use `activation: gelu_tanh`",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        conflict(cx, "attention", "`weights: bloom` checkpoints are decoders: use `attention: causal`");
    }
    if let Some(types) = entries.get("type_vocab_size") {
        cx.error(
            types.key.span(),
            "`weights: bloom` checkpoints have no token-type embeddings: remove `type_vocab_size`",
        );
    }
}

/// Rule: BERT, GPT-2 and ViT checkpoints have LayerNorm, ungated feed-forwards and one key/value
/// head per query head. Their positions are a learned table, or for BERT and GPT-2 a score bias in
/// its place (ALiBi, as in MosaicBERT; T5's relative buckets); rotary positions need no table but
/// these checkpoints' attention does not rotate.
fn classic_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    scheme: WeightScheme,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    activation: Option<Activation>,
    heads: Option<usize>,
    kv_heads: Option<usize>,
) {
    let name = match scheme {
        WeightScheme::Bert => "bert",
        WeightScheme::Gpt2 => "gpt2",
        _ => "vit",
    };
    if norm == Some(NormKind::RmsNorm) {
        layout_conflict(
            cx,
            entries,
            "norm",
            &format!("`weights: {name}` checkpoints use LayerNorm: use `norm: layer_norm`"),
        );
    }
    // ViT's positions: `vit_positions_stay_learned`.
    if scheme != WeightScheme::Vit && matches!(positions, Some(Positions::Rope { .. })) {
        layout_conflict(
            cx,
            entries,
            "positions",
            &format!(
                "`weights: {name}` checkpoints do not rotate queries and keys: use `positions: learned` \
                 (or a score bias: `alibi`, `relative`)"
            ),
        );
    }
    if activation.is_some_and(Activation::is_gated) {
        layout_conflict(
            cx,
            entries,
            "activation",
            &format!(
                "`weights: {name}` feed-forwards are not gated: use an ungated activation such as `gelu_erf`"
            ),
        );
    }
    if let (Some(h), Some(kv)) = (heads, kv_heads) {
        if h != kv && entries.contains_key("kv_heads") {
            layout_conflict(cx, entries, "kv_heads", &format!("`weights: {name}` checkpoints have one key/value head per query head: use `kv_heads: {h}` or leave it out"));
        }
    }
}

/// Rule: ViT adds a learned position per patch. Distance biases (ALiBi, T5's buckets) and
/// rotations measure a 1-D distance, and over patches in raster order that distance puts the
/// patch below a neighbour a whole row away: no ViT checkpoint positions patches so.
fn vit_positions_stay_learned(cx: &mut Ctxt, entries: &Entries, positions: Option<Positions>) {
    if matches!(positions, Some(Positions::Rope { .. } | Positions::Relative { .. } | Positions::Alibi)) {
        layout_conflict(
            cx,
            entries,
            "positions",
            "`weights: vit` checkpoints learn a position per patch: use `positions: learned` (1-D \
             distance biases and rotations over patches in raster order would put vertical neighbours a \
             whole row apart)",
        );
    }
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

/// Reports a value that the chosen weight scheme rules out, at the value and at the scheme.
fn layout_conflict(cx: &mut Ctxt, entries: &Entries, key: &str, message: &str) {
    cx.error(entries[key].value.span(), message);
    let scheme = &entries["weights"].value;
    cx.error(scheme.span(), format!("{} naming chosen here", scheme_label(scheme)));
}

fn scheme_label(value: &Value) -> &'static str {
    match value {
        Value::Name(n) if n == "gpt2" => "GPT-2",
        Value::Name(n) if n == "vit" => "ViT",
        Value::Name(n) if n == "llama" => "LLaMA",
        Value::Name(n) if n == "bloom" => "BLOOM",
        Value::Name(n) if n == "neox" => "GPT-NeoX",
        Value::Name(n) if n == "t5" => "T5",
        Value::Name(n) if n == "bart" => "BART",
        Value::Name(n) if n == "torch" => "`torch.nn.Transformer`",
        _ => "BERT",
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
