//! Composed models: the user writes the forward pass, the macro infers every tensor's shape.
//!
//! ```text
//! transformer::model! {
//!     pub struct Tiny {
//!         vocab_size: 256, max_positions: 64, d_model: 64, heads: 4,
//!         head_dim: d_model / heads,         // derived dims, checked whole
//!         d_ff: 4 * d_model, layers: 4,
//!     }
//!
//!     fn forward(tokens) -> logits {
//!         #[weights = "embed_tokens"]
//!         let x = embedding(tokens, vocab_size, d_model);
//!         #[weights = "layers.{layer}"]
//!         for layer in 0..layers {
//!             let h = layer_norm(x, eps = 1e-5);
//!             …
//!             x = x + attention_out + ffn_out;
//!         }
//!         …
//!         linear(x, vocab_size, bias = false)
//!     }
//! }
//! ```
//!
//! An encoder-decoder writes two passes, each with its own layer loop: `fn encode(tokens) ->
//! memory` and `fn decode(tokens, memory) -> logits`, whose layers read the memory through
//! `attention(q, linear(memory, …), linear(memory, …), heads = …)` (see [`seq2seq`]).
//!
//! An encoder may name its outputs, `fn forward(tokens) -> (states, embedding)`, pooling the final
//! states with `mean_pool` / `max_pool` / `cls` (and `normalize`); an image classifier takes
//! `fn forward(image) -> logits`, embeds with `patch_embedding(image, …)` and ends with
//! `linear(cls(x), labels)` (see [`program`]).
//!
//! A body calling `lsh_attention`, `local_attention` or `axial_positions` is a two-stream
//! reversible Reformer, recognised as the Reformer preset's spec (see [`mod@reformer`]).
//!
//! Phases, mirroring the presets': [`dims`] evaluates the struct's entries as named dims;
//! [`program`] interprets each body into sections of nodes with inferred widths (every mismatch
//! an error under its expression); [`lower`] turns them into the presets' [`crate::graph::Graph`]
//! (or [`Seq2SeqGraph`]) (fusion, buffers), so codegen — and the generated API — is the same.

mod bias;
mod constant;
mod lower;
mod program;
mod reformer;
mod seq2seq;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Ident;

use crate::ast::{Forward, ModelInput, Value};
use crate::ctxt::Ctxt;
use crate::graph::seq2seq::Seq2SeqGraph;
use crate::graph::Graph;
use crate::spec::{Activation, Attention, Norm, NormKind, Output, Placement, Positions, Spec, WeightScheme};
use crate::suggest::closest;
use constant::Const;
use lower::Family;

/// A composed model, lowered to the graph of its family.
pub enum Composed {
    /// `fn forward`: one stack (an encoder or a causal decoder).
    Stack(Spec, Box<Graph>),
    /// `fn forward(tokens) -> (states, embedding)`: an encoder returning the named outputs.
    Outputs(Spec, Box<Graph>, Vec<Output>),
    /// `fn encode` + `fn decode`: an encoder-decoder.
    Seq2Seq(Spec, Box<Seq2SeqGraph>),
}

/// Whether the model is a composed Reformer (its `fn forward` calls `lsh_attention`,
/// `local_attention` or `axial_positions`): [`expand_reformer`] validates it instead of [`expand`].
pub fn is_reformer(input: &ModelInput) -> bool {
    input.functions.iter().any(reformer::declared)
}

/// Validates a composed Reformer and recognises the preset's spec in it (see [`mod@reformer`]).
pub fn expand_reformer(input: &ModelInput) -> Result<crate::spec::Reformer, syn::Error> {
    let forward = input.functions.iter().find(|f| f.name == "forward").or(input.functions.first());
    match forward {
        Some(forward) => reformer::expand(input, forward),
        None => Err(syn::Error::new(
            input.name.span(),
            "a composed Reformer writes `fn forward(tokens) -> logits`",
        )),
    }
}

/// The named dims of the struct.
type Dims = Vec<(Ident, usize)>;

/// Validates and lowers a composed model (`first` is its first pass).
pub fn expand(input: &ModelInput, first: &Forward) -> Result<Composed, syn::Error> {
    let mut cx = Ctxt::new();
    let dims = dims(&mut cx, input);
    match passes(&mut cx, first, &input.functions) {
        Passes::Forward(forward) => stack(cx, input, dims, forward).map(|(s, g, outputs)| match outputs {
            Some(outputs) => Composed::Outputs(s, Box::new(g), outputs),
            None => Composed::Stack(s, Box::new(g)),
        }),
        Passes::Seq2Seq { encode, decode } => {
            seq2seq::expand(cx, input, dims, encode, decode).map(|(s, g)| Composed::Seq2Seq(s, Box::new(g)))
        }
    }
}

/// Which passes the model writes.
enum Passes<'a> {
    Forward(&'a Forward),
    Seq2Seq { encode: Option<&'a Forward>, decode: &'a Forward },
}

/// `fn forward`, or `fn encode` with `fn decode`; every other combination is an error under the
/// pass that does not fit (and interpretation goes on with the closest reading, so its body's
/// errors are reported too).
fn passes<'a>(cx: &mut Ctxt, first: &'a Forward, functions: &'a [Forward]) -> Passes<'a> {
    const NAMES: &[&str] = &["forward", "encode", "decode"];
    let find = |name: &str| functions.iter().find(|f| f.name == name);
    for (i, f) in functions.iter().enumerate() {
        let name = f.name.to_string();
        if functions[..i].iter().any(|g| g.name == f.name) {
            cx.error(f.name.span(), format!("`fn {name}` is written twice"));
        } else if !NAMES.contains(&name.as_str()) {
            let hint = closest(&name, NAMES).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
            cx.error(f.name.span(), format!("unknown pass `fn {name}`{hint}: a composed model writes `fn forward(tokens) -> …`, or `fn encode(tokens) -> memory` and `fn decode(tokens, memory) -> logits`"));
        }
    }
    match (find("forward"), find("encode"), find("decode")) {
        (Some(forward), encode, decode) => {
            for other in [encode, decode].into_iter().flatten() {
                cx.error(other.name.span(), format!("`fn {}` belongs to an encoder-decoder, but this model writes `fn forward`: keep one or the other", other.name));
            }
            Passes::Forward(forward)
        }
        (None, encode, Some(decode)) => {
            // A memory input names what is missing (its interpretation reports it); without one,
            // the pass itself does.
            let memory = decode.inputs.iter().any(|i| *i != "tokens" && *i != "token_types");
            if encode.is_none() && !memory {
                cx.error(decode.name.span(), "an encoder-decoder writes `fn encode(tokens) -> memory { … }` beside `fn decode(tokens, memory) -> logits { … }`");
            }
            Passes::Seq2Seq { encode, decode }
        }
        (None, Some(encode), None) => {
            cx.error(
                encode.name.span(),
                format!(
                    "`fn encode` produces `{}`, but no `fn decode(tokens, {}) -> logits {{ … }}` reads it",
                    encode.output, encode.output
                ),
            );
            Passes::Forward(encode)
        }
        (None, None, None) => Passes::Forward(first),
    }
}

/// A single stack: `fn forward(tokens) -> logits | hidden | (…)`; the outputs of a tuple.
fn stack(
    mut cx: Ctxt,
    input: &ModelInput,
    dims: Dims,
    forward: &Forward,
) -> Result<(Spec, Graph, Option<Vec<Output>>), syn::Error> {
    let family = match forward.output.to_string().as_str() {
        _ if !forward.tuple.is_empty() => Some(Family::Encoder),
        "logits" if forward.inputs.iter().any(|i| i == "image") => Some(Family::Image),
        "logits" => Some(Family::Decoder),
        "hidden" => Some(Family::Encoder),
        other => {
            cx.error(
                forward.output.span(),
                format!("unknown output `{other}`: `-> logits` (a causal language model) or `-> hidden` (per-token states and pooled embeddings)"),
            );
            None
        }
    };
    let program = program::interpret(&mut cx, &dims, forward, None);
    let dim = |name: &str| dim(&dims, name);
    let lowered = match (&program, family) {
        (Some(p), Some(f)) => lower::lower(&mut cx, p, f, dim("max_positions"), forward.output.span(), ""),
        _ => None,
    };
    cx.check()?;
    let Some(l) = lowered else {
        return Err(syn::Error::new(forward.output.span(), "the composed model could not be lowered"));
    };
    let family = family.unwrap_or(Family::Encoder);
    let (heads, kv_heads, head_dim) = l.attention;
    // The standard consts come from the graph; a declared dim of the same name must agree.
    let mut cx = Ctxt::new();
    let image = l.image.is_some();
    agree(
        &mut cx,
        &dims,
        &[
            ("vocab_size", Some(l.vocab_size).filter(|_| !image)),
            ("image_size", l.image.map(|(i, _)| i.image_size)),
            ("patch_size", l.image.map(|(i, _)| i.patch_size)),
            ("channels", l.image.map(|(i, _)| i.channels)),
            ("labels", l.image.map(|(_, c)| c.labels)),
            ("max_positions", l.max_positions),
            ("type_vocab_size", l.type_vocab_size),
            ("d_model", Some(l.d_model)),
            ("heads", Some(heads)),
            ("head_dim", Some(head_dim)),
            ("layers", Some(l.graph.layers)),
        ],
    );
    cx.check()?;
    let mut spec = base_spec(input, &dims, forward.output.span());
    spec.vocab_size = l.vocab_size;
    spec.max_positions = l.max_positions.unwrap_or(0);
    spec.type_vocab_size = l.type_vocab_size;
    spec.d_model = l.d_model;
    (spec.heads, spec.kv_heads, spec.head_dim) = (heads, kv_heads, head_dim);
    spec.layers = l.graph.layers;
    if family == Family::Decoder {
        spec.attention = Attention::Causal;
    }
    if let Some((image, classifier)) = l.image {
        spec.image = Some(image);
        spec.classifier = Some(classifier);
        // Logits rows are as wide as the label set: generated row types point at `labels`.
        if let Some((ident, _)) = dims.iter().find(|(n, _)| n == "labels") {
            spec.vocab_span = ident.span();
        }
    }
    let outputs = program.map(|p| p.outputs).filter(|o| !o.is_empty());
    Ok((spec, l.graph, outputs))
}

fn dim(dims: &Dims, name: &str) -> Option<usize> {
    dims.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// A declared dim named like a standard const (`d_model`, `heads`, …) must be the value the
/// passes make it: `Self::D_MODEL` is one value. The error sits on the declaration.
fn agree(cx: &mut Ctxt, dims: &Dims, derived: &[(&str, Option<usize>)]) {
    for &(name, value) in derived {
        let declared = dims.iter().find(|(n, _)| n == name);
        if let (Some((ident, declared)), Some(value)) = (declared, value) {
            if *declared != value {
                cx.error(
                    ident.span(),
                    format!("`{name}` is declared {declared} but the forward pass makes it {value}; `Self::{}` must be one value", name.to_uppercase()),
                );
            }
        }
    }
}

/// The spec of a composed model before its dims are filled in. Fields the presets' lowering
/// reads (activation, norm, positions, weight scheme) are placeholders: a composed model's graph
/// comes from its passes.
fn base_spec(input: &ModelInput, dims: &Dims, fallback: Span) -> Spec {
    let span_of = |name: &str| dims.iter().find(|(n, _)| n == name).map_or(fallback, |(n, _)| n.span());
    Spec {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        vocab_size: 0,
        max_positions: 0,
        type_vocab_size: None,
        image: None,
        d_model: 0,
        heads: 0,
        head_dim: 0,
        kv_heads: 0,
        windows: Vec::new(),
        sparse: Vec::new(),
        layers: 0,
        d_ff: dim(dims, "d_ff").unwrap_or(0),
        activation: Activation::GeluErf,
        norm: Norm { kind: NormKind::LayerNorm, eps: 1e-5, placement: Placement::Pre },
        positions: Positions::Learned,
        attention: Attention::Bidirectional,
        weights: WeightScheme::Bert,
        lm_head: None,
        classifier: None,
        d_model_span: span_of("d_model"),
        vocab_span: span_of("vocab_size"),
        scale_embeddings: false,
        parallel: false,
        seq2seq: None,
        dims: Some(dims.clone()),
        reversible: None,
    }
}

/// The struct's entries as named dims, in order; each may use the ones before it.
fn dims(cx: &mut Ctxt, input: &ModelInput) -> Dims {
    let mut out: Dims = Vec::new();
    for entry in &input.entries {
        if out.iter().any(|(n, _)| *n == entry.key) {
            cx.error(entry.key.span(), format!("`{}` is declared twice", entry.key));
            continue;
        }
        let expr: syn::Expr = match &entry.value {
            Value::Int(l) => syn::Expr::Lit(syn::ExprLit { attrs: vec![], lit: syn::Lit::Int(l.clone()) }),
            Value::Name(n) => syn::parse_quote!(#n),
            Value::Other(tokens) => match syn::parse2(tokens.clone()) {
                Ok(e) => e,
                Err(e) => {
                    cx.error(e.span(), format!("a dim is an integer expression: {e}"));
                    continue;
                }
            },
            other => {
                cx.error(
                    other.span(),
                    format!(
                        "a dim is a whole number ≥ 1 (or an expression of the dims above), found {}",
                        other.describe()
                    ),
                );
                continue;
            }
        };
        let lookup = |name: &str| out.iter().find(|(n, _)| n == name).map(|(_, v)| Const::Int(*v as i128));
        // A token id may be 0 (T5 decodes from the pad token); every other dim is a size.
        let least = if entry.key == "decoder_start" { 0 } else { 1 };
        match constant::eval(&expr, &lookup) {
            Ok(Const::Int(n)) if (least..=(1 << 40)).contains(&n) => {
                out.push((entry.key.clone(), n as usize))
            }
            Ok(other) => cx.error(
                expr.span(),
                format!("`{}` must be a whole number ≥ {least}, found {}", entry.key, other.describe()),
            ),
            Err(e) => cx.error(e.span(), e),
        }
    }
    out
}
