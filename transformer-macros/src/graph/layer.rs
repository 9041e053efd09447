//! Every preset's layer, from a [`LayerPlan`]: the single-stack presets ([`super::stack`]) and
//! both stacks of an encoder-decoder ([`super::seq2seq`]) describe their layer as a plan, and
//! [`layer_block`] decides its fields, its sublayers' ops and how their residuals and norms are
//! arranged, each in its own function below.

use super::{fuse, AdditiveKind, Block, Field, FieldKind, Layout, Layouts, Op, Value, Window};
use crate::spec::{Activation, Placement};

/// A linear field's checkpoint names (one per fused part) and layout.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weights: Vec<&'static str>,
    pub layout: Layout,
}

/// A decoder layer's cross-attention sublayer: query, memory key/value (applied once per source),
/// output projection and norm.
#[derive(Clone, Debug)]
pub struct CrossPlan {
    pub memory_width: usize,
    /// An additive or location kind instead of multi-head attention (`query` and `key_value`
    /// are then unused; `output` projects the context from the memory's width).
    pub additive: Option<AdditivePlan>,
    pub query: Linear,
    pub key_value: Linear,
    pub output: &'static str,
    pub norm: &'static str,
}

/// An additive or location cross-attention sublayer: the module (checkpoint name relative to the
/// layer) and the longest source its alignments cover.
#[derive(Clone, Copy, Debug)]
pub struct AdditivePlan {
    pub kind: AdditiveKind,
    pub module: &'static str,
    pub max_source: usize,
}

/// Everything that decides a layer's fields and ops.
#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub d: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub activation: Activation,
    pub placement: Placement,
    pub norm: FieldKind,
    /// Whether the linears have biases.
    pub bias: bool,
    /// How the single (unfused) linears are stored.
    pub layout: Layout,
    /// Rotary positions: `(max_positions, theta, rotary_dims)`.
    pub rope: Option<(usize, f64, usize)>,
    /// Attention and feed-forward both read the layer's input and add to it together.
    pub parallel: bool,
    pub causal: bool,
    pub window: Window,
    pub sparse: Layouts,
    /// The self-attention adds the stack's relative position bias.
    pub relative_bias: bool,
    /// Scores are scaled by `1/sqrt(head_dim)`.
    pub scaled: bool,
    pub qkv: Linear,
    pub attention_output: &'static str,
    pub attention_norm: &'static str,
    pub cross: Option<CrossPlan>,
    /// One name, or gate then up for gated feed-forwards.
    pub intermediate: &'static [&'static str],
    pub output: &'static str,
    pub output_norm: &'static str,
    pub suffix: &'static str,
    pub prefix: &'static str,
}

/// One transformer layer: self-attention, (cross-attention,) feed-forward, each with a residual
/// and a norm, placed before (pre-norm) or after (post-norm) the sublayer.
pub fn layer_block(p: &LayerPlan) -> Block {
    let mut fields = attention_fields(p);
    fields.extend(cross_fields(p));
    fields.extend(feed_forward_fields(p));
    fields.extend(rope_field(p));
    let sublayers = sublayers(p);
    let ops = match p.placement {
        _ if p.parallel => parallel_residuals(p, &sublayers),
        Placement::Post => post_norm_residuals(p, &sublayers),
        Placement::Pre => pre_norm_residuals(p, &sublayers),
    };
    Block {
        suffix: p.suffix,
        doc: layer_doc(p).into(),
        prefix: p.prefix,
        fields,
        ops: fuse(ops),
        rooted: true,
        output: None,
        cached: false,
    }
}

/// The values a layer's ops pass along: the stream, and the scratch between a sublayer's steps.
struct Values {
    stream: Value,
    /// `[Q | K | V]`: grouped-query K and V are `kv_heads` wide, Q `heads` wide.
    qkv: Value,
    /// The attention heads' output, before its projection (cross-attention reuses it).
    context: Value,
    /// Either attention's projected output, added to the stream.
    attention_out: Value,
    /// A gated feed-forward's `[gate | up]`.
    gate_up: Value,
    intermediate: Value,
    ffn_out: Value,
    /// A sublayer's normalised input (pre-norm and parallel layers).
    normed: Value,
    cross_q: Value,
}

impl Values {
    fn of(p: &LayerPlan) -> Self {
        let d = p.d;
        let inner = p.heads * p.head_dim;
        let kv_width = p.kv_heads * p.head_dim;
        Values {
            stream: Value::stream(d),
            qkv: Value { name: "qkv", width: inner + 2 * kv_width },
            context: Value { name: "context", width: inner },
            attention_out: Value { name: "attention_out", width: d },
            gate_up: Value { name: "gate_up", width: 2 * p.d_ff },
            intermediate: Value { name: "intermediate", width: p.d_ff },
            ffn_out: Value { name: "ffn_out", width: d },
            normed: Value { name: "normed", width: d },
            cross_q: Value { name: "cross_q", width: inner },
        }
    }
}

/// A linear field `input → output`, with biases where the plan's linears have them.
fn linear_field(
    p: &LayerPlan,
    name: &'static str,
    doc: &'static str,
    (input, output): (usize, usize),
    linear: &Linear,
    split: Vec<usize>,
) -> Field {
    Field {
        name,
        doc,
        kind: FieldKind::Linear { input, output, bias: p.bias, layout: linear.layout },
        weights: linear.weights.clone(),
        split,
    }
}

/// A norm field of the plan's kind.
fn norm_field(p: &LayerPlan, name: &'static str, doc: &'static str, weight: &'static str) -> Field {
    Field { name, doc, kind: p.norm, weights: vec![weight], split: vec![] }
}

/// An unfused linear, stored in the plan's layout.
fn plain(p: &LayerPlan, weights: &[&'static str]) -> Linear {
    Linear { weights: weights.to_vec(), layout: p.layout }
}

/// The self-attention's fields: Q, K and V as one GEMM, the output projection, the norm.
fn attention_fields(p: &LayerPlan) -> Vec<Field> {
    let (d, inner, kv_width) = (p.d, p.heads * p.head_dim, p.kv_heads * p.head_dim);
    let qkv = Values::of(p).qkv;
    // Grouped-query projections have narrower K and V parts than Q.
    let qkv_split = if p.qkv.weights.len() == 3 { vec![inner, kv_width, kv_width] } else { vec![] };
    vec![
        linear_field(
            p,
            "qkv",
            "Query, key and value projections as one GEMM.",
            (d, qkv.width),
            &p.qkv,
            qkv_split,
        ),
        linear_field(
            p,
            "attention_output",
            "Attention output projection.",
            (inner, d),
            &plain(p, &[p.attention_output]),
            vec![],
        ),
        norm_field(p, "attention_norm", "Norm of the attention sublayer.", p.attention_norm),
    ]
}

/// A decoder layer's cross-attention fields: an additive or location module and the projection
/// of its context (memory width → `d_model`), or multi-head query, memory key/value and output
/// projections; then the sublayer's norm.
fn cross_fields(p: &LayerPlan) -> Vec<Field> {
    let (d, inner) = (p.d, p.heads * p.head_dim);
    match &p.cross {
        None => vec![],
        Some(cross @ CrossPlan { additive: Some(additive), .. }) => vec![
            Field {
                name: "cross_attention",
                doc: "Additive or location cross-attention over the encoder's rows.",
                kind: FieldKind::Additive { kind: additive.kind, query: d, memory: cross.memory_width },
                weights: vec![additive.module],
                split: vec![],
            },
            linear_field(
                p,
                "cross_output",
                "Cross-attention output projection of the context (memory width → d_model).",
                (cross.memory_width, d),
                &plain(p, &[cross.output]),
                vec![],
            ),
            norm_field(p, "cross_norm", "Norm of the cross-attention sublayer.", cross.norm),
        ],
        Some(cross) => vec![
            linear_field(
                p,
                "cross_query",
                "Cross-attention query projection.",
                (d, inner),
                &cross.query,
                vec![],
            ),
            linear_field(
                p,
                "cross_key_value",
                "Cross-attention key and value projections of the encoder output, applied once per source.",
                (cross.memory_width, 2 * inner),
                &cross.key_value,
                vec![],
            ),
            linear_field(
                p,
                "cross_output",
                "Cross-attention output projection.",
                (inner, d),
                &plain(p, &[cross.output]),
                vec![],
            ),
            norm_field(p, "cross_norm", "Norm of the cross-attention sublayer.", cross.norm),
        ],
    }
}

/// The feed-forward's fields: the up-projection (gate and up as one GEMM when gated), the
/// down-projection, the norm.
fn feed_forward_fields(p: &LayerPlan) -> Vec<Field> {
    let (d, intermediate) = (p.d, plain(p, p.intermediate));
    let up = if p.activation.is_gated() {
        let gate_up = Values::of(p).gate_up;
        linear_field(
            p,
            "intermediate",
            "Feed-forward gate and up projections as one GEMM to `2·d_ff`.",
            (d, gate_up.width),
            &intermediate,
            vec![],
        )
    } else {
        linear_field(
            p,
            "intermediate",
            "Feed-forward up-projection to `d_ff`.",
            (d, p.d_ff),
            &intermediate,
            vec![],
        )
    };
    vec![
        up,
        linear_field(
            p,
            "output",
            "Feed-forward down-projection back to `d_model`.",
            (p.d_ff, d),
            &plain(p, &[p.output]),
            vec![],
        ),
        norm_field(p, "output_norm", "Norm of the feed-forward sublayer.", p.output_norm),
    ]
}

/// The rotary tables, when the plan has rotary positions.
fn rope_field(p: &LayerPlan) -> Option<Field> {
    let (max_positions, theta, rotary_dims) = p.rope?;
    Some(Field {
        name: "rope",
        doc: "Rotary position tables (cos/sin per position), computed at load.",
        kind: FieldKind::Rope { max_positions, head_dim: p.head_dim, rotary_dims, theta },
        weights: vec![],
        split: vec![],
    })
}

/// Self-attention of `input`: Q, K and V in one GEMM, rotary positions, the heads, the output
/// projection into `attention_out`.
fn attention_ops(p: &LayerPlan, input: Value) -> Vec<Op> {
    let Values { qkv, context, attention_out, .. } = Values::of(p);
    let mut ops = vec![Op::Linear { field: "qkv", input, output: qkv, act: None }];
    if p.rope.is_some() {
        ops.push(Op::Rope { field: "rope", qkv, heads: p.heads, kv_heads: p.kv_heads });
    }
    ops.push(Op::Attention {
        qkv,
        output: context,
        heads: p.heads,
        kv_heads: p.kv_heads,
        head_dim: p.head_dim,
        causal: p.causal,
        window: p.window,
        sparse: p.sparse,
        bias: p.relative_bias,
        scaled: p.scaled,
    });
    ops.push(Op::Linear { field: "attention_output", input: context, output: attention_out, act: None });
    ops
}

/// Additive or location cross-attention of `input` over the encoder's rows, its context (the
/// memory's width) projected into `attention_out`.
fn additive_cross_ops(p: &LayerPlan, input: Value) -> Vec<Op> {
    let Some(CrossPlan { additive: Some(additive), memory_width, .. }) = &p.cross else {
        return Vec::new();
    };
    let context = Value { name: "cross_context", width: *memory_width };
    vec![
        Op::AdditiveCross {
            field: "cross_attention",
            input,
            scores: Value { name: "cross_scores", width: additive.kind.scratch_width() },
            alignments: Value { name: "alignments", width: additive.max_source },
            output: context,
        },
        Op::Linear { field: "cross_output", input: context, output: Values::of(p).attention_out, act: None },
    ]
}

/// Multi-head cross-attention of `input`: its queries over the memory's keys and values (projected
/// once per source, outside the layer), the output projection into `attention_out`.
fn multi_head_cross_ops(p: &LayerPlan, input: Value) -> Vec<Op> {
    let Values { context, attention_out, cross_q, .. } = Values::of(p);
    vec![
        Op::Linear { field: "cross_query", input, output: cross_q, act: None },
        Op::CrossAttention {
            q: cross_q,
            kv: "cross_key_value",
            output: context,
            heads: p.heads,
            head_dim: p.head_dim,
            scaled: p.scaled,
        },
        Op::Linear { field: "cross_output", input: context, output: attention_out, act: None },
    ]
}

/// The feed-forward of `input` into `ffn_out`: up-projection, activation (a gated unit over
/// `[gate | up]`, or one fused into the GEMM by [`fuse`]), down-projection.
fn feed_forward_ops(p: &LayerPlan, input: Value) -> Vec<Op> {
    let Values { gate_up, intermediate, ffn_out, .. } = Values::of(p);
    if p.activation.is_gated() {
        vec![
            Op::Linear { field: "intermediate", input, output: gate_up, act: None },
            Op::Glu { input: gate_up, output: intermediate, act: p.activation },
            Op::Linear { field: "output", input: intermediate, output: ffn_out, act: None },
        ]
    } else {
        vec![
            Op::Linear { field: "intermediate", input, output: intermediate, act: None },
            Op::Activation { value: intermediate, act: p.activation },
            Op::Linear { field: "output", input: intermediate, output: ffn_out, act: None },
        ]
    }
}

/// A sublayer as the residual arrangement sees it: its ops over an input (the stream, or its
/// normalised copy), its norm, and the value it adds to the stream.
struct Sublayer {
    ops: fn(&LayerPlan, Value) -> Vec<Op>,
    norm: &'static str,
    output: Value,
}

/// The layer's sublayers in order: self-attention, cross-attention of the plan's kind (decoder
/// layers), feed-forward.
fn sublayers(p: &LayerPlan) -> Vec<Sublayer> {
    let Values { attention_out, ffn_out, .. } = Values::of(p);
    let mut sublayers = vec![Sublayer { ops: attention_ops, norm: "attention_norm", output: attention_out }];
    match &p.cross {
        Some(CrossPlan { additive: Some(_), .. }) => {
            sublayers.push(Sublayer { ops: additive_cross_ops, norm: "cross_norm", output: attention_out });
        }
        Some(_) => {
            sublayers.push(Sublayer { ops: multi_head_cross_ops, norm: "cross_norm", output: attention_out })
        }
        None => {}
    }
    sublayers.push(Sublayer { ops: feed_forward_ops, norm: "output_norm", output: ffn_out });
    sublayers
}

/// `x = x + attention(norm₁(x)) + ffn(norm₂(x))`: every sublayer reads x before any adds.
fn parallel_residuals(p: &LayerPlan, sublayers: &[Sublayer]) -> Vec<Op> {
    let Values { stream: x, normed, .. } = Values::of(p);
    let mut ops = Vec::new();
    for sublayer in sublayers {
        ops.push(Op::Norm { field: sublayer.norm, input: x, output: normed });
        ops.extend((sublayer.ops)(p, normed));
    }
    ops.extend(sublayers.iter().map(|sublayer| Op::Add { stream: x, sublayer: sublayer.output }));
    ops
}

/// Post-norm, each sublayer in turn: `x = norm(x + sublayer(x))`.
fn post_norm_residuals(p: &LayerPlan, sublayers: &[Sublayer]) -> Vec<Op> {
    let x = Values::of(p).stream;
    let mut ops = Vec::new();
    for sublayer in sublayers {
        ops.extend((sublayer.ops)(p, x));
        ops.push(Op::Add { stream: x, sublayer: sublayer.output });
        ops.push(Op::Norm { field: sublayer.norm, input: x, output: x });
    }
    ops
}

/// Pre-norm, each sublayer in turn: `x = x + sublayer(norm(x))`.
fn pre_norm_residuals(p: &LayerPlan, sublayers: &[Sublayer]) -> Vec<Op> {
    let Values { stream: x, normed, .. } = Values::of(p);
    let mut ops = Vec::new();
    for sublayer in sublayers {
        ops.push(Op::Norm { field: sublayer.norm, input: x, output: normed });
        ops.extend((sublayer.ops)(p, normed));
        ops.push(Op::Add { stream: x, sublayer: sublayer.output });
    }
    ops
}

/// The layer type's doc: its residual arrangement as a formula.
fn layer_doc(p: &LayerPlan) -> &'static str {
    match (p.placement, p.cross.is_some()) {
        _ if p.parallel => {
            "One layer, parallel residual: `x = x + attention(norm₁(x)) + ffn(norm₂(x))`."
        }
        (Placement::Post, false) => "One layer, post-norm: `x = norm(x + attention(x)); x = norm(x + ffn(x))`.",
        (Placement::Pre, false) => "One layer, pre-norm: `x = x + attention(norm(x)); x = x + ffn(norm(x))`.",
        (Placement::Post, true) => {
            "One decoder layer, post-norm: `x = norm(x + attention(x)); x = norm(x + cross(x, memory)); x = norm(x + ffn(x))`."
        }
        (Placement::Pre, true) => {
            "One decoder layer, pre-norm: `x = x + attention(norm(x)); x = x + cross(norm(x), memory); x = x + ffn(norm(x))`."
        }
    }
}
