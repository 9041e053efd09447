//! Encoder-decoder models: two stacks and a head. The encoder is embeddings, `layers` layers and
//! (where the format has one) a final norm; the decoder the same, with a cross-attention sublayer
//! in each layer reading the encoder's output. Each stack's layer is one generated type.

use super::{
    fuse, layer_block, AdditiveKind, AdditivePlan, Block, CrossPlan, Field, FieldKind, Graph, Index,
    LayerPlan, Layout, Linear, Op, Value, Window,
};
use crate::spec::{CrossKind, LmHead, NormKind, Positions, Seq2Seq, Spec, Stack as StackDims, WeightScheme};

/// One stack.
#[derive(Clone, Debug)]
pub struct Stack {
    pub embeddings: Block,
    pub layer: Block,
    pub layers: usize,
    pub final_norm: Option<Block>,
}

/// The whole encoder-decoder model.
#[derive(Clone, Debug)]
pub struct Seq2SeqGraph {
    pub encoder: Stack,
    pub decoder: Stack,
    pub head: Block,
    /// Checkpoint tensors the model knows and deliberately does not use (tied copies).
    pub ignored: Vec<&'static str>,
}

impl Seq2SeqGraph {
    /// Every block, in forward order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        [
            Some(&self.encoder.embeddings),
            Some(&self.encoder.layer),
            self.encoder.final_norm.as_ref(),
            Some(&self.decoder.embeddings),
            Some(&self.decoder.layer),
            self.decoder.final_norm.as_ref(),
            Some(&self.head),
        ]
        .into_iter()
        .flatten()
    }
}

/// Lowers a validated encoder-decoder spec.
pub fn lower(spec: &Spec, s2s: &Seq2Seq) -> Seq2SeqGraph {
    let names = Names::of(spec.weights, spec.activation.is_gated());
    let enc = spec.stack();
    let dec = &s2s.decoder;
    Seq2SeqGraph {
        encoder: stack(spec, &enc, &names.encoder, &names, None, &spec.windows),
        decoder: stack(
            spec,
            dec,
            &names.decoder,
            &names,
            Some((enc.d_model, s2s.cross)),
            &s2s.decoder_windows,
        ),
        head: head(spec, dec, &names),
        ignored: {
            let mut ignored = names.ignored.to_vec();
            // A tied T5 head is `shared`; a checkpoint may still carry the copy.
            if spec.weights == WeightScheme::T5 && spec.lm_head == Some(LmHead::Tied) {
                ignored.push("lm_head.weight");
            }
            ignored
        },
    }
}

/// A `weights: t5` model without sections: T5's encoder alone (Hugging Face `T5EncoderModel`,
/// whose tensors are named as in `T5ForConditionalGeneration`'s encoder), with its relative bias
/// table read from the first layer and shared by all of them.
pub fn encoder_only(spec: &Spec) -> Graph {
    let names = Names::of(spec.weights, spec.activation.is_gated());
    let encoder = stack(spec, &spec.stack(), &names.encoder, &names, None, &spec.windows);
    Graph {
        embeddings: encoder.embeddings,
        layer: encoder.layer,
        layers: encoder.layers,
        other_layers: vec![],
        layer_types: vec![],
        final_norm: encoder.final_norm,
        head: None,
        head_field: "",
        // `T5EncoderModel` may also save its tied copy of `shared`.
        ignored: vec!["encoder.embed_tokens.weight"],
        roots: &[""],
    }
}

fn stack(
    spec: &Spec,
    dims: &StackDims,
    names: &StackNames,
    all: &Names,
    memory: Option<(usize, CrossKind)>,
    windows: &[Option<usize>],
) -> Stack {
    let memory_width = memory.map(|(width, _)| width);
    let d = dims.d_model;
    let causal = memory_width.is_some();
    let norm = match spec.norm.kind {
        NormKind::LayerNorm => FieldKind::LayerNorm { width: d, eps: spec.norm.eps },
        NormKind::RmsNorm => FieldKind::RmsNorm { width: d, eps: spec.norm.eps },
    };
    let inner = dims.inner();
    let in_proj = |first| Layout::InProj { total: 3 * inner, first };
    let linear = |weights: &'static [&'static str], layout| Linear { weights: weights.to_vec(), layout };
    let qkv = match all.layout {
        Layout::InProj { .. } => linear(names.qkv, in_proj(0)),
        layout => linear(names.qkv, layout),
    };
    let cross = memory_width.map(|memory_width| {
        let (q, kv, output, norm) = names.cross.expect("decoder names have a cross-attention");
        let (query, key_value) = match all.layout {
            Layout::InProj { .. } => (linear(q, in_proj(0)), linear(kv, in_proj(inner))),
            layout => (linear(q, layout), linear(kv, layout)),
        };
        let additive = memory.and_then(|(_, kind)| additive_plan(kind, spec.max_positions));
        // The additive kinds' output projection maps the context (memory rows) to d_model.
        let output = if additive.is_some() { ADDITIVE_OUTPUT } else { output };
        CrossPlan { memory_width, additive, query, key_value, output, norm }
    });
    let relative = matches!(spec.positions, Positions::Relative { .. } | Positions::Alibi);
    let plan = LayerPlan {
        d,
        heads: dims.heads,
        kv_heads: dims.heads,
        head_dim: dims.head_dim,
        d_ff: dims.d_ff,
        activation: spec.activation,
        placement: spec.norm.placement,
        norm,
        bias: all.bias,
        layout: match all.layout {
            Layout::InProj { .. } => Layout::Torch,
            layout => layout,
        },
        rope: None,
        parallel: false,
        causal,
        window: Window::of_layers(windows),
        sparse: super::Layouts::Dense,
        relative_bias: relative,
        // T5 folds the 1/sqrt(head_dim) into its query weights.
        scaled: spec.weights != WeightScheme::T5,
        qkv,
        attention_output: names.attention_output,
        attention_norm: names.attention_norm,
        cross,
        intermediate: names.intermediate,
        output: names.output,
        output_norm: names.output_norm,
        suffix: if causal { "DecoderLayer" } else { "EncoderLayer" },
        prefix: names.layer,
    };
    let mut layer = layer_block(&plan);
    layer.cached = causal;
    Stack {
        embeddings: embeddings(spec, dims, names, norm, causal),
        layer,
        layers: dims.layers,
        final_norm: names.final_norm.map(|prefix| Block {
            suffix: if causal { "DecoderFinalNorm" } else { "EncoderFinalNorm" },
            doc: format!("The norm after the {}'s last layer.", side(causal)),
            prefix,
            fields: vec![Field {
                name: "norm",
                doc: "Final norm.",
                kind: norm,
                weights: vec![""],
                split: vec![],
            }],
            ops: vec![Op::Norm { field: "norm", input: Value::stream(d), output: Value::stream(d) }],
            rooted: true,
            output: None,
            cached: false,
        }),
    }
}

/// Module names of an additive or location cross-attention in a `weights: torch` decoder layer
/// (`scripts/reference/additive_seq2seq.py`): `cross_attn` in place of `multihead_attn`, and the
/// context's projection `cross_out` in place of `multihead_attn.out_proj`.
const ADDITIVE_MODULE: &str = "cross_attn";
const ADDITIVE_OUTPUT: &str = "cross_out";

/// The additive or location cross-attention of a decoder layer (none for multi-head).
fn additive_plan(kind: CrossKind, max_source: usize) -> Option<AdditivePlan> {
    let kind = match kind {
        CrossKind::MultiHead => return None,
        CrossKind::Additive { attention_dim } => AdditiveKind::Bahdanau { attention: attention_dim },
        CrossKind::Location => AdditiveKind::Location { max_source },
        CrossKind::LocationSensitive { attention_dim, filters, kernel } => {
            AdditiveKind::LocationSensitive { attention: attention_dim, filters, kernel }
        }
    };
    Some(AdditivePlan { kind, module: ADDITIVE_MODULE, max_source })
}

/// Token embeddings (shared by both stacks), optionally scaled, plus positions and a norm where
/// the format has them, and the stack's score bias (T5's relative bias table, or ALiBi) for its
/// layers' self-attention (cross-attention stays unbiased, as in T5).
fn embeddings(spec: &Spec, dims: &StackDims, names: &StackNames, norm: FieldKind, causal: bool) -> Block {
    let d = dims.d_model;
    let x = Value::stream(d);
    let mut fields = vec![Field {
        name: "word_embeddings",
        doc: "Token embeddings `[vocab_size, d_model]`, shared by encoder and decoder.",
        kind: FieldKind::Embedding { rows: spec.vocab_size, width: d, batched: false },
        weights: vec![names.tokens],
        split: vec![],
    }];
    let mut ops = vec![Op::Gather {
        field: "word_embeddings",
        index: Index::Token,
        output: x,
        accumulate: false,
        offset: 0,
    }];
    if spec.scale_embeddings {
        ops.push(Op::Scale { value: x, factor: (d as f64).sqrt() });
    }
    match spec.positions {
        Positions::Learned => {
            let offset = names.position_offset;
            fields.push(Field {
                name: "position_embeddings",
                doc: "Learned position embeddings `[max_positions + offset, d_model]`.",
                kind: FieldKind::Embedding { rows: spec.max_positions + offset, width: d, batched: false },
                weights: vec![names.positions.expect("learned positions have a name")],
                split: vec![],
            });
            ops.push(Op::Gather {
                field: "position_embeddings",
                index: Index::Position,
                output: x,
                accumulate: true,
                offset,
            });
        }
        Positions::Sinusoidal => {
            fields.push(Field {
                name: "position_embeddings",
                doc: "Fixed sinusoidal positions `[max_positions, d_model]`, computed at load.",
                kind: FieldKind::Sinusoidal { rows: spec.max_positions, width: d },
                weights: vec![],
                split: vec![],
            });
            ops.push(Op::Gather {
                field: "position_embeddings",
                index: Index::Position,
                output: x,
                accumulate: true,
                offset: 0,
            });
        }
        Positions::Relative { buckets, max_distance } => fields.push(Field {
            name: "relative_attention_bias",
            doc: "Relative position bias per head and distance bucket, shared by the stack's layers.",
            kind: FieldKind::RelativeBias {
                heads: dims.heads,
                buckets,
                max_distance,
                bidirectional: !causal,
                max_positions: spec.max_positions,
            },
            weights: vec![names.relative_bias.expect("relative positions have a name")],
            split: vec![],
        }),
        // Encoder: MosaicBERT's symmetric `−slope·|j − p|`; decoder: BLOOM's `slope·(j − p)`.
        Positions::Alibi => fields.push(Field {
            name: "alibi",
            doc: "ALiBi score bias per head and offset, shared by the stack's layers.",
            kind: FieldKind::Alibi {
                heads: dims.heads,
                max_positions: spec.max_positions,
                bidirectional: !causal,
            },
            weights: vec![],
            split: vec![],
        }),
        // Validation gives an encoder-decoder neither.
        Positions::Rope { .. } | Positions::Axial { .. } => {}
    }
    if let Some(norm_name) = names.embeddings_norm {
        fields.push(Field {
            name: "layer_norm",
            doc: "Norm over the summed embeddings.",
            kind: norm,
            weights: vec![norm_name],
            split: vec![],
        });
        ops.push(Op::Norm { field: "layer_norm", input: x, output: x });
    }
    Block {
        suffix: if causal { "DecoderEmbeddings" } else { "EncoderEmbeddings" },
        doc: format!("The {}'s input: token embeddings and positions.", side(causal)),
        prefix: "",
        fields,
        ops: fuse(ops),
        rooted: true,
        output: None,
        cached: causal,
    }
}

fn side(causal: bool) -> &'static str {
    if causal {
        "decoder"
    } else {
        "encoder"
    }
}

/// Decoder states → vocabulary logits.
fn head(spec: &Spec, dec: &StackDims, names: &Names) -> Block {
    let d = dec.d_model;
    let logits = Value { name: "logits", width: spec.vocab_size };
    let tied = spec.lm_head == Some(LmHead::Tied);
    let (weight, layout, bias) = match spec.weights {
        WeightScheme::Bart => (names.encoder.tokens, Layout::BiasAt { bias: "final_logits_bias" }, true),
        WeightScheme::Torch => ("generator", Layout::Torch, true),
        _ if tied => (names.encoder.tokens, Layout::Torch, false),
        _ => ("lm_head", Layout::Torch, false),
    };
    let mut ops = Vec::new();
    // T5 rescales the decoder output by 1/sqrt(d_model) before a tied head.
    if spec.weights == WeightScheme::T5 && tied {
        ops.push(Op::Scale { value: Value::stream(d), factor: 1.0 / (d as f64).sqrt() });
    }
    ops.push(Op::Linear { field: "lm_head", input: Value::stream(d), output: logits, act: None });
    Block {
        suffix: "LmHead",
        doc: if tied {
            "Logits from the shared token embeddings (tied)."
        } else {
            "Logits from the head's own matrix."
        }
        .into(),
        prefix: "",
        fields: vec![Field {
            name: "lm_head",
            doc: "`[d_model → vocab_size]`.",
            kind: FieldKind::Linear { input: d, output: spec.vocab_size, bias, layout },
            weights: vec![weight],
            split: vec![],
        }],
        ops,
        rooted: true,
        output: Some(logits),
        cached: false,
    }
}

/// Where one stack's tensors live.
struct StackNames {
    /// Token table (under the root; both stacks name the shared one).
    tokens: &'static str,
    positions: Option<&'static str>,
    /// Rows before position 0 of a learned table (BART: 2).
    position_offset: usize,
    embeddings_norm: Option<&'static str>,
    relative_bias: Option<&'static str>,
    layer: &'static str,
    qkv: &'static [&'static str],
    attention_output: &'static str,
    attention_norm: &'static str,
    /// Query, key + value, output, norm.
    cross: Option<(&'static [&'static str], &'static [&'static str], &'static str, &'static str)>,
    intermediate: &'static [&'static str],
    output: &'static str,
    output_norm: &'static str,
    final_norm: Option<&'static str>,
}

/// A format's names for both stacks.
struct Names {
    encoder: StackNames,
    decoder: StackNames,
    /// Linear layout of the layers (`InProj` marks `nn.MultiheadAttention`'s packed projections).
    layout: Layout,
    bias: bool,
    ignored: &'static [&'static str],
}

impl Names {
    /// The names of `scheme`: one arm per scheme, each a complete table of both stacks and the
    /// head, so a scheme's names read together against the checkpoint they describe; long
    /// because the data is.
    fn of(scheme: WeightScheme, gated: bool) -> Self {
        match scheme {
            // Hugging Face `T5ForConditionalGeneration`.
            WeightScheme::T5 => Names {
                encoder: StackNames {
                    tokens: "shared",
                    positions: None,
                    position_offset: 0,
                    embeddings_norm: None,
                    relative_bias: Some(
                        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    ),
                    layer: "encoder.block.{i}",
                    qkv: &["layer.0.SelfAttention.q", "layer.0.SelfAttention.k", "layer.0.SelfAttention.v"],
                    attention_output: "layer.0.SelfAttention.o",
                    attention_norm: "layer.0.layer_norm",
                    cross: None,
                    intermediate: if gated {
                        &["layer.1.DenseReluDense.wi_0", "layer.1.DenseReluDense.wi_1"]
                    } else {
                        &["layer.1.DenseReluDense.wi"]
                    },
                    output: "layer.1.DenseReluDense.wo",
                    output_norm: "layer.1.layer_norm",
                    final_norm: Some("encoder.final_layer_norm"),
                },
                decoder: StackNames {
                    tokens: "shared",
                    positions: None,
                    position_offset: 0,
                    embeddings_norm: None,
                    relative_bias: Some(
                        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    ),
                    layer: "decoder.block.{i}",
                    qkv: &["layer.0.SelfAttention.q", "layer.0.SelfAttention.k", "layer.0.SelfAttention.v"],
                    attention_output: "layer.0.SelfAttention.o",
                    attention_norm: "layer.0.layer_norm",
                    cross: Some((
                        &["layer.1.EncDecAttention.q"],
                        &["layer.1.EncDecAttention.k", "layer.1.EncDecAttention.v"],
                        "layer.1.EncDecAttention.o",
                        "layer.1.layer_norm",
                    )),
                    intermediate: if gated {
                        &["layer.2.DenseReluDense.wi_0", "layer.2.DenseReluDense.wi_1"]
                    } else {
                        &["layer.2.DenseReluDense.wi"]
                    },
                    output: "layer.2.DenseReluDense.wo",
                    output_norm: "layer.2.layer_norm",
                    final_norm: Some("decoder.final_layer_norm"),
                },
                layout: Layout::Torch,
                bias: false,
                // Tied copies of `shared` that a checkpoint may also carry.
                ignored: &["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"],
            },
            // Hugging Face `BartForConditionalGeneration`.
            WeightScheme::Bart => {
                let stack = |prefix_layers, positions, norm, relative_bias, cross| StackNames {
                    tokens: "model.shared",
                    positions: Some(positions),
                    position_offset: 2,
                    embeddings_norm: Some(norm),
                    relative_bias: Some(relative_bias),
                    layer: prefix_layers,
                    qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                    attention_output: "self_attn.out_proj",
                    attention_norm: "self_attn_layer_norm",
                    cross,
                    intermediate: &["fc1"],
                    output: "fc2",
                    output_norm: "final_layer_norm",
                    final_norm: None,
                };
                Names {
                    encoder: stack(
                        "model.encoder.layers.{i}",
                        "model.encoder.embed_positions",
                        "model.encoder.layernorm_embedding",
                        "model.encoder.layers.0.self_attn.relative_attention_bias.weight",
                        None,
                    ),
                    decoder: stack(
                        "model.decoder.layers.{i}",
                        "model.decoder.embed_positions",
                        "model.decoder.layernorm_embedding",
                        "model.decoder.layers.0.self_attn.relative_attention_bias.weight",
                        Some((
                            &["encoder_attn.q_proj"],
                            &["encoder_attn.k_proj", "encoder_attn.v_proj"],
                            "encoder_attn.out_proj",
                            "encoder_attn_layer_norm",
                        )),
                    ),
                    layout: Layout::Torch,
                    bias: true,
                    ignored: &[
                        "model.encoder.embed_tokens.weight",
                        "model.decoder.embed_tokens.weight",
                        "lm_head.weight",
                    ],
                }
            }
            // `torch.nn.Transformer` as `transformer`, beside `embedding` and `generator`.
            _ => {
                let stack = |layer, final_norm, relative_bias, cross, output_norm| StackNames {
                    tokens: "embedding",
                    positions: None,
                    position_offset: 0,
                    embeddings_norm: None,
                    relative_bias: Some(relative_bias),
                    layer,
                    qkv: &["self_attn.in_proj"],
                    attention_output: "self_attn.out_proj",
                    attention_norm: "norm1",
                    cross,
                    intermediate: &["linear1"],
                    output: "linear2",
                    output_norm,
                    final_norm: Some(final_norm),
                };
                Names {
                    encoder: stack(
                        "transformer.encoder.layers.{i}",
                        "transformer.encoder.norm",
                        "transformer.encoder.layers.0.self_attn.relative_attention_bias.weight",
                        None,
                        "norm2",
                    ),
                    decoder: stack(
                        "transformer.decoder.layers.{i}",
                        "transformer.decoder.norm",
                        "transformer.decoder.layers.0.self_attn.relative_attention_bias.weight",
                        Some((
                            &["multihead_attn.in_proj"],
                            &["multihead_attn.in_proj"],
                            "multihead_attn.out_proj",
                            "norm2",
                        )),
                        "norm3",
                    ),
                    layout: Layout::InProj { total: 0, first: 0 },
                    bias: true,
                    ignored: &[],
                }
            }
        }
    }
}
