//! What a pass returns: one tensor (`-> logits`), or named outputs (`-> (states, embedding)`):
//! the final states and poolings of them (`mean_pool`, `max_pool`, `cls`, then `normalize`),
//! which leave the tail for [`Program::outputs`](super::Program::outputs) and run in the
//! generated API after the graph's blocks.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use super::{Interp, Node, Section, Val};
use crate::ast::Forward;
use crate::ctxt::Ctxt;
use crate::spec::{Output, OutputKind, Pool};

/// Methods the generated API already has: an output named like one would shadow it.
const TAKEN_METHODS: &[&str] =
    &["load", "from_safetensors", "with_threads", "threads", "outputs", "outputs_into"];

/// Rule: each output of `-> (a, b, …)` is named once (it becomes a field and a method).
fn outputs_unique(cx: &mut Ctxt, names: &[syn::Ident]) {
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            cx.error(name.span(), format!("`{name}` is listed twice among the outputs: each output is one field of the generated `…Outputs` and one method, so name each once"));
        }
    }
}

/// Rule: an output is not named like a method the generated type already has.
fn outputs_not_methods(cx: &mut Ctxt, names: &[syn::Ident]) {
    for name in names {
        if TAKEN_METHODS.contains(&name.to_string().as_str()) {
            cx.error(name.span(), format!("an output named `{name}` would shadow the generated method `{name}`: rename it (the generated type has {})", TAKEN_METHODS.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")));
        }
    }
}

impl Interp<'_> {
    /// The tail of a pass returning one tensor, `result` (its last expression): one row per
    /// token, unless an image classifier's head projects a pooled row.
    pub(super) fn returned(
        &mut self,
        forward: &Forward,
        result: Option<Val>,
    ) -> Option<(Section, Vec<Output>)> {
        let output = match result {
            Some(Val::Tensor(t)) => t,
            Some(Val::Poison) => return None,
            Some(other) => {
                self.cx.error(
                    forward.body.stmts.last().map_or(forward.output.span(), |s| s.span()),
                    format!("`{}` must be a tensor, found {}", forward.output, self.describe(other)),
                );
                return None;
            }
            None => {
                self.cx.error(
                    forward.output.span(),
                    format!(
                        "the forward pass never produces `{}`: end the body with its expression (no `;`)",
                        forward.output
                    ),
                );
                return None;
            }
        };
        if self.cur.tensors[output].pooled && !self.image {
            let (span, what) = (self.cur.tensors[output].span, forward.output.to_string());
            self.cx.error(span, format!("`-> {what}` is one row per token, but this is pooled (a row per sequence): name the outputs, e.g. `-> (states, embedding)` with `let states = x;` and `let embedding = normalize(mean_pool(x));`"));
            return None;
        }
        self.cur.output = Some(output);
        self.unused_in_section(2);
        Some((std::mem::take(&mut self.cur), Vec::new()))
    }

    /// The tail of a pass returning `-> (a, b, …)`: the final states it computes, and the
    /// outputs, whose pooling nodes leave the tail.
    pub(super) fn named_outputs(&mut self, names: &[syn::Ident]) -> Option<(Section, Vec<Output>)> {
        let (output, outputs) = self.tuple_outputs(names)?;
        self.cur.output = Some(output);
        self.unused_in_section(2);
        let mut tail = std::mem::take(&mut self.cur);
        // Pooling runs in the generated API, after the graph's blocks.
        tail.nodes.retain(|n| !matches!(n, Node::Pool { .. } | Node::Normalize { .. }));
        Some((tail, outputs))
    }

    /// `mean_pool(x)` (over each sequence's real tokens), `max_pool(x)`, `cls(x)` (the first
    /// token): one row per sequence, after the layers.
    pub(super) fn pool(&mut self, func: &str, span: Span, pos: &[&Expr]) -> Option<Val> {
        let input = self.pool_arg(func, pos, span)?;
        if !self.pool_after_layers(func, span) || !self.pool_reads_per_token(func, pos[0].span(), input) {
            return None;
        }
        let pool = match func {
            "mean_pool" => Pool::Mean,
            "max_pool" => Pool::Max,
            _ => Pool::Cls,
        };
        let width = self.cur.tensors[input].width;
        let out = self.cur.tensor(width, span, func);
        self.cur.tensors[out].pooled = true;
        self.cur.nodes.push(Node::Pool { input, out, pool });
        Some(Val::Tensor(out))
    }

    /// Rule: pooling reads the final states, so it is written after the layer loop.
    fn pool_after_layers(&mut self, func: &str, span: Span) -> bool {
        if self.section != 2 {
            self.error(
                span,
                format!("`{func}` pools the final states into an output: write it after the layer loop"),
            );
            return false;
        }
        true
    }

    /// Rule: a pooling call reads a per-token tensor (a row per token), not one already pooled.
    fn pool_reads_per_token(&mut self, func: &str, span: Span, input: usize) -> bool {
        let t = &self.cur.tensors[input];
        if t.pooled || t.memory {
            let (shape, hint) = (t.shape(), self.written(input));
            let what = if t.pooled {
                "already pooled (a row per sequence): pool once"
            } else {
                "the encoder's memory"
            };
            self.error(span, format!("`{func}` pools per-token states [S, w] into a row per sequence, but `{hint}` is {shape}, {what}"));
            return false;
        }
        true
    }

    /// `normalize(v)`: each pooled row divided by its L2 norm (PyTorch's `F.normalize`).
    pub(super) fn normalize(&mut self, span: Span, pos: &[&Expr]) -> Option<Val> {
        let input = self.pool_arg("normalize", pos, span)?;
        if !self.normalize_reads_pool(span, pos[0].span(), input) {
            return None;
        }
        let width = self.cur.tensors[input].width;
        let out = self.cur.tensor(width, span, "normalize");
        self.cur.tensors[out].pooled = true;
        self.cur.nodes.push(Node::Normalize { input, out });
        Some(Val::Tensor(out))
    }

    /// Rule: `normalize` L2-normalises a pooled vector, once: its input is a pooling call's
    /// result.
    fn normalize_reads_pool(&mut self, span: Span, arg: Span, input: usize) -> bool {
        let pooled_by = self.cur.nodes.iter().find(|n| n.out() == input);
        match pooled_by {
            Some(Node::Pool { .. }) => true,
            Some(Node::Normalize { .. }) => {
                self.error(span, "this vector is already normalised: normalise once");
                false
            }
            _ => {
                let shape = self.cur.tensors[input].shape();
                self.error(arg, format!("`normalize` L2-normalises a pooled vector, found {shape}: pool first, e.g. `normalize(mean_pool(x))`"));
                false
            }
        }
    }

    /// The outputs of `-> (a, b, …)`, each a tensor bound after the layers: per-token states or
    /// a pooled (and perhaps normalised) vector. Returns the final per-token tensor, which the
    /// tail computes, and the outputs.
    fn tuple_outputs(&mut self, names: &[syn::Ident]) -> Option<(usize, Vec<Output>)> {
        let errors = self.cx.len();
        outputs_unique(self.cx, names);
        outputs_not_methods(self.cx, names);
        let mut found: Vec<(syn::Ident, usize)> = Vec::new();
        for name in names {
            let key = name.to_string();
            let binding = self.scope.iter_mut().rev().find(|b| b.name == key);
            match binding.map(|b| {
                b.used = true;
                (b.val, b.section)
            }) {
                Some((Val::Tensor(t), 2)) => found.push((name.clone(), t)),
                Some((Val::Poison, _)) => {}
                Some((Val::Tensor(_), _)) => self.error(name.span(), format!("`{key}` is computed before or inside the layers; an output is the final states (`let {key} = x;` after the loop) or a pooling of them")),
                _ => self.output_produced(name),
            }
        }
        if self.cx.len() > errors {
            return None;
        }
        self.pooled_from_final_states(&found)
    }

    /// Rule: every output of a tuple is bound by a `let` in the body.
    fn output_produced(&mut self, name: &syn::Ident) {
        self.error(
            name.span(),
            format!("the forward pass never produces `{name}`: bind it after the layers, e.g. `let {name} = x;` (the final states) or `let {name} = normalize(mean_pool(x));`"),
        );
    }

    /// Rule: a tuple has at most one per-token output (the final states), and every pooled
    /// output pools that same tensor (the states after the final norm, if any).
    fn pooled_from_final_states(&mut self, found: &[(syn::Ident, usize)]) -> Option<(usize, Vec<Output>)> {
        let mut states: Option<(usize, &syn::Ident)> = None;
        let mut outputs = Vec::new();
        let mut sources: Vec<(usize, Span)> = Vec::new();
        for (name, t) in found {
            let kind = if self.cur.tensors[*t].pooled {
                let def = |t: usize| self.cur.nodes.iter().find(|n| n.out() == t).cloned();
                let (pool, normalize, source, span) = match def(*t) {
                    Some(Node::Normalize { input, .. }) => match def(input) {
                        Some(Node::Pool { input: src, pool, .. }) => {
                            (pool, true, src, self.cur.tensors[input].span)
                        }
                        _ => return None,
                    },
                    Some(Node::Pool { input: src, pool, .. }) => {
                        (pool, false, src, self.cur.tensors[*t].span)
                    }
                    _ => return None,
                };
                sources.push((source, span));
                OutputKind::Pooled { pool, normalize }
            } else {
                match states {
                    Some((s, first)) if s != *t => {
                        self.error(name.span(), format!("`{name}` and `{first}` are both per-token outputs: a composed encoder returns one, the final states (pool them for the others)"));
                        return None;
                    }
                    _ => states = Some((*t, name)),
                }
                OutputKind::States
            };
            outputs.push(Output { name: name.clone(), kind });
        }
        let last = states.map(|(t, _)| t).or(sources.first().map(|(s, _)| *s))?;
        for &(source, span) in &sources {
            if source != last {
                let (hint, want) =
                    (self.cur.tensors[source].hint.clone(), self.cur.tensors[last].hint.clone());
                self.error(span, format!("this pools `{hint}`, but the outputs are computed from the final states `{want}`: pool `{want}`"));
                return None;
            }
        }
        Some((last, outputs))
    }
}
