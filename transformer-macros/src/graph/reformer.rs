//! A Reformer (`weights: reformer`, or a composed model the Reformer's rules recognise) as blocks:
//! reversible layers are ops over two residual streams, the stream `x` (`X1`) and the second
//! stream `x2` (`X2`, [`Value::second_stream`]):
//!
//! ```text
//! x2 ← LayerNorm(x2) → attention → output;  x += that      (Y1 = X1 + Attention(X2))
//! x  ← LayerNorm(x)  → dense, act → output; x2 += that      (Y2 = X2 + FeedForward(Y1))
//! ```
//!
//! Layers whose attention kinds differ have different fields (LSH projects `[QK | V]` and holds
//! rotations, local attention projects `[Q | K | V]`), so each kind present is its own layer type
//! ([`Graph::other_layers`], [`Graph::layer_types`]). The embeddings write both streams (word +
//! axial positions, copied); the final norm reads them side by side; the head is untied. Names are
//! Hugging Face's (`reformer.encoder.layers.{i}.attention.self_attention.query_key`, …).

use super::{Block, Chunking, Field, FieldKind, Graph, Index, Layout, Op, Value};
use crate::spec::{Attention, Positions, ReformerAttention, Reversible, Spec};

const EMBEDDINGS: &str = "reformer.embeddings";
const LAYER: &str = "reformer.encoder.layers.{i}";
const FINAL_NORM: &str = "reformer.encoder.layer_norm";

pub fn lower(spec: &Spec, reversible: &Reversible) -> Graph {
    let kinds: Vec<ReformerAttention> = [ReformerAttention::Lsh, ReformerAttention::Local]
        .into_iter()
        .filter(|k| reversible.layers.contains(k))
        .collect();
    let mut layers = kinds.iter().map(|&kind| layer(spec, reversible, kind));
    let first = layers.next().expect("validation requires at least one layer");
    let other_layers: Vec<Block> = layers.collect();
    let layer_types = match other_layers.is_empty() {
        true => vec![],
        false => reversible.layers.iter().map(|k| kinds.iter().position(|x| x == k).unwrap_or(0)).collect(),
    };
    Graph {
        embeddings: embeddings(spec),
        layer: first,
        layers: reversible.layers.len(),
        other_layers,
        layer_types,
        final_norm: Some(final_norm(spec)),
        head: Some(head(spec)),
        head_field: "lm_head",
        ignored: vec![],
        roots: &[""],
    }
}

fn x(spec: &Spec) -> Value {
    Value::stream(spec.d_model)
}

fn x2(spec: &Spec) -> Value {
    Value::second_stream(spec.d_model)
}

/// Both streams of the concatenated final states.
fn wide(spec: &Spec) -> Value {
    Value { name: "wide", width: 2 * spec.d_model }
}

fn layer_norm(name: &'static str, doc: &'static str, width: usize, eps: f64, weights: &'static str) -> Field {
    Field { name, doc, kind: FieldKind::LayerNorm { width, eps }, weights: vec![weights], split: vec![] }
}

fn linear(
    name: &'static str,
    doc: &'static str,
    (input, output): (usize, usize),
    bias: bool,
    weights: Vec<&'static str>,
) -> Field {
    Field {
        name,
        doc,
        kind: FieldKind::Linear { input, output, bias, layout: Layout::Torch },
        weights,
        split: vec![],
    }
}

/// `x = word(id) + axial(slot)` (positions count the padded row, as HF's), then `x2 = x`.
fn embeddings(spec: &Spec) -> Block {
    let (d, x, x2) = (spec.d_model, x(spec), x2(spec));
    let Positions::Axial { shape, dims } = spec.positions else {
        unreachable!("a reversible spec has axial positions (`Reformer::into_spec`)")
    };
    Block {
        suffix: "Embeddings",
        doc: "Token embeddings plus axial positions, written to both streams.".into(),
        prefix: EMBEDDINGS,
        fields: vec![
            Field {
                name: "word_embeddings",
                doc: "`word_embeddings.weight`, `[VOCAB_SIZE, D_MODEL]`.",
                kind: FieldKind::Embedding { rows: spec.vocab_size, width: d, batched: false },
                weights: vec!["word_embeddings"],
                split: vec![],
            },
            Field {
                name: "position_embeddings",
                doc: "`position_embeddings.weights.{0,1}`: `[s0, 1, d0]` and `[1, s1, d1]`.",
                kind: FieldKind::Axial { width: d, shape, dims },
                weights: vec!["position_embeddings"],
                split: vec![],
            },
        ],
        ops: vec![
            Op::Gather {
                field: "word_embeddings",
                index: Index::Token,
                output: x,
                accumulate: false,
                offset: 0,
            },
            Op::Gather {
                field: "position_embeddings",
                index: Index::Slot,
                output: x,
                accumulate: true,
                offset: 0,
            },
            // Both streams start as the embeddings.
            Op::Slice { input: x, start: 0, output: x2 },
        ],
        rooted: false,
        output: None,
        cached: false,
    }
}

/// One reversible layer whose attention is `kind`.
fn layer(spec: &Spec, reversible: &Reversible, kind: ReformerAttention) -> Block {
    let (d, ff, eps) = (spec.d_model, spec.d_ff, spec.norm.eps);
    let (x, x2) = (x(spec), x2(spec));
    let (heads, head_dim, causal) = (spec.heads, spec.head_dim, spec.attention == Attention::Causal);
    let normed = Value { name: "normed", width: d };
    let context = Value { name: "context", width: d };
    let sublayer = Value { name: "sublayer", width: d };
    let hidden = Value { name: "hidden", width: ff };
    let mut fields = vec![layer_norm(
        "attention_norm",
        "`attention.layer_norm`, applied to `x2` before attending.",
        d,
        eps,
        "attention.layer_norm",
    )];
    let (suffix, doc, qkv, attention) = match kind {
        ReformerAttention::Lsh => {
            let lsh = reversible.lsh.expect("validation requires `lsh` for an LSH layer");
            let qkv = Value { name: "query_key_value", width: 2 * d };
            fields.push(linear(
                "query_key_value",
                "`attention.self_attention.query_key` and `.value`: `[QK | V]`, no bias.",
                (d, 2 * d),
                false,
                vec!["attention.self_attention.query_key", "attention.self_attention.value"],
            ));
            fields.push(Field {
                name: "rotations",
                doc: "`attention.self_attention.rotations` from the rotations file, `[heads, head_dim, hashes, buckets / 2]`.",
                kind: FieldKind::Rotations { heads, head_dim, hashes: lsh.hashes, buckets: lsh.buckets },
                weights: vec!["attention.self_attention.rotations"],
                split: vec![],
            });
            let chunking = Chunking { chunk: lsh.chunk, before: lsh.chunks_before, after: lsh.chunks_after };
            let attention = Op::LshAttention {
                rotations: "rotations",
                qkv,
                output: context,
                heads,
                head_dim,
                buckets: lsh.buckets,
                hashes: lsh.hashes,
                chunking,
                causal,
            };
            ("LshLayer", "A reversible layer attending by LSH (hashed, sorted, chunked).", qkv, attention)
        }
        ReformerAttention::Local => {
            let local = reversible.local.expect("validation requires `local` for a local layer");
            let qkv = Value { name: "query_key_value_local", width: 3 * d };
            fields.push(linear(
                "query_key_value",
                "`attention.self_attention.{query,key,value}`: `[Q | K | V]`, no bias.",
                (d, 3 * d),
                false,
                vec![
                    "attention.self_attention.query",
                    "attention.self_attention.key",
                    "attention.self_attention.value",
                ],
            ));
            let chunking =
                Chunking { chunk: local.chunk, before: local.chunks_before, after: local.chunks_after };
            let attention = Op::LocalAttention { qkv, output: context, heads, head_dim, chunking, causal };
            (
                "LocalLayer",
                "A reversible layer attending locally (each chunk and its neighbours).",
                qkv,
                attention,
            )
        }
    };
    fields.extend([
        linear(
            "attention_output",
            "`attention.output.dense`, no bias.",
            (d, d),
            false,
            vec!["attention.output.dense"],
        ),
        layer_norm(
            "feed_forward_norm",
            "`feed_forward.layer_norm`, applied to `x` before the feed-forward.",
            d,
            eps,
            "feed_forward.layer_norm",
        ),
        linear(
            "dense",
            "`feed_forward.dense.dense`; the activation is fused into it.",
            (d, ff),
            true,
            vec!["feed_forward.dense.dense"],
        ),
        linear("output", "`feed_forward.output.dense`.", (ff, d), true, vec!["feed_forward.output.dense"]),
    ]);
    let ops = vec![
        // Y1 = X1 + Attention(X2)
        Op::Norm { field: "attention_norm", input: x2, output: normed },
        Op::Linear { field: "query_key_value", input: normed, output: qkv, act: None },
        attention,
        Op::Linear { field: "attention_output", input: context, output: sublayer, act: None },
        Op::Add { stream: x, sublayer },
        // Y2 = X2 + FeedForward(Y1)
        Op::Norm { field: "feed_forward_norm", input: x, output: normed },
        Op::Linear { field: "dense", input: normed, output: hidden, act: Some(spec.activation) },
        Op::Linear { field: "output", input: hidden, output: sublayer, act: None },
        Op::Add { stream: x2, sublayer },
    ];
    Block { suffix, doc: doc.into(), prefix: LAYER, fields, ops, rooted: false, output: None, cached: false }
}

/// `wide = LayerNorm([x | x2])`.
fn final_norm(spec: &Spec) -> Block {
    let wide = wide(spec);
    Block {
        suffix: "FinalNorm",
        doc: "The LayerNorm over both streams side by side.".into(),
        prefix: FINAL_NORM,
        fields: vec![layer_norm(
            "norm",
            "`reformer.encoder.layer_norm`, over `2 · D_MODEL`.",
            wide.width,
            spec.norm.eps,
            "",
        )],
        ops: vec![
            Op::Concat { inputs: Box::leak(Box::new([x(spec), x2(spec)])), output: wide },
            Op::Norm { field: "norm", input: wide, output: wide },
        ],
        rooted: false,
        output: None,
        cached: false,
    }
}

/// `logits = wide·Wᵀ + b` (`lm_head.decoder.weight`, bias `lm_head.bias`).
fn head(spec: &Spec) -> Block {
    let (wide, logits) = (wide(spec), Value { name: "logits", width: spec.vocab_size });
    Block {
        suffix: "LmHead",
        doc: "From both streams to the vocabulary (`lm_head.decoder.weight`, bias `lm_head.bias`).".into(),
        prefix: "",
        fields: vec![Field {
            name: "decoder",
            doc: "`lm_head.decoder.weight` with the bias `lm_head.bias`.",
            kind: FieldKind::Linear {
                input: wide.width,
                output: spec.vocab_size,
                bias: true,
                layout: Layout::BiasBeside { bias: "lm_head.bias" },
            },
            weights: vec!["lm_head.decoder.weight"],
            split: vec![],
        }],
        ops: vec![Op::Linear { field: "decoder", input: wide, output: logits, act: None }],
        rooted: false,
        output: Some(logits),
        cached: false,
    }
}
