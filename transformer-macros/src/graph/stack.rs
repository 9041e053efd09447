//! The single-stack lowering: a preset's spec → embeddings, one layer type, an optional final norm
//! and an optional head (LM or classifier), named after the checkpoint's scheme ([`Names`]).
//! Encoder-decoders and Reformers branch off to [`seq2seq`] and [`reformer`] at the top.

use super::names::Names;
use super::{
    layer_block, reformer, seq2seq, Block, Field, FieldKind, Graph, Index, LayerPlan, Layout, Layouts,
    Linear, Op, Value, Window,
};
use crate::spec::{
    Attention, ImageInput, LmHead, NormKind, Placement, Pooling, Positions, Spec, WeightScheme,
};

/// Lowers a validated spec and fuses; widths are checked by [`check_widths`](super::check_widths).
pub fn lower(spec: &Spec) -> Graph {
    if spec.weights == WeightScheme::T5 {
        return seq2seq::encoder_only(spec);
    }
    if let Some(reversible) = &spec.reversible {
        return reformer::lower(spec, reversible);
    }
    let names = Names::of(spec.weights);
    let norm = match spec.norm.kind {
        NormKind::LayerNorm => FieldKind::LayerNorm { width: spec.d_model, eps: spec.norm.eps },
        NormKind::RmsNorm => FieldKind::RmsNorm { width: spec.d_model, eps: spec.norm.eps },
    };
    let (head, head_field) = match (spec.lm_head, spec.classifier) {
        (Some(head), _) => (Some(lm_head(spec, &names, head)), "lm_head"),
        (None, Some(_)) => (Some(classifier(spec, &names)), "classifier"),
        (None, None) => (None, ""),
    };
    Graph {
        embeddings: match spec.image {
            Some(image) => image_embeddings(spec, &names, image),
            None => embeddings(spec, &names, norm),
        },
        layer: layer(spec, &names, norm),
        layers: spec.layers,
        final_norm: (spec.norm.placement == Placement::Pre).then(|| Block {
            suffix: "FinalNorm",
            doc: "The norm after the last pre-norm layer.".into(),
            prefix: names.final_norm,
            fields: vec![Field {
                name: "norm",
                doc: "Final norm.",
                kind: norm,
                weights: vec![""],
                split: vec![],
            }],
            ops: vec![Op::Norm { field: "norm", input: x(spec), output: x(spec) }],
            rooted: true,
            output: None,
            cached: false,
        }),
        other_layers: vec![],
        layer_types: vec![],
        head,
        head_field,
        ignored: names.ignored.to_vec(),
        roots: names.roots,
    }
}

fn x(spec: &Spec) -> Value {
    Value::stream(spec.d_model)
}

/// Token + position (+ token type) embeddings, then a norm where the scheme has one.
fn embeddings(spec: &Spec, names: &Names, norm: FieldKind) -> Block {
    let (d, x) = (spec.d_model, x(spec));
    let mut fields = vec![Field {
        name: "word_embeddings",
        doc: "Token embeddings `[vocab_size, d_model]`.",
        kind: FieldKind::Embedding { rows: spec.vocab_size, width: d, batched: false },
        weights: vec![names.word_embeddings],
        split: vec![],
    }];
    let mut ops = vec![Op::Gather {
        field: "word_embeddings",
        index: Index::Token,
        output: x,
        accumulate: false,
        offset: 0,
    }];
    let positions = match spec.positions {
        Positions::Learned => Some(Field {
            name: "position_embeddings",
            doc: "Learned position embeddings `[max_positions, d_model]`.",
            kind: FieldKind::Embedding { rows: spec.max_positions, width: d, batched: false },
            weights: vec![names.position_embeddings],
            split: vec![],
        }),
        Positions::Sinusoidal => Some(Field {
            name: "position_embeddings",
            doc: "Fixed sinusoidal positions `[max_positions, d_model]`, computed at load.",
            kind: FieldKind::Sinusoidal { rows: spec.max_positions, width: d },
            weights: vec![],
            split: vec![],
        }),
        // Rotary positions and relative biases live in the attention, not in the embeddings.
        Positions::Rope { .. } | Positions::Relative { .. } | Positions::Alibi => None,
        Positions::Axial { .. } => unreachable!("a Reformer lowers through `graph::reformer`"),
    };
    if let Some(field) = positions {
        fields.push(field);
        ops.push(Op::Gather {
            field: "position_embeddings",
            index: Index::Position,
            output: x,
            accumulate: true,
            offset: 0,
        });
    }
    if let Some(types) = spec.type_vocab_size {
        fields.push(Field {
            name: "token_type_embeddings",
            doc: "Token-type (segment) embeddings `[type_vocab_size, d_model]`.",
            kind: FieldKind::Embedding { rows: types, width: d, batched: false },
            weights: vec![names.token_type_embeddings],
            split: vec![],
        });
        ops.push(Op::Gather {
            field: "token_type_embeddings",
            index: Index::TokenType,
            output: x,
            accumulate: true,
            offset: 0,
        });
    }
    if let Positions::Relative { buckets, max_distance } = spec.positions {
        fields.push(Field {
            name: "relative_attention_bias",
            doc: "Relative position bias per head and distance bucket, shared by every layer.",
            kind: FieldKind::RelativeBias {
                heads: spec.heads,
                buckets,
                max_distance,
                bidirectional: spec.attention == Attention::Bidirectional,
                max_positions: spec.max_positions,
            },
            weights: vec![relative_bias_name(spec.weights)],
            split: vec![],
        });
    }
    if spec.positions == Positions::Alibi {
        fields.push(Field {
            name: "alibi",
            doc: "ALiBi score bias per head and offset, shared by every layer.",
            kind: FieldKind::Alibi {
                heads: spec.heads,
                max_positions: spec.max_positions,
                bidirectional: spec.attention == Attention::Bidirectional,
            },
            weights: vec![],
            split: vec![],
        });
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
        suffix: "Embeddings",
        doc: "Token and position embeddings, summed (and normalised where the checkpoint has a norm).".into(),
        prefix: names.embeddings,
        fields,
        ops,
        rooted: true,
        output: None,
        cached: spec.is_decoder(),
    }
}

/// Images as tokens: unfolded patches through the patch projection, a class token in front when
/// pooling by it, learned positions added.
fn image_embeddings(spec: &Spec, names: &Names, image: ImageInput) -> Block {
    let d = spec.d_model;
    let cls = spec.classifier.is_some_and(|c| c.pooling == Pooling::Cls);
    let mut fields = vec![Field {
        name: "patch_embeddings",
        doc: "Patch projection: the `Conv2d(kernel = stride = patch)` as a GEMM over unfolded patches.",
        kind: FieldKind::Linear {
            input: image.patch_width(),
            output: d,
            bias: true,
            layout: Layout::Conv2d { channels: image.channels, patch: image.patch_size },
        },
        weights: vec![names.patch_embeddings],
        split: vec![],
    }];
    if cls {
        fields.push(Field {
            name: "class_token",
            doc: "The class token prepended to every image's patches (`[1, 1, d_model]`).",
            kind: FieldKind::Embedding { rows: 1, width: d, batched: true },
            weights: vec![names.class_token],
            split: vec![],
        });
    }
    fields.push(Field {
        name: "position_embeddings",
        doc: "Learned positions, one per patch (and class token): `[1, positions, d_model]`.",
        kind: FieldKind::Embedding { rows: spec.max_positions, width: d, batched: true },
        weights: vec![names.position_embeddings],
        split: vec![],
    });
    Block {
        suffix: "Embeddings",
        doc: "Image patches as tokens: unfold, project, prepend the class token, add positions.".into(),
        prefix: names.embeddings,
        fields,
        ops: vec![Op::Patches {
            image,
            patches: "patch_embeddings",
            class_token: cls.then_some("class_token"),
            positions: "position_embeddings",
        }],
        rooted: true,
        output: None,
        cached: false,
    }
}

/// One transformer layer of a single-stack model, from the scheme's names.
fn layer(spec: &Spec, names: &Names, norm: FieldKind) -> Block {
    let qkv_layout = match spec.weights {
        WeightScheme::Bloom | WeightScheme::NeoX => Layout::HeadInterleaved { heads: spec.heads },
        _ => names.layout,
    };
    let plan = LayerPlan {
        d: spec.d_model,
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        head_dim: spec.head_dim(),
        d_ff: spec.d_ff,
        activation: spec.activation,
        placement: spec.norm.placement,
        norm,
        bias: names.bias,
        layout: names.layout,
        rope: match spec.positions {
            Positions::Rope { theta, rotary_dims } => Some((spec.max_positions, theta, rotary_dims)),
            _ => None,
        },
        parallel: spec.parallel,
        causal: spec.attention == Attention::Causal,
        window: Window::of_layers(&spec.windows),
        sparse: Layouts::of_layers(&spec.sparse),
        relative_bias: matches!(spec.positions, Positions::Alibi | Positions::Relative { .. }),
        scaled: true,
        qkv: Linear { weights: names.qkv.to_vec(), layout: qkv_layout },
        attention_output: names.attention_output,
        attention_norm: names.attention_norm,
        cross: None,
        intermediate: names.intermediate,
        output: names.output,
        output_norm: names.output_norm,
        suffix: "Layer",
        prefix: names.layer,
    };
    let mut block = layer_block(&plan);
    block.cached = spec.is_decoder();
    block
}

/// Hidden states → vocabulary logits, tied to the token embeddings or with its own matrix.
fn lm_head(spec: &Spec, names: &Names, head: LmHead) -> Block {
    let logits = Value { name: "logits", width: spec.vocab_size };
    let (prefix, rooted, weight, doc) = match head {
        LmHead::Tied => {
            (names.embeddings, true, names.tied_head, "Logits from the token-embedding matrix (tied).")
        }
        LmHead::Untied => {
            ("", false, names.untied_head, "Logits from the head's own `[vocab_size, d_model]` matrix.")
        }
    };
    Block {
        suffix: "LmHead",
        doc: doc.into(),
        prefix,
        fields: vec![Field {
            name: "lm_head",
            doc: "`[d_model → vocab_size]`, no bias.",
            kind: FieldKind::Linear {
                input: spec.d_model,
                output: spec.vocab_size,
                bias: false,
                layout: Layout::Torch,
            },
            weights: vec![weight],
            split: vec![],
        }],
        ops: vec![Op::Linear { field: "lm_head", input: x(spec), output: logits, act: None }],
        rooted,
        output: Some(logits),
        cached: false,
    }
}

/// Pooled stream → label logits.
fn classifier(spec: &Spec, names: &Names) -> Block {
    let labels = spec.classifier.map_or(1, |c| c.labels);
    let logits = Value { name: "logits", width: labels };
    Block {
        suffix: "Classifier",
        doc: "Pooled hidden state to label logits.".into(),
        prefix: "",
        fields: vec![Field {
            name: "classifier",
            doc: "`[d_model → labels]` with bias.",
            kind: FieldKind::Linear {
                input: spec.d_model,
                output: labels,
                bias: true,
                layout: Layout::Torch,
            },
            weights: vec![names.classifier],
            split: vec![],
        }],
        ops: vec![Op::Linear { field: "classifier", input: x(spec), output: logits, act: None }],
        rooted: false,
        output: Some(logits),
        cached: false,
    }
}

/// Where a single-stack scheme keeps a T5-style relative bias table `[buckets, heads]`, relative
/// to the embeddings block: like T5, in the first layer's self-attention, shared by every layer
/// (`model.layers.0.self_attn…`, `[transformer.]h.0.attn…`, `[gpt_neox.]layers.0.attention…`);
/// BERT's embeddings block sits under `embeddings.`, so its table takes the position table's place
/// there (`embeddings.relative_attention_bias.weight`).
fn relative_bias_name(scheme: WeightScheme) -> &'static str {
    match scheme {
        WeightScheme::Llama => "layers.0.self_attn.relative_attention_bias.weight",
        WeightScheme::Gpt2 => "h.0.attn.relative_attention_bias.weight",
        WeightScheme::NeoX => "layers.0.attention.relative_attention_bias.weight",
        // BERT; `check.rs` rejects relative positions on ViT.
        _ => "relative_attention_bias.weight",
    }
}

/// BERT's masked-LM head, `BertForMaskedLM`'s `cls.predictions`: a dense layer with the model's
/// activation, a LayerNorm, then the decoder — tied to the token embeddings — with a bias of its
/// own (`cls.predictions.bias`). The inference model has no use for it; a `training: masked_lm`
/// trainer builds it.
pub fn masked_lm_head(spec: &Spec) -> Block {
    let (d, x) = (spec.d_model, x(spec));
    let transformed = Value { name: "transformed", width: d };
    let logits = Value { name: "logits", width: spec.vocab_size };
    let linear = |input, output, layout| FieldKind::Linear { input, output, bias: true, layout };
    Block {
        suffix: "MaskedLmHead",
        doc: "BERT's masked-LM head: dense, activation, LayerNorm, tied decoder plus bias.".into(),
        prefix: "cls.predictions",
        fields: vec![
            Field {
                name: "transform_dense",
                doc: "`[d_model → d_model]`, with the model's activation.",
                kind: linear(d, d, Layout::Torch),
                weights: vec!["transform.dense"],
                split: vec![],
            },
            Field {
                name: "transform_norm",
                doc: "LayerNorm after the dense layer.",
                kind: FieldKind::LayerNorm { width: d, eps: spec.norm.eps },
                weights: vec!["transform.LayerNorm"],
                split: vec![],
            },
            Field {
                name: "decoder",
                doc: "`[d_model → vocab_size]`: the token embeddings (tied), plus its own bias.",
                kind: linear(d, spec.vocab_size, Layout::BiasBeside { bias: "bias" }),
                weights: vec!["decoder"],
                split: vec![],
            },
        ],
        ops: super::fuse(vec![
            Op::Linear { field: "transform_dense", input: x, output: transformed, act: None },
            Op::Activation { value: transformed, act: spec.activation },
            Op::Norm { field: "transform_norm", input: transformed, output: transformed },
            Op::Linear { field: "decoder", input: transformed, output: logits, act: None },
        ]),
        rooted: false,
        output: Some(logits),
        cached: false,
    }
}
