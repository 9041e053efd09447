//! Graph-level rewrites of one section, before any value is given a buffer: three projections of
//! one tensor feeding an attention become one QKV GEMM; a cross-attention's two projections of the
//! memory become one field that the generated `encode` applies once per source (so they leave the
//! layer's ops); an embedding lookup added to a value becomes an accumulating gather.

use proc_macro2::Span;

use super::{lfield, LField};
use crate::compose::program::{AttentionNode, CrossNode, Node, Section, Tensor};
use crate::ctxt::Ctxt;
use crate::graph::{FieldKind, Layout};

/// A section after the rewrites: its tensors and fields with the fused ones appended, and its
/// nodes with the fused projections removed.
pub(super) struct Rewritten {
    pub(super) tensors: Vec<Tensor>,
    pub(super) fields: Vec<LField>,
    pub(super) nodes: Vec<Node>,
    /// The field projecting the memory to a multi-head cross-attention's keys and values.
    pub(super) cross_field: Option<usize>,
}

impl Rewritten {
    /// The index of the node that writes `t` (each tensor is written once).
    pub(super) fn writer(&self, t: usize) -> Option<usize> {
        self.nodes.iter().position(|n| n.out() == t)
    }

    /// How many times `t` is read: by the nodes, and once more when it is the section's result.
    fn readers(&self, t: usize, output: Option<usize>) -> usize {
        self.nodes.iter().filter(|n| n.inputs().contains(&t)).count() + usize::from(output == Some(t))
    }

    /// The projection writing `t`, when `t` is read only once: `(node, field, input)`.
    fn lone_linear(&self, t: usize, output: Option<usize>) -> Option<(usize, usize, usize)> {
        match self.writer(t).map(|d| (d, &self.nodes[d])) {
            Some((d, Node::Linear { field, input, .. })) if self.readers(t, output) == 1 => {
                Some((d, *field, *input))
            }
            _ => None,
        }
    }

    /// The plain lookup writing `t`, when `t` is read only once.
    fn lone_gather(&self, t: usize, output: Option<usize>) -> Option<usize> {
        match self.writer(t).map(|d| (d, &self.nodes[d])) {
            Some((d, Node::Gather { acc: None, .. })) if self.readers(t, output) == 1 => Some(d),
            _ => None,
        }
    }
}

/// Applies every rewrite to `sec`, in order: QKV fusion, the cross-attention's memory
/// projections, accumulating lookups.
pub(super) fn rewrite(cx: &mut Ctxt, sec: &Section) -> Option<Rewritten> {
    let mut s = Rewritten {
        tensors: sec.tensors.clone(),
        fields: sec.fields.iter().map(lfield).collect(),
        nodes: sec.nodes.clone(),
        cross_field: None,
    };
    fuse_qkv(cx, sec, &mut s)?;
    if !one_cross_attention(cx, &s.nodes, &s.tensors) {
        return None;
    }
    fuse_cross_key_value(cx, sec, &mut s)?;
    accumulate_lookups(sec, &mut s);
    Some(s)
}

/// Three projections of one tensor feeding an attention: one fused GEMM.
fn fuse_qkv(cx: &mut Ctxt, sec: &Section, s: &mut Rewritten) -> Option<()> {
    let mut i = 0;
    while i < s.nodes.len() {
        let unfused = match &s.nodes[i] {
            Node::Attention(a) if a.kv.is_some() => Some(a.clone()),
            _ => None,
        };
        if let Some(a) = unfused {
            i = fuse_attention_projections(cx, sec, s, i, a)?;
        }
        i += 1;
    }
    Some(())
}

/// Both nn.Linear-layout linears, with a bias or without alike: one GEMM can compute them.
fn same_torch_linear(x: &FieldKind, y: &FieldKind) -> bool {
    match (x, y) {
        (
            FieldKind::Linear { bias: b1, layout: Layout::Torch, .. },
            FieldKind::Linear { bias: b2, layout: Layout::Torch, .. },
        ) => b1 == b2,
        _ => false,
    }
}

/// Rewrites the attention `a` at node `at`, whose q, k and v are three projections, to read one
/// fused `qkv` tensor: the first of the projections becomes the fused GEMM (its field has the
/// three checkpoint parts, split by width), the other two are removed. Returns `at`'s new index.
fn fuse_attention_projections(
    cx: &mut Ctxt,
    sec: &Section,
    s: &mut Rewritten,
    at: usize,
    mut a: AttentionNode,
) -> Option<usize> {
    let Some((k, v)) = a.kv else {
        return Some(at);
    };
    let parts: Vec<Option<(usize, usize, usize)>> =
        [a.q, k, v].iter().map(|&t| s.lone_linear(t, sec.output)).collect();
    let fusable = parts.iter().all(Option::is_some) && {
        let p: Vec<(usize, usize, usize)> = parts.iter().flatten().copied().collect();
        p[0].2 == p[1].2
            && p[0].2 == p[2].2
            && same_torch_linear(&s.fields[p[0].1].kind, &s.fields[p[1].1].kind)
            && same_torch_linear(&s.fields[p[0].1].kind, &s.fields[p[2].1].kind)
    };
    if !fusable {
        cx.error(s.tensors[a.out].span, "`attention(q, k, v)` fuses its projections into one GEMM: q, k and v must each be an nn.Linear-layout `linear` of the same tensor, used only here (or pass one fused `qkv`)");
        return None;
    }
    let p: Vec<(usize, usize, usize)> = parts.into_iter().flatten().collect();
    let widths: Vec<usize> = [a.q, k, v].iter().map(|&t| s.tensors[t].width).collect();
    let FieldKind::Linear { input, bias, .. } = s.fields[p[0].1].kind else {
        unreachable!("checked by `same_torch_linear`")
    };
    let weights = p.iter().flat_map(|&(_, f, _)| s.fields[f].weights.clone()).collect();
    s.fields.push(LField {
        kind: FieldKind::Linear { input, output: widths.iter().sum(), bias, layout: Layout::Torch },
        weights,
        split: widths.clone(),
    });
    let fused_field = s.fields.len() - 1;
    s.tensors.push(Tensor {
        width: widths.iter().sum(),
        span: s.tensors[a.q].span,
        hint: "qkv".into(),
        memory: false,
        pooled: false,
    });
    let qkv = s.tensors.len() - 1;
    a.q = qkv;
    a.kv = None;
    s.nodes[at] = Node::Attention(a);
    let first = p.iter().map(|&(d, _, _)| d).min().unwrap_or(0);
    s.nodes[first] = Node::Linear { field: fused_field, input: p[0].2, out: qkv };
    let mut drop: Vec<usize> = p.iter().map(|&(d, _, _)| d).filter(|&d| d != first).collect();
    drop.sort_unstable_by(|a, b| b.cmp(a));
    let mut at = at;
    for d in drop {
        s.nodes.remove(d);
        if d < at {
            at -= 1;
        }
    }
    Some(at)
}

/// Rule: a decoder layer reads the memory through one cross-attention, multi-head or additive
/// (one memory projection per layer, one `cross_attention` field).
fn one_cross_attention(cx: &mut Ctxt, nodes: &[Node], tensors: &[Tensor]) -> bool {
    let crosses: Vec<usize> = nodes
        .iter()
        .filter_map(|n| match n {
            Node::Cross(c) => Some(c.out),
            Node::Additive(a) => Some(a.out),
            _ => None,
        })
        .collect();
    match crosses.get(1) {
        Some(&second) => {
            cx.error(tensors[second].span, "a decoder layer has one cross-attention (the memory's keys are one projection per layer): multi-head `attention(q, linear(memory, …), linear(memory, …))` or one of the additive kinds");
            false
        }
        None => true,
    }
}

/// Cross-attention: its key and value projections of the memory become one field that
/// `encode` applies once per source (see `codegen::seq2seq`), so they leave the layer's ops.
fn fuse_cross_key_value(cx: &mut Ctxt, sec: &Section, s: &mut Rewritten) -> Option<()> {
    let mut i = 0;
    while i < s.nodes.len() {
        let cross = match &s.nodes[i] {
            Node::Cross(c) => Some(c.clone()),
            _ => None,
        };
        if let Some(c) = cross {
            if s.cross_field.is_some() {
                cx.error(s.tensors[c.out].span, "a decoder layer has one cross-attention (the memory's keys and values are one projection per layer)");
                return None;
            }
            let (projections, field) = cross_key_value(cx, sec, s, &c)?;
            s.fields.push(field);
            s.cross_field = Some(s.fields.len() - 1);
            for d in projections {
                s.nodes.remove(d);
                if d < i {
                    i -= 1;
                }
            }
        }
        i += 1;
    }
    Some(())
}

/// The one field projecting the memory to `c`'s keys and values (rows of one packed `in_proj`
/// weight, or two nn.Linear layers side by side), and the two projection nodes it replaces, the
/// later first (so removing them in turn leaves the other's index valid).
fn cross_key_value(
    cx: &mut Ctxt,
    sec: &Section,
    s: &Rewritten,
    c: &CrossNode,
) -> Option<([usize; 2], LField)> {
    let parts: Vec<Option<(usize, usize)>> = [c.k, c.v]
        .iter()
        .map(|&t| match s.lone_linear(t, sec.output) {
            Some((d, field, input)) if Some(input) == sec.memory => Some((d, field)),
            _ => None,
        })
        .collect();
    let [Some((dk, fk)), Some((dv, fv))] = parts[..] else {
        cx.error(s.tensors[c.out].span, "cross-attention projects the memory once per source: its keys and values must each be `linear(memory, …)`, used only here");
        return None;
    };
    let projections = [dk.max(dv), dk.min(dv)];
    if let Some(packed) = packed_key_value(cx, &s.fields[fk], &s.fields[fv], s.tensors[c.v].span) {
        return Some((projections, packed?));
    }
    let torch = |f: usize| match s.fields[f].kind {
        FieldKind::Linear { bias, layout: Layout::Torch, .. } => Some(bias),
        _ => None,
    };
    let (Some(bias), Some(bias_v)) = (torch(fk), torch(fv)) else {
        cx.error(s.tensors[c.out].span, "cross-attention's key and value projections are nn.Linear-layout linears (one GEMM over the memory)");
        return None;
    };
    if bias != bias_v {
        cx.error(
            s.tensors[c.v].span,
            "the key and value projections run as one GEMM: give both a bias or neither",
        );
        return None;
    }
    let input = sec.memory.map_or(0, |m| s.tensors[m].width);
    let weights = [fk, fv].iter().flat_map(|&f| s.fields[f].weights.clone()).collect();
    let output = s.tensors[c.k].width + s.tensors[c.v].width;
    Some((
        projections,
        LField {
            kind: FieldKind::Linear { input, output, bias, layout: Layout::Torch },
            weights,
            split: vec![],
        },
    ))
}

/// Rule: cross-attention keys and values from `nn.MultiheadAttention`'s packed `in_proj`
/// (`layout = in_proj(start, total)`) are adjacent rows of one weight, keys first (so one GEMM
/// projects the memory, as the preset's): `None` when they are not packed at all.
fn packed_key_value(cx: &mut Ctxt, k: &LField, v: &LField, span: Span) -> Option<Option<LField>> {
    let (
        FieldKind::Linear { input, output: ko, bias, layout: Layout::InProj { total, first } },
        FieldKind::Linear { output: vo, layout: Layout::InProj { total: vt, first: vf }, .. },
    ) = (k.kind, v.kind)
    else {
        return match (k.kind, v.kind) {
            (FieldKind::Linear { layout: Layout::InProj { .. }, .. }, _)
            | (_, FieldKind::Linear { layout: Layout::InProj { .. }, .. }) => {
                cx.error(span, "cross-attention's keys and values are both rows of one packed `in_proj` weight, or both nn.Linear layers");
                Some(None)
            }
            _ => None,
        };
    };
    if k.weights != v.weights || total != vt || vf != first + ko {
        let next = first + ko;
        let values = if next + vo <= total {
            format!("so the values are the next {vo} rows of the same weight, `in_proj({next}, {total})`")
        } else {
            "so the values are the rows right after them in the same weight".to_string()
        };
        cx.error(
            span,
            format!("cross-attention's keys and values run as one GEMM over the memory: the keys are rows {first}..{next} of their packed weight, {values} (`nn.MultiheadAttention`: keys `in_proj(d, 3 * d)`, values `in_proj(2 * d, 3 * d)`)"),
        );
        return Some(None);
    }
    Some(Some(LField {
        kind: FieldKind::Linear { input, output: ko + vo, bias, layout: Layout::InProj { total, first } },
        weights: k.weights.clone(),
        split: vec![],
    }))
}

/// `x + embedding(…)`: the lookup accumulates into the other operand (one pass over it, and no
/// buffer for the looked-up rows).
fn accumulate_lookups(sec: &Section, s: &mut Rewritten) {
    let mut i = 0;
    while i < s.nodes.len() {
        if let Node::Add { a, b, out } = s.nodes[i] {
            let found = s
                .lone_gather(b, sec.output)
                .map(|d| (d, a))
                .or_else(|| s.lone_gather(a, sec.output).map(|d| (d, b)));
            if let Some((d, other)) = found {
                if let Node::Gather { field, index, offset, .. } = s.nodes[d] {
                    s.nodes[i] = Node::Gather { field, index, offset, acc: Some(other), out };
                    s.nodes.remove(d);
                    continue;
                }
            }
        }
        i += 1;
    }
}
