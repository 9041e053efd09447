//! Where each value of a rewritten section lives. Liveness first (each value's last reader);
//! then the stream chain: the values that end in the section's result are written in place into
//! `x` (sums into a dead operand, norms and activations of a dead input); everything else gets a
//! scratch buffer named after its `let`, reused once its value is dead.

use proc_macro2::Span;

use super::rewrite::Rewritten;
use super::{ident_name, intern, Role, ADDITIVE_ALIGNMENTS, ADDITIVE_SCORES};
use crate::compose::program::{Node, Section, Tensor};
use crate::ctxt::Ctxt;
use crate::graph::{Value, STREAM};

/// Each tensor's last reader, by node index; the section's result lives past the last node.
pub(super) fn last_uses(nodes: &[Node], tensors: usize, output: Option<usize>) -> Vec<Option<usize>> {
    let mut last_use = vec![None::<usize>; tensors];
    for (idx, node) in nodes.iter().enumerate() {
        for t in node.inputs() {
            last_use[t] = Some(idx);
        }
    }
    if let Some(t) = output {
        last_use[t] = Some(nodes.len());
    }
    last_use
}

/// A scratch buffer: a field of the scratch struct, holding one value at a time.
struct Buf {
    name: String,
    width: usize,
    /// The value written into it last.
    occupant: usize,
}

/// Every value's place: the stream `x`, or a scratch buffer.
pub(super) struct Places {
    on_stream: Vec<bool>,
    /// Whether the section has a stream at all (embeddings without a result have none).
    has_stream: bool,
    stream_width: usize,
    bufs: Vec<Buf>,
    buf_of: Vec<Option<usize>>,
}

impl Places {
    pub(super) fn on_stream(&self, t: usize) -> bool {
        self.on_stream[t]
    }

    /// The graph value `t` is read from and written to.
    pub(super) fn value(&self, t: usize) -> Value {
        if self.on_stream[t] && self.has_stream {
            Value { name: STREAM, width: self.stream_width }
        } else {
            let b = &self.bufs[self.buf_of[t].unwrap_or(0)];
            Value { name: intern(&b.name), width: b.width }
        }
    }
}

/// Places every value of `s`: the stream chain in `x`, everything else in scratch buffers.
pub(super) fn place(
    cx: &mut Ctxt,
    sec: &Section,
    role: Role,
    s: &Rewritten,
    last_use: &[Option<usize>],
) -> Option<Places> {
    let has_stream = role != Role::Embeddings || sec.output.is_some();
    let on_stream = stream_chain(cx, sec, s, last_use)?;
    let (bufs, buf_of) = scratch_buffers(cx, s, last_use, &on_stream)?;
    let stream_width = sec.input.or(sec.output).map_or(0, |t| s.tensors[t].width);
    if s.nodes.iter().any(|n| !on_stream[n.out()] && buf_of[n.out()].is_none()) {
        cx.error(
            sec.tensors.first().map_or(Span::call_site(), |t| t.span),
            "internal: a value has no buffer",
        );
        return None;
    }
    Some(Places { on_stream, has_stream, stream_width, bufs, buf_of })
}

/// The stream chain: the values that live in `x`, from where it is first written (or the
/// section's input) to the section's result, each written in place over the one before.
fn stream_chain(
    cx: &mut Ctxt,
    sec: &Section,
    s: &Rewritten,
    last_use: &[Option<usize>],
) -> Option<Vec<bool>> {
    let dead_after = |t: usize, idx: usize| last_use[t] == Some(idx);
    let tensors = &s.tensors;
    let mut on_stream = vec![false; tensors.len()];
    if let Some(t) = sec.output {
        let Some(c) = chain(&s.nodes, t, sec.input, &dead_after) else {
            cx.error(tensors[t].span, format!("`{}` cannot be computed into the stream in place: end with a sum (`x = x + …`) or a norm of it, and do not read a value after it has been added into the stream", tensors[t].hint));
            return None;
        };
        let origin = c[0];
        if Some(origin) != sec.input {
            if let (Some(input), Some(d)) = (sec.input, s.writer(origin)) {
                if last_use[input].is_some_and(|u| u >= d) {
                    cx.error(
                        tensors[origin].span,
                        format!(
                            "`{}` would overwrite the stream while it is still read",
                            tensors[origin].hint
                        ),
                    );
                    return None;
                }
            }
        }
        for t in c {
            on_stream[t] = true;
        }
    }
    if let Some(input) = sec.input {
        on_stream[input] = true;
    }
    Some(on_stream)
}

/// The in-place chain ending at `t`: `[origin, …, t]`, where each value is written over the one
/// before (a sum into a dead operand, a norm or activation of a dead input, a lookup added into a
/// dead value) and the origin is the section's input or an op that can write the stream.
fn chain(
    nodes: &[Node],
    t: usize,
    input: Option<usize>,
    dead_after: &dyn Fn(usize, usize) -> bool,
) -> Option<Vec<usize>> {
    if Some(t) == input {
        return Some(vec![t]);
    }
    let idx = nodes.iter().position(|n| n.out() == t)?;
    let extend = |from: usize| -> Option<Vec<usize>> {
        if !dead_after(from, idx) {
            return None;
        }
        let mut c = chain(nodes, from, input, dead_after)?;
        c.push(t);
        Some(c)
    };
    match nodes[idx] {
        Node::Add { a, b, .. } => extend(a).or_else(|| extend(b)),
        Node::Norm { input: i, .. } => extend(i).or(Some(vec![t])),
        Node::Act { input: i, .. } | Node::Scale { input: i, .. } => extend(i),
        Node::Gather { acc: Some(a), .. } => extend(a),
        Node::Gather { acc: None, .. }
        | Node::Linear { .. }
        | Node::Concat { .. }
        | Node::Slice { .. }
        | Node::Patches { .. } => Some(vec![t]),
        Node::Glu { .. }
        | Node::Attention(_)
        | Node::Cross(_)
        | Node::Additive(_)
        | Node::Pool { .. }
        | Node::Normalize { .. } => None,
    }
}

/// Scratch buffers for every value off the stream, by first use: a value written over a dead
/// operand takes its buffer; otherwise a free buffer of the same width and binding, or a new one.
fn scratch_buffers(
    cx: &mut Ctxt,
    s: &Rewritten,
    last_use: &[Option<usize>],
    on_stream: &[bool],
) -> Option<(Vec<Buf>, Vec<Option<usize>>)> {
    let mut bufs: Vec<Buf> = Vec::new();
    let mut buf_of: Vec<Option<usize>> = vec![None; s.tensors.len()];
    // The additive cross-attention's own scratch (query projection or location logits, and
    // alignments) are named as the preset's.
    let mut taken: Vec<String> = vec![ADDITIVE_SCORES.into(), ADDITIVE_ALIGNMENTS.into()];
    for (idx, node) in s.nodes.iter().enumerate() {
        let out = node.out();
        if on_stream[out] {
            continue;
        }
        let dead_scratch = |t: usize| !on_stream[t] && last_use[t] == Some(idx);
        let in_place = overwritten_operand(cx, &s.tensors, node, &dead_scratch)?;
        let b = match in_place.and_then(|t| buf_of[t]) {
            Some(b) => b,
            None => free_or_new_buffer(&mut bufs, &mut taken, &s.tensors, out, last_use, idx),
        };
        bufs[b].occupant = out;
        buf_of[out] = Some(b);
    }
    Some((bufs, buf_of))
}

/// The operand `node` overwrites in place, if any: a sum writes into whichever operand is dead
/// scratch, an activation, scale or norm over its dead input, a lookup adds into its dead
/// accumulator. An error (`None`) when a sum, activation, scale or lookup would overwrite a value
/// read later; `Some(None)` when the node needs a buffer of its own.
fn overwritten_operand(
    cx: &mut Ctxt,
    tensors: &[Tensor],
    node: &Node,
    dead_scratch: &dyn Fn(usize) -> bool,
) -> Option<Option<usize>> {
    let out = node.out();
    let in_place = match *node {
        Node::Add { a, b, .. } => {
            if dead_scratch(a) {
                Some(a)
            } else if dead_scratch(b) {
                Some(b)
            } else {
                cx.error(tensors[out].span, "this sum would overwrite a value that is read later (or the stream): bind the operands so one of them is not used again");
                return None;
            }
        }
        Node::Act { input, .. } | Node::Scale { input, .. } if dead_scratch(input) => Some(input),
        Node::Act { input, .. } | Node::Scale { input, .. } => {
            cx.error(
                tensors[out].span,
                format!(
                    "this overwrites `{}` in place, which is read later (or is the stream)",
                    tensors[input].hint
                ),
            );
            return None;
        }
        Node::Norm { input, .. } if dead_scratch(input) => Some(input),
        Node::Gather { acc: Some(acc), .. } if dead_scratch(acc) => Some(acc),
        Node::Gather { acc: Some(_), .. } => {
            cx.error(tensors[out].span, "this lookup would add into a value that is read later");
            return None;
        }
        _ => None,
    };
    Some(in_place)
}

/// A buffer for `out`, written by node `idx`: one of its width named after the same binding
/// (`h`, `h_2`, …) whose occupant is dead by then, else a new one.
fn free_or_new_buffer(
    bufs: &mut Vec<Buf>,
    taken: &mut Vec<String>,
    tensors: &[Tensor],
    out: usize,
    last_use: &[Option<usize>],
    idx: usize,
) -> usize {
    let (hint, width) = (&tensors[out].hint, tensors[out].width);
    let reuse = bufs.iter().position(|b| {
        b.width == width
            && (b.name == *hint || b.name.strip_prefix(hint.as_str()).is_some_and(|r| r.starts_with('_')))
            && last_use[b.occupant].is_none_or(|u| u < idx)
    });
    match reuse {
        Some(b) => b,
        None => {
            let name = ident_name(hint, taken).to_string();
            bufs.push(Buf { name, width, occupant: out });
            bufs.len() - 1
        }
    }
}
