//! A composed encoder-decoder: `fn encode(tokens) -> memory` and `fn decode(tokens, memory) ->
//! logits`, each interpreted and lowered like a single stack, then joined into the presets'
//! [`Seq2SeqGraph`] so the generated API is theirs (encode once, cross-attention keys and values
//! projected once per source, cached decoding, generation).
//!
//! The rules joining the passes live here: the decoder's layers read the memory through one
//! cross-attention; one vocabulary and one position range serve sources and targets; the
//! decoder's self- and cross-attention have the same heads (one cache width); the start token.

use super::lower::{self, Family, Lowered};
use super::program::{self, Memory};
use super::{agree, base_spec, dim, Dims};
use crate::ast::{Forward, ModelInput};
use crate::ctxt::Ctxt;
use crate::graph::seq2seq::{Seq2SeqGraph, Stack};
use crate::graph::{AdditiveKind, Block, FieldKind, Graph, Op};
use crate::spec::{CrossKind, Seq2Seq, Spec, Stack as StackDims};

pub fn expand(
    mut cx: Ctxt,
    input: &ModelInput,
    dims: Dims,
    encode: Option<&Forward>,
    decode: &Forward,
) -> Result<(Spec, Seq2SeqGraph), syn::Error> {
    if decode.output != "logits" && decode.tuple.is_empty() {
        cx.error(
            decode.output.span(),
            format!(
                "`fn decode` returns `logits` (the vocabulary projection of its stream), found `{}`",
                decode.output
            ),
        );
    }
    let encoded = encode.and_then(|e| program::interpret(&mut cx, &dims, e, None));
    // A tuple (an error of its own) still names the memory the decoder reads: its first name.
    let memory_name = encode.map(|e| e.tuple.first().unwrap_or(&e.output).to_string());
    let memory = memory_name.as_deref().map(|name| Memory {
        name,
        width: encoded.as_ref().and_then(|p| p.tail.output.map(|t| p.tail.tensors[t].width)),
    });
    let decoded = program::interpret(&mut cx, &dims, decode, memory);
    let max_positions = dim(&dims, "max_positions");
    let enc = match (&encoded, encode) {
        (Some(p), Some(e)) => {
            lower::lower(&mut cx, p, Family::Encoder, max_positions, e.output.span(), "Encoder")
        }
        _ => None,
    };
    let dec = decoded.as_ref().and_then(|p| {
        lower::lower(&mut cx, p, Family::Decoder, max_positions, decode.output.span(), "Decoder")
    });
    cx.check()?;
    let (Some(enc), Some(dec), Some(encode)) = (enc, dec, encode) else {
        return Err(syn::Error::new(decode.name.span(), "the composed encoder-decoder could not be lowered"));
    };
    join(input, dims, (encode, enc), (decode, dec))
}

/// Checks the rules joining the two stacks and builds the spec and graph.
fn join(
    input: &ModelInput,
    dims: Dims,
    (encode, enc): (&Forward, Lowered),
    (decode, mut dec): (&Forward, Lowered),
) -> Result<(Spec, Seq2SeqGraph), syn::Error> {
    let mut cx = Ctxt::new();
    let cross = dec.graph.layer.ops.iter().find_map(|op| match *op {
        Op::CrossAttention { heads, head_dim, .. } => Some((heads, head_dim)),
        _ => None,
    });
    let additive = additive_kind(&dec.graph.layer);
    let memory_span =
        decode.inputs.iter().find(|i| *i == &encode.output).map_or(decode.name.span(), |i| i.span());
    let Some((cross_heads, cross_head_dim)) = cross.or(additive.map(|_| (dec.attention.0, dec.attention.2)))
    else {
        return Err(syn::Error::new(
            memory_span,
            format!("`{m}` is never read: a decoder layer reads it through cross-attention, `attention(q, linear({m}, …), linear({m}, …), heads = …)` or `additive_attention(x, {m}, dim = …)`", m = encode.output),
        ));
    };
    let (heads, kv_heads, head_dim) = dec.attention;
    let layer_span = |l: &Lowered| l.loop_span;
    if kv_heads != heads || (heads, head_dim) != (cross_heads, cross_head_dim) {
        cx.error(
            layer_span(&dec),
            format!("the decoder's self-attention ({heads} query and {kv_heads} key/value heads of {head_dim}) and cross-attention ({cross_heads} heads of {cross_head_dim}) must have the same heads: the decoder's cache and memory share one width"),
        );
    }
    if enc.vocab_size != dec.vocab_size {
        cx.error(
            decode.output.span(),
            format!("the decoder embeds {} tokens but the encoder {}: one vocabulary (`VOCAB_SIZE`) serves sources and targets", dec.vocab_size, enc.vocab_size),
        );
    }
    let max_positions = match (enc.max_positions, dec.max_positions) {
        (Some(e), Some(d)) if e != d => {
            cx.error(
                decode.output.span(),
                format!("the decoder's positions cover {d} tokens but the encoder's {e}: one `MAX_POSITIONS` bounds sources and targets (declare `max_positions: …`)"),
            );
            e
        }
        (e, d) => e.or(d).unwrap_or(0),
    };
    let start = dims.iter().find(|(n, _)| n == "decoder_start");
    let decoder_start = match start {
        None => {
            cx.error(decode.name.span(), "an encoder-decoder declares the token decoding starts from: `decoder_start: 2` in the struct");
            0
        }
        Some((ident, v)) if *v >= enc.vocab_size => {
            cx.error(
                ident.span(),
                format!("`decoder_start` is token {v}, outside the vocabulary of {}", enc.vocab_size),
            );
            0
        }
        Some((_, v)) => *v,
    };
    let (enc_heads, _, enc_head_dim) = enc.attention;
    agree(
        &mut cx,
        &dims,
        &[
            ("vocab_size", Some(enc.vocab_size)),
            ("max_positions", Some(max_positions)),
            ("d_model", Some(enc.d_model)),
            ("heads", Some(enc_heads)),
            ("head_dim", Some(enc_head_dim)),
        ],
    );
    cx.check()?;
    let d_ff = dim(&dims, "d_ff").unwrap_or(0);
    let mut spec = base_spec(input, &dims, decode.output.span());
    spec.vocab_size = enc.vocab_size;
    spec.max_positions = max_positions;
    spec.d_model = enc.d_model;
    (spec.heads, spec.kv_heads, spec.head_dim) = (enc_heads, enc_heads, enc_head_dim);
    spec.layers = enc.graph.layers;
    spec.seq2seq = Some(Seq2Seq {
        decoder: StackDims { d_model: dec.d_model, heads, head_dim, layers: dec.graph.layers, d_ff },
        decoder_start: u32::try_from(decoder_start).unwrap_or(0),
        cross: additive.map_or(CrossKind::MultiHead, cross_kind),
        decoder_windows: Vec::new(),
    });
    // Ignored tensors: each pass's, `{layer}` expanded over its own stack's layers.
    let mut ignored = expand_ignored(&enc.graph.ignored, enc.graph.layers);
    ignored.extend(expand_ignored(&dec.graph.ignored, dec.graph.layers));
    let Some(head) = dec.graph.head.take() else {
        return Err(syn::Error::new(decode.output.span(), "internal: a decoder without its head"));
    };
    let stack = |g: Graph| Stack {
        embeddings: g.embeddings,
        layer: g.layer,
        layers: g.layers,
        final_norm: g.final_norm,
    };
    let graph = Seq2SeqGraph { encoder: stack(enc.graph), decoder: stack(dec.graph), head, ignored };
    Ok((spec, graph))
}

/// Names with `{i}` once per layer; others as they are.
fn expand_ignored(names: &[&'static str], layers: usize) -> Vec<&'static str> {
    names
        .iter()
        .flat_map(move |n| {
            if n.contains("{i}") {
                (0..layers).map(|i| lower::intern(&n.replace("{i}", &i.to_string()))).collect()
            } else {
                vec![*n]
            }
        })
        .collect()
}

/// The decoder layer's additive or location cross-attention, if it has one.
fn additive_kind(layer: &Block) -> Option<AdditiveKind> {
    layer.fields.iter().find_map(|f| match f.kind {
        FieldKind::Additive { kind, .. } => Some(kind),
        _ => None,
    })
}

/// The preset's name for an additive kind (the spec records what the decoder's layers do).
fn cross_kind(kind: AdditiveKind) -> CrossKind {
    match kind {
        AdditiveKind::Bahdanau { attention } => CrossKind::Additive { attention_dim: attention },
        AdditiveKind::Location { .. } => CrossKind::Location,
        AdditiveKind::LocationSensitive { attention, filters, kernel } => {
            CrossKind::LocationSensitive { attention_dim: attention, filters, kernel }
        }
    }
}
