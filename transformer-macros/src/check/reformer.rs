//! The Reformer preset (`weights: reformer`, Hugging Face `ReformerModelWithLMHead` /
//! `ReformerForMaskedLM`): its own key set, since its layers are reversible two-stream layers
//! whose attention kind varies per layer, and the rules tying LSH / local chunking, axial
//! positions and the dims together.
//!
//! ```text
//! attn_layers: [lsh, local, lsh, local],
//! lsh: { chunk: 8, chunks_before: 1, chunks_after: 0, buckets: 4, hashes: 2 },
//! local: { chunk: 8, chunks_before: 1, chunks_after: 0 },
//! axial_positions: { shape: [8, 8], dims: [16, 48] },
//! ```

use proc_macro2::Span;

use super::{
    attention_kind, heads_divide_d_model, keys_known_and_unique, known_name, list, positive_eps,
    positive_size, Entries, KEYS, MAX_HEADS, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH,
};
use crate::ast::{Entry, ModelInput, Value};
use crate::ctxt::Ctxt;
use crate::spec::{Activation, Attention, Reformer, ReformerAttention, ReformerLocal, ReformerLsh};
use crate::suggest::closest;

/// The keys of a Reformer, in the order `docs/reformer.md` documents them.
const REFORMER_KEYS: &[&str] = &[
    "vocab_size",
    "max_positions",
    "d_model",
    "heads",
    "layers",
    "d_ff",
    "activation",
    "norm_eps",
    "attention",
    "weights",
    "attn_layers",
    "lsh",
    "local",
    "axial_positions",
];
/// Keys only a Reformer takes (the other keys above are shared with every preset).
pub(super) const ONLY_REFORMER: &[&str] = &["attn_layers", "lsh", "local", "axial_positions"];
/// Required unless noted: `lsh` / `local` are required exactly when a layer is of that kind.
const SECTIONS: &[&str] = &["lsh", "local"];
const LSH_KEYS: &[&str] = &["chunk", "chunks_before", "chunks_after", "buckets", "hashes"];
const LOCAL_KEYS: &[&str] = &["chunk", "chunks_before", "chunks_after"];
const AXIAL_KEYS: &[&str] = &["shape", "dims"];
const KINDS: &[&str] = &["lsh", "local"];
/// HF's `hidden_act` values a Reformer feed-forward may use (`gelu`, `gelu_new`, `relu`).
const ACTIVATIONS: &[&str] = &["gelu_erf", "gelu_tanh", "relu"];
/// Upper bounds that catch typos.
const MAX_BUCKETS: usize = 1 << 16;
const MAX_HASHES: usize = 64;
const MAX_NEIGHBOURS: usize = 64;

/// Whether the input declares `weights: reformer` (then [`validate`] checks it, not the presets'
/// rules).
pub fn declared(input: &ModelInput) -> bool {
    input.entries.iter().any(|e| e.key == "weights" && matches!(&e.value, Value::Name(n) if n == "reformer"))
}

/// Checks a Reformer declaration; returns its spec or every error found.
pub fn validate(input: &ModelInput) -> Result<Reformer, syn::Error> {
    let mut cx = Ctxt::new();
    let entries = reformer_keys_only(&mut cx, &input.entries);
    reformer_keys_present(&mut cx, input, &entries);
    let size =
        |cx: &mut Ctxt, key: &str, max: usize| entries.get(key).and_then(|e| positive_size(cx, e, max));
    let vocab_size = size(&mut cx, "vocab_size", MAX_VOCAB);
    let max_positions = size(&mut cx, "max_positions", MAX_POSITIONS);
    let d_model = size(&mut cx, "d_model", MAX_WIDTH);
    let heads = size(&mut cx, "heads", MAX_HEADS);
    let layers = size(&mut cx, "layers", MAX_LAYERS);
    let d_ff = size(&mut cx, "d_ff", MAX_WIDTH * 16);
    if let (Some(d), Some(h)) = (d_model, heads) {
        heads_divide_d_model(&mut cx, d, h, entries["heads"]);
    }
    let activation =
        entries.get("activation").and_then(|e| known_name(&mut cx, e, ACTIVATIONS)).map(|n| match n {
            "gelu_erf" => Activation::GeluErf,
            "gelu_tanh" => Activation::GeluTanh,
            _ => Activation::Relu,
        });
    let eps = entries.get("norm_eps").and_then(|e| positive_eps(&mut cx, e));
    let attention = entries.get("attention").and_then(|e| attention_direction(&mut cx, e));
    let kinds = entries.get("attn_layers").and_then(|e| attn_layers(&mut cx, e, layers));
    if let Some(kinds) = &kinds {
        sections_match_the_layers(&mut cx, input.name.span(), kinds, &entries);
    }
    let lsh = entries.get("lsh").and_then(|e| lsh_section(&mut cx, e));
    let local = entries.get("local").and_then(|e| local_section(&mut cx, e));
    let axial = entries.get("axial_positions").and_then(|e| axial_section(&mut cx, e));
    if let Some((shape, dims, entry)) = &axial {
        if let Some(max) = max_positions {
            axial_shape_covers_the_positions(&mut cx, *shape, max, entry, entries["max_positions"]);
        }
        if let Some(d) = d_model {
            axial_dims_fill_d_model(&mut cx, *dims, d, entry);
        }
    }
    if let Some(max) = max_positions {
        let chunks = [lsh.map(|l| ("lsh", l.chunk)), local.map(|l| ("local", l.chunk))];
        padding_stays_in_the_table(&mut cx, max, &chunks, entries["max_positions"]);
    }

    cx.check()?;
    let missing =
        || syn::Error::new(input.name.span(), "internal error: a checked Reformer key has no value");
    let (axial_shape, axial_dims, _) = axial.ok_or_else(missing)?;
    let (d_model, heads) = (d_model.ok_or_else(missing)?, heads.ok_or_else(missing)?);
    Ok(Reformer {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        vocab_size: vocab_size.ok_or_else(missing)?,
        max_positions: max_positions.ok_or_else(missing)?,
        d_model,
        heads,
        head_dim: d_model / heads,
        d_ff: d_ff.ok_or_else(missing)?,
        activation: activation.ok_or_else(missing)?,
        eps: eps.ok_or_else(missing)?,
        causal: attention.ok_or_else(missing)? == Attention::Causal,
        layers: kinds.ok_or_else(missing)?,
        lsh,
        local,
        axial_shape,
        axial_dims,
        vocab_span: entries["vocab_size"].value.span(),
    })
}

/// Rule: a Reformer takes only its own keys, each once. A key of the other presets says that the
/// preset fixes it (pre-norm LayerNorm, axial positions, one vocabulary); any other is unknown,
/// with the closest Reformer key suggested.
fn reformer_keys_only<'a>(cx: &mut Ctxt, given: &'a [Entry]) -> Entries<'a> {
    let (own, other): (Vec<&Entry>, Vec<&Entry>) =
        given.iter().partition(|e| REFORMER_KEYS.contains(&e.key.to_string().as_str()));
    for entry in other {
        let key = entry.key.to_string();
        if KEYS.contains(&key.as_str()) {
            cx.error(
                entry.key.span(),
                format!(
                    "`{key}` does not apply to `weights: reformer`: its layers are fixed (reversible, pre-norm \
                     LayerNorm, axial positions, an untied head over both streams); remove `{key}`"
                ),
            );
        } else {
            let hint = match closest(&key, REFORMER_KEYS) {
                Some(k) => format!("did you mean `{k}`?"),
                None => format!("a Reformer takes {}", list(REFORMER_KEYS)),
            };
            cx.error(entry.key.span(), format!("unknown key `{key}`: {hint}"));
        }
    }
    keys_known_and_unique_refs(cx, &own)
}

/// [`keys_known_and_unique`] over entries already known to be Reformer keys.
fn keys_known_and_unique_refs<'a>(cx: &mut Ctxt, given: &[&'a Entry]) -> Entries<'a> {
    let mut seen = Entries::new();
    for entry in given {
        let key = entry.key.to_string();
        if let Some(first) = seen.get(&key) {
            cx.error(entry.key.span(), format!("duplicate key `{key}`: give each key once"));
            cx.error(first.key.span(), format!("`{key}` first given here"));
            continue;
        }
        seen.insert(key, *entry);
    }
    seen
}

/// Rule: every Reformer key is given except the `lsh` / `local` sections (whose own rule says
/// when they are needed). Reported at the model's name.
fn reformer_keys_present(cx: &mut Ctxt, input: &ModelInput, entries: &Entries) {
    let suggested: Vec<&str> = input
        .entries
        .iter()
        .map(|e| e.key.to_string())
        .filter(|k| !REFORMER_KEYS.contains(&k.as_str()))
        .filter_map(|k| closest(&k, REFORMER_KEYS))
        .collect();
    let missing: Vec<&str> = REFORMER_KEYS
        .iter()
        .copied()
        .filter(|k| !SECTIONS.contains(k) && !entries.contains_key(*k) && !suggested.contains(k))
        .collect();
    if !missing.is_empty() {
        let (s, them) = if missing.len() == 1 { ("", "it") } else { ("s", "them") };
        cx.error(
            input.name.span(),
            format!(
                "Reformer `{}` is missing the key{s} {}: add {them} inside the braces",
                input.name,
                list(&missing)
            ),
        );
    }
}

/// Rule: a Reformer's `attention` is the direction (`causal`: HF `is_decoder`, a
/// `ReformerModelWithLMHead`; `bidirectional`: a `ReformerForMaskedLM`); the layers' kinds are
/// `attn_layers`.
fn attention_direction(cx: &mut Ctxt, entry: &Entry) -> Option<Attention> {
    if let Value::Name(n) = &entry.value {
        if KINDS.contains(&n.to_string().as_str()) {
            cx.error(
                n.span(),
                format!(
                    "a Reformer's `attention` is its direction, `causal` (HF `is_decoder`) or `bidirectional`; \
                     each layer's kind (`{n}`) goes in `attn_layers`"
                ),
            );
            return None;
        }
    }
    attention_kind(cx, entry)
}

/// `attn_layers: [lsh, local, …]`: one attention kind per layer (HF's `attn_layers`).
///
/// Rule: the list has one known kind (`lsh` or `local`) per layer.
fn attn_layers(cx: &mut Ctxt, entry: &Entry, layers: Option<usize>) -> Option<Vec<ReformerAttention>> {
    let Value::List { items, span } = &entry.value else {
        cx.error(
            entry.value.span(),
            format!(
                "`attn_layers` lists each layer's attention, such as `[lsh, local, lsh, local]`, found {}",
                entry.value.describe()
            ),
        );
        return None;
    };
    let kinds: Vec<Option<ReformerAttention>> = items
        .iter()
        .map(|item| match item {
            Value::Name(n) if n == "lsh" => Some(ReformerAttention::Lsh),
            Value::Name(n) if n == "local" => Some(ReformerAttention::Local),
            Value::Name(n) => {
                let word = n.to_string();
                let message = match closest(&word, KINDS) {
                    Some(k) => {
                        format!(
                            "unknown layer attention `{word}`: did you mean `{k}`? expected `lsh` or `local`"
                        )
                    }
                    None => format!("unknown layer attention `{word}`: expected `lsh` or `local`"),
                };
                cx.error(n.span(), message);
                None
            }
            other => {
                cx.error(
                    other.span(),
                    format!("each layer's attention is `lsh` or `local`, found {}", other.describe()),
                );
                None
            }
        })
        .collect();
    if let Some(layers) = layers.filter(|&n| n != items.len()) {
        cx.error(
            *span,
            format!(
                "`attn_layers` lists one attention per layer: found {} for `layers: {layers}`",
                items.len()
            ),
        );
        return None;
    }
    kinds.into_iter().collect()
}

/// Rule: the `lsh` section is given exactly when some layer is `lsh`, and `local` exactly when
/// some layer is `local` (a section no layer reads is a mistake, not a default).
fn sections_match_the_layers(cx: &mut Ctxt, name: Span, kinds: &[ReformerAttention], entries: &Entries) {
    for (section, kind, example) in [
        (
            "lsh",
            ReformerAttention::Lsh,
            "`lsh: { chunk: 64, chunks_before: 1, chunks_after: 0, buckets: 8, hashes: 2 }`",
        ),
        ("local", ReformerAttention::Local, "`local: { chunk: 64, chunks_before: 1, chunks_after: 0 }`"),
    ] {
        let used = kinds.contains(&kind);
        match (used, entries.get(section)) {
            (true, None) => cx.error(
                entries.get("attn_layers").map_or(name, |e| e.value.span()),
                format!("a layer attends by `{section}`, so the model needs its chunking: add {example}"),
            ),
            (false, Some(e)) => cx.error(
                e.key.span(),
                format!("no layer in `attn_layers` is `{section}`: remove the `{section}` section"),
            ),
            _ => {}
        }
    }
}

/// Rule: a number of neighbour chunks is a whole number from 0 to a sane maximum.
fn count(cx: &mut Ctxt, entry: &Entry) -> Option<usize> {
    if let Value::Int(lit) = &entry.value {
        if let Ok(n @ 0..=MAX_NEIGHBOURS) = lit.base10_parse::<usize>() {
            return Some(n);
        }
    }
    cx.error(
        entry.value.span(),
        format!(
            "`{}` is a number of neighbour chunks from 0 to {MAX_NEIGHBOURS}, found {}",
            entry.key,
            entry.value.describe()
        ),
    );
    None
}

/// The keys of a `{ … }` section, every required one present (reported at the braces).
fn section<'a>(cx: &mut Ctxt, entry: &'a Entry, keys: &[&str], example: &str) -> Option<Entries<'a>> {
    let Value::Section { entries, span } = &entry.value else {
        cx.error(
            entry.value.span(),
            format!(
                "`{}` expects a section such as `{example}`, found {}",
                entry.key,
                entry.value.describe()
            ),
        );
        return None;
    };
    let found = keys_known_and_unique(cx, entries, keys);
    // A key already suggested for a misspelt one (`bucket` → `buckets`) is not reported again.
    let suggested: Vec<&str> = entries
        .iter()
        .map(|e| e.key.to_string())
        .filter(|k| !keys.contains(&k.as_str()))
        .filter_map(|k| closest(&k, keys))
        .collect();
    let missing: Vec<&str> =
        keys.iter().copied().filter(|k| !found.contains_key(*k) && !suggested.contains(k)).collect();
    if !missing.is_empty() {
        cx.error(*span, format!("the `{}` section needs {} (e.g. `{example}`)", entry.key, list(&missing)));
    }
    Some(found)
}

/// `lsh: { chunk, chunks_before, chunks_after, buckets, hashes }` (HF `lsh_attn_chunk_length`,
/// `lsh_num_chunks_before` / `_after`, `num_buckets`, `num_hashes`).
fn lsh_section(cx: &mut Ctxt, entry: &Entry) -> Option<ReformerLsh> {
    let example = "{ chunk: 64, chunks_before: 1, chunks_after: 0, buckets: 8, hashes: 2 }";
    let keys = section(cx, entry, LSH_KEYS, example)?;
    let chunk = keys.get("chunk").and_then(|e| positive_size(cx, e, MAX_POSITIONS));
    let before = keys.get("chunks_before").and_then(|e| count(cx, e));
    let after = keys.get("chunks_after").and_then(|e| count(cx, e));
    let buckets = keys.get("buckets").and_then(|e| positive_size(cx, e, MAX_BUCKETS));
    let hashes = keys.get("hashes").and_then(|e| positive_size(cx, e, MAX_HASHES));
    if let (Some(b), Some(e)) = (buckets, keys.get("buckets")) {
        buckets_even(cx, b, e);
    }
    Some(ReformerLsh {
        chunk: chunk?,
        chunks_before: before?,
        chunks_after: after?,
        buckets: buckets?,
        hashes: hashes?,
    })
}

/// Rule: a position's bucket is the argmax over `[x·R, −x·R]`, so the buckets come in pairs: an
/// even number, at least 2.
fn buckets_even(cx: &mut Ctxt, buckets: usize, entry: &Entry) {
    if buckets.is_multiple_of(2) {
        return;
    }
    let below = if buckets > 1 { format!("{} or ", buckets - 1) } else { String::new() };
    cx.error(
        entry.value.span(),
        format!(
            "LSH buckets are the argmax over `[x·R, −x·R]`, so they come in pairs: {buckets} is odd (try {below}{})",
            buckets + 1
        ),
    );
}

/// `local: { chunk, chunks_before, chunks_after }` (HF `local_attn_chunk_length`,
/// `local_num_chunks_before` / `_after`).
fn local_section(cx: &mut Ctxt, entry: &Entry) -> Option<ReformerLocal> {
    let keys = section(cx, entry, LOCAL_KEYS, "{ chunk: 64, chunks_before: 1, chunks_after: 0 }")?;
    let chunk = keys.get("chunk").and_then(|e| positive_size(cx, e, MAX_POSITIONS));
    let before = keys.get("chunks_before").and_then(|e| count(cx, e));
    let after = keys.get("chunks_after").and_then(|e| count(cx, e));
    Some(ReformerLocal { chunk: chunk?, chunks_before: before?, chunks_after: after? })
}

/// `axial_positions: { shape: [s0, s1], dims: [d0, d1] }` (HF `axial_pos_shape`,
/// `axial_pos_embds_dim`).
fn axial_section<'a>(cx: &mut Ctxt, entry: &'a Entry) -> Option<([usize; 2], [usize; 2], &'a Entry)> {
    let keys = section(cx, entry, AXIAL_KEYS, "{ shape: [64, 64], dims: [64, 192] }")?;
    let shape = keys.get("shape").and_then(|e| pair(cx, e));
    let dims = keys.get("dims").and_then(|e| pair(cx, e));
    Some((shape?, dims?, entry))
}

/// Rule: axial positions factor the table in two: `shape` and `dims` are two positive numbers.
fn pair(cx: &mut Ctxt, entry: &Entry) -> Option<[usize; 2]> {
    let items = match &entry.value {
        Value::List { items, .. } if items.len() == 2 => items,
        other => {
            cx.error(
                other.span(),
                format!(
                    "axial `{}` is a pair of numbers such as `[8, 8]`, found {}",
                    entry.key,
                    other.describe()
                ),
            );
            return None;
        }
    };
    let mut out = [0; 2];
    for (slot, item) in out.iter_mut().zip(items) {
        match item {
            Value::Int(lit) => match lit.base10_parse::<usize>() {
                Ok(n) if (1..=MAX_POSITIONS).contains(&n) => *slot = n,
                _ => {
                    cx.error(
                        lit.span(),
                        format!("axial `{}` entries are from 1 to {MAX_POSITIONS}, found `{lit}`", entry.key),
                    );
                    return None;
                }
            },
            other => {
                cx.error(
                    other.span(),
                    format!("axial `{}` entries are numbers, found {}", entry.key, other.describe()),
                );
                return None;
            }
        }
    }
    Some(out)
}

/// Rule: the axial table has `shape[0] · shape[1]` positions, and that is `max_positions` (HF
/// asserts the same in `AxialPositionEmbeddings`).
fn axial_shape_covers_the_positions(
    cx: &mut Ctxt,
    shape: [usize; 2],
    max: usize,
    axial: &Entry,
    max_entry: &Entry,
) {
    if shape[0] * shape[1] == max {
        return;
    }
    let at = match &axial.value {
        Value::Section { entries, .. } => {
            entries.iter().find(|e| e.key == "shape").map_or(axial.value.span(), |e| e.value.span())
        }
        other => other.span(),
    };
    cx.error(
        at,
        format!(
            "axial positions factor the position table: {} × {} = {} positions, but `max_positions` is {max}",
            shape[0],
            shape[1],
            shape[0] * shape[1]
        ),
    );
    cx.error(max_entry.value.span(), "`max_positions` given here");
}

/// Rule: a position's embedding is the two axial rows side by side, so `dims` add up to
/// `d_model`.
fn axial_dims_fill_d_model(cx: &mut Ctxt, dims: [usize; 2], d_model: usize, axial: &Entry) {
    if dims[0] + dims[1] == d_model {
        return;
    }
    let at = match &axial.value {
        Value::Section { entries, .. } => {
            entries.iter().find(|e| e.key == "dims").map_or(axial.value.span(), |e| e.value.span())
        }
        other => other.span(),
    };
    cx.error(
        at,
        format!(
            "axial position dims are concatenated into one `d_model` row: {} + {} = {}, but `d_model` is {d_model}",
            dims[0],
            dims[1],
            dims[0] + dims[1]
        ),
    );
}

/// Rule: HF pads every input longer than the shortest chunk to a multiple of the chunk lengths'
/// least common multiple; `max_positions` is such a multiple, so a sequence that fits the table
/// still fits once padded.
fn padding_stays_in_the_table(cx: &mut Ctxt, max: usize, chunks: &[Option<(&str, usize)>], entry: &Entry) {
    let chunks: Vec<(&str, usize)> = chunks.iter().flatten().copied().collect();
    let lcm = chunks.iter().fold(1usize, |acc, &(_, c)| acc / gcd(acc, c) * c);
    if max.is_multiple_of(lcm) {
        return;
    }
    let named: Vec<String> = chunks.iter().map(|(k, c)| format!("`{k}` chunks of {c}")).collect();
    cx.error(
        entry.value.span(),
        format!(
            "inputs are padded to a multiple of {lcm} ({}), so `max_positions` must be one: {max} is not (try {})",
            named.join(" and "),
            max.next_multiple_of(lcm)
        ),
    );
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Rule: `attn_layers`, `lsh`, `local` and `axial_positions` describe a Reformer: on any other
/// model they ask for `weights: reformer`.
pub(super) fn reformer_only_key(key: &str) -> Option<String> {
    ONLY_REFORMER.contains(&key).then(|| {
        format!(
            "`{key}` belongs to Reformer models: declare `weights: reformer` (with `attn_layers`, \
             `axial_positions` and an `lsh` / `local` section), or remove `{key}`"
        )
    })
}
