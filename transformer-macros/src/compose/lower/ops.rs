//! A rewritten section with its values placed → the graph's fields and ops: each used field gets
//! a Rust name, then each node becomes its op (one function per node kind that has rules of its
//! own), in order.

use super::buffers::Places;
use super::rewrite::Rewritten;
use super::{ident_name, to_field, ADDITIVE_ALIGNMENTS, ADDITIVE_CROSS, ADDITIVE_SCORES, CROSS_KEY_VALUE};
use crate::compose::program::{AdditiveNode, AttentionNode, CrossNode, Node};
use crate::ctxt::Ctxt;
use crate::graph::{Field, FieldKind, Layouts, Op, Value, Window};
use crate::spec::Sparse;

/// The fields read by the nodes, in order of first use; fields the rewrites replaced are left out.
fn used_fields(s: &Rewritten) -> Vec<usize> {
    let mut used: Vec<usize> = Vec::new();
    for node in &s.nodes {
        let fs: Vec<usize> = match node {
            Node::Gather { field, .. } | Node::Linear { field, .. } | Node::Norm { field, .. } => {
                vec![*field]
            }
            Node::Patches { proj, cls, pos, .. } => {
                [Some(*proj), *cls, Some(*pos)].into_iter().flatten().collect()
            }
            Node::Cross(_) => s.cross_field.into_iter().collect(),
            Node::Additive(a) => vec![a.field],
            _ => vec![],
        };
        for f in fs {
            if !used.contains(&f) {
                used.push(f);
            }
        }
    }
    used
}

/// Field names: the checkpoint name's last segment, or its whole path when that collides; the
/// cross-attention's fields are named as the preset's (`codegen::seq2seq` reads them by name).
fn field_names(s: &Rewritten, used: &[usize]) -> Vec<Option<&'static str>> {
    let fields = &s.fields;
    let mut taken: Vec<String> = vec!["rope".into(), CROSS_KEY_VALUE.into(), ADDITIVE_CROSS.into()];
    let last_segments: Vec<String> = fields
        .iter()
        .map(|f| f.weights.first().map(|w| w.rsplit('.').next().unwrap_or(w).to_string()).unwrap_or_default())
        .collect();
    let mut names: Vec<Option<&'static str>> = vec![None; fields.len()];
    for &f in used {
        let fused = fields[f].weights.len() > 1;
        let collides = used.iter().filter(|&&g| last_segments[g] == last_segments[f]).count() > 1;
        if Some(f) == s.cross_field {
            names[f] = Some(CROSS_KEY_VALUE);
            continue;
        }
        if s.nodes.iter().any(|n| matches!(n, Node::Additive(a) if a.field == f)) {
            names[f] = Some(ADDITIVE_CROSS);
            continue;
        }
        let raw = if fused {
            "qkv".to_string()
        } else if fields[f].weights.is_empty() {
            match fields[f].kind {
                FieldKind::Sinusoidal { .. } => "position_embeddings".to_string(),
                _ => "table".to_string(),
            }
        } else if collides {
            fields[f].weights[0].clone()
        } else {
            last_segments[f].clone()
        };
        names[f] = Some(ident_name(&raw, &mut taken));
    }
    names
}

/// The section's fields and its ops, unfused; `windows` and `layouts` hold each attention's
/// per-layer windows and sparse layouts (empty outside the layer loop).
pub(super) fn fields_and_ops(
    cx: &mut Ctxt,
    s: &Rewritten,
    places: &Places,
    last_use: &[Option<usize>],
    windows: &[Vec<Option<usize>>],
    layouts: &[Vec<Option<Sparse>>],
    rope_positions: usize,
) -> Option<(Vec<Field>, Vec<Op>)> {
    let used = used_fields(s);
    let names = field_names(s, &used);
    let fields = used.iter().map(|&f| to_field(names[f].unwrap_or("field"), &s.fields[f])).collect();
    let mut lowering = OpLowering {
        s,
        places,
        last_use,
        names,
        windows,
        layouts,
        rope_positions,
        fields,
        ops: Vec::new(),
        attention_index: 0,
    };
    for node in &s.nodes {
        lowering.node(cx, node)?;
    }
    Some((lowering.fields, lowering.ops))
}

/// The ops written so far, and what writing the next one needs.
struct OpLowering<'a> {
    s: &'a Rewritten,
    places: &'a Places,
    last_use: &'a [Option<usize>],
    names: Vec<Option<&'static str>>,
    windows: &'a [Vec<Option<usize>>],
    layouts: &'a [Vec<Option<Sparse>>],
    rope_positions: usize,
    /// The section's fields: the nodes' fields, then a rotary table if an attention needs one.
    fields: Vec<Field>,
    ops: Vec<Op>,
    /// Which attention of the section comes next (indexes `windows` and `layouts`).
    attention_index: usize,
}

impl OpLowering<'_> {
    fn field(&self, f: usize) -> &'static str {
        self.names[f].unwrap_or("field")
    }

    fn val(&self, t: usize) -> Value {
        self.places.value(t)
    }

    /// Reports `message` under tensor `t`; `None`, for the caller to return.
    fn error<T>(&self, cx: &mut Ctxt, t: usize, message: &str) -> Option<T> {
        cx.error(self.s.tensors[t].span, message);
        None
    }

    /// Appends `node`'s op (or, for an attention, its ops).
    fn node(&mut self, cx: &mut Ctxt, node: &Node) -> Option<()> {
        let op = match *node {
            Node::Gather { field, index, offset, acc, out } => Op::Gather {
                field: self.field(field),
                index,
                output: self.val(out),
                accumulate: acc.is_some(),
                offset,
            },
            Node::Linear { field, input, out } => Op::Linear {
                field: self.field(field),
                input: self.val(input),
                output: self.val(out),
                act: None,
            },
            Node::Act { out, act, .. } => Op::Activation { value: self.val(out), act },
            Node::Scale { out, factor, .. } => Op::Scale { value: self.val(out), factor },
            Node::Patches { image, proj, cls, pos, .. } => Op::Patches {
                image,
                patches: self.field(proj),
                class_token: cls.map(|f| self.field(f)),
                positions: self.field(pos),
            },
            Node::Pool { out, .. } | Node::Normalize { out, .. } => {
                // `program::interpret` moves pooling out of the tail into the outputs.
                return self.error(cx, out, "a pooled vector is a named output: return a tuple, e.g. `-> (states, embedding)` with `let embedding = normalize(mean_pool(x));`");
            }
            Node::Cross(ref c) => self.cross(cx, c)?,
            Node::Additive(ref a) => self.additive(cx, a)?,
            Node::Glu { input, out, act } => {
                if self.places.on_stream(input) || self.places.on_stream(out) {
                    return self.error(
                        cx,
                        out,
                        "a gated unit reads and writes scratch values, not the stream",
                    );
                }
                Op::Glu { input: self.val(input), output: self.val(out), act }
            }
            Node::Norm { field, input, out } => {
                Op::Norm { field: self.field(field), input: self.val(input), output: self.val(out) }
            }
            Node::Concat { ref inputs, out } => {
                let inputs: Vec<Value> = inputs.iter().map(|&t| self.val(t)).collect();
                Op::Concat { inputs: Box::leak(inputs.into_boxed_slice()), output: self.val(out) }
            }
            Node::Slice { input, start, out } => {
                Op::Slice { input: self.val(input), start, output: self.val(out) }
            }
            Node::Add { a, b, out } => {
                // The sum is written over one operand (the stream, or a dead scratch value); the
                // op adds the other into it.
                let (o, a_v, b_v) = (self.val(out), self.val(a), self.val(b));
                let sublayer = if a_v == o { b_v } else { a_v };
                Op::Add { stream: o, sublayer }
            }
            Node::Attention(ref a) => self.attention(cx, node, a)?,
        };
        self.ops.push(op);
        Some(())
    }

    /// Multi-head cross-attention over the memory's keys and values, projected once per source
    /// by the layer's `cross_key_value` field.
    fn cross(&self, cx: &mut Ctxt, c: &CrossNode) -> Option<Op> {
        if self.places.on_stream(c.q) || self.places.on_stream(c.out) {
            return self.error(cx, c.out, "cross-attention reads projected queries and writes its context into scratch, not the stream: project the stream first");
        }
        Some(Op::CrossAttention {
            q: self.val(c.q),
            kv: CROSS_KEY_VALUE,
            output: self.val(c.out),
            heads: c.heads,
            head_dim: c.head_dim,
            scaled: c.scaled,
        })
    }

    /// Additive or location cross-attention: its scratch is named as the preset's.
    fn additive(&self, cx: &mut Ctxt, a: &AdditiveNode) -> Option<Op> {
        if self.places.on_stream(a.out) {
            return self.error(cx, a.out, "additive cross-attention writes its context into scratch, not the stream: project it (`linear(context, d_model)`) and add that");
        }
        Some(Op::AdditiveCross {
            field: ADDITIVE_CROSS,
            input: self.val(a.input),
            scores: Value { name: ADDITIVE_SCORES, width: a.kind.scratch_width() },
            alignments: Value { name: ADDITIVE_ALIGNMENTS, width: a.max_source },
            output: self.val(a.out),
        })
    }

    /// Self-attention, after rotating its projections when it has rotary positions; its window
    /// and sparse layout are the layers' own when they differ by layer.
    fn attention(&mut self, cx: &mut Ctxt, node: &Node, a: &AttentionNode) -> Option<Op> {
        if self.places.on_stream(a.q) || self.places.on_stream(a.out) {
            return self.error(cx, a.out, "attention reads projections and writes its context into scratch, not the stream: project the stream first");
        }
        if let Some((theta, rotary_dims)) = a.rope {
            self.rope(cx, node, a, theta, rotary_dims)?;
        }
        let window = match self.windows.get(self.attention_index) {
            Some(per_layer) => Window::of_layers(per_layer),
            None => Window::from_option(a.window),
        };
        let sparse = match self.layouts.get(self.attention_index) {
            Some(per_layer) => Layouts::of_layers(per_layer),
            None => Layouts::from_option(a.sparse),
        };
        self.attention_index += 1;
        Some(Op::Attention {
            qkv: self.val(a.q),
            output: self.val(a.out),
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            causal: a.causal,
            window,
            sparse,
            bias: a.bias.is_some(),
            scaled: a.scaled,
        })
    }

    /// Rotary positions: one `rope` table per section (added with the first attention that
    /// rotates), and an op rotating the attention's projections in place.
    fn rope(
        &mut self,
        cx: &mut Ctxt,
        node: &Node,
        a: &AttentionNode,
        theta: f64,
        rotary_dims: usize,
    ) -> Option<()> {
        if self.last_use[a.q] != self.s.nodes.iter().position(|n| n == node) {
            return self.error(
                cx,
                a.q,
                "rotary positions rotate the projections in place: they must not be read after the attention",
            );
        }
        let name = "rope";
        if !self.fields.iter().any(|f| f.name == name) {
            self.fields.push(Field {
                name,
                doc: "Rotary position tables (cos/sin per position), computed at load.",
                kind: FieldKind::Rope {
                    max_positions: self.rope_positions,
                    head_dim: a.head_dim,
                    rotary_dims,
                    theta,
                },
                weights: vec![],
                split: vec![],
            });
        }
        self.ops.push(Op::Rope { field: name, qkv: self.val(a.q), heads: a.heads, kv_heads: a.kv_heads });
        Some(())
    }
}
