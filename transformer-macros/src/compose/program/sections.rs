//! The three sections of a pass: the inputs bound, the statements before the layer loop (the
//! embeddings, ending in the stream the loop carries), the loop body evaluated once per layer
//! (every layer the same structure, only attention windows and sparse layouts varying), and the
//! statements after it (the tail, ending in what the pass returns).

use syn::spanned::Spanned;
use syn::{Attribute, Expr, Pat, Stmt};

use super::eval::{expr_attrs, weight_names};
use super::{AttentionNode, Const, Interp, Node, Repeat, Section, Val, INPUTS};
use crate::ast::Forward;
use crate::graph::Index;
use crate::spec::Output;
use crate::suggest::closest;

impl Interp<'_> {
    /// Binds the pass's inputs (`tokens`, `token_types`, `image`, the encoder's memory) and the
    /// `positions` every pass has. Returns whether it reads token types.
    pub(super) fn bind_inputs(&mut self, forward: &Forward) -> bool {
        let memory = self.memory;
        let mut token_types = false;
        for input in &forward.inputs {
            match input.to_string().as_str() {
                "tokens" => self.bind("tokens", Val::Input(Index::Token), input.span(), true),
                "image" if forward.name == "forward" => {
                    self.image = true;
                    self.bind("image", Val::Image, input.span(), true);
                }
                "token_types" => {
                    token_types = true;
                    self.bind("token_types", Val::Input(Index::TokenType), input.span(), true);
                }
                name if memory.is_some_and(|m| m.name == name) => {
                    self.bind(name, Val::Memory, input.span(), true);
                }
                other => {
                    let mut known = INPUTS.to_vec();
                    known.extend(memory.map(|m| m.name));
                    let hint =
                        closest(other, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                    let takes = match memory {
                        Some(m) => format!("`fn {}` takes `tokens`, optionally `token_types`, and `{}` (the output of `fn encode`)", forward.name, m.name),
                        None if forward.name == "decode" => format!("`fn decode` reads `{other}`, but no `fn encode(tokens) -> {other} {{ … }}` produces it"),
                        None => "a composed model takes `tokens` and optionally `token_types`, or `image`".to_string(),
                    };
                    self.cx.error(input.span(), format!("unknown input `{other}`{hint}: {takes}"));
                    // Reads of it in the body stay silent: the input is the one mistake.
                    self.bind(other, Val::Poison, input.span(), true);
                }
            }
        }
        if let Some(m) = memory.filter(|m| !forward.inputs.iter().any(|i| i == m.name)) {
            if !forward.inputs.iter().any(|i| !INPUTS.contains(&i.to_string().as_str())) {
                self.cx.error(
                    forward.name.span(),
                    format!("`fn {}` reads the encoder's output through cross-attention: take it as an input, `fn {}(tokens, {})`", forward.name, forward.name, m.name),
                );
            }
            self.bind(m.name, Val::Poison, forward.name.span(), true);
        }
        self.bind("positions", Val::Input(Index::Position), forward.name.span(), true);
        if !forward.inputs.iter().any(|i| i == "tokens" || (i == "image" && forward.name == "forward")) {
            self.cx.error(forward.name.span(), "a composed model takes `tokens`: `fn forward(tokens) -> …`");
        }
        token_types
    }

    /// The layer loop, `for layer in 0..layers { … }`: one per pass. Returns its place among the
    /// statements.
    pub(super) fn layer_loop<'f>(&mut self, forward: &'f Forward) -> Option<(usize, &'f syn::ExprForLoop)> {
        let stmts = &forward.body.stmts;
        let loop_at = stmts.iter().position(|s| matches!(s, Stmt::Expr(Expr::ForLoop(_), _)));
        let Some(loop_at) = loop_at else {
            self.cx.error(
                forward.body.brace_token.span.join(),
                "a composed model repeats a block of layers: `for layer in 0..layers { … }`",
            );
            return None;
        };
        if let Some(second) =
            stmts[loop_at + 1..].iter().find(|s| matches!(s, Stmt::Expr(Expr::ForLoop(_), _)))
        {
            self.cx.error(
                second.span(),
                "one repeated block per model: merge the loops (layers may vary by index)",
            );
        }
        let Stmt::Expr(Expr::ForLoop(for_loop), _) = &stmts[loop_at] else { unreachable!("found above") };
        Some((loop_at, for_loop))
    }

    /// The embeddings: the statements before the loop, ending in the stream the loop carries.
    /// Returns the section, the stream's name and its width.
    pub(super) fn embeddings(
        &mut self,
        before: &[Stmt],
        for_loop: &syn::ExprForLoop,
    ) -> Option<(Section, String, usize)> {
        for stmt in before {
            self.stmt(stmt, false);
        }
        let carried = self.carried(for_loop)?;
        let stream_in = self.lookup_quiet(&carried).and_then(|b| match b {
            Val::Tensor(t) => Some(t),
            _ => None,
        });
        let Some(stream_in) = stream_in else {
            // A stream whose expression failed was reported there.
            if !matches!(self.lookup_quiet(&carried), Some(Val::Poison)) {
                self.cx.error(for_loop.span(), format!("`{carried}` must be a tensor before the layers"));
            }
            return None;
        };
        let width = self.cur.tensors[stream_in].width;
        self.cur.output = Some(stream_in);
        self.mark_used(&carried);
        self.unused_in_section(0);
        let embeddings = std::mem::take(&mut self.cur);
        Some((embeddings, carried, width))
    }

    /// The one tensor defined before the loop that the loop body assigns to: the stream.
    fn carried(&mut self, for_loop: &syn::ExprForLoop) -> Option<String> {
        let mut assigned: Vec<String> = Vec::new();
        for stmt in &for_loop.body.stmts {
            if let Stmt::Expr(Expr::Assign(a), _) = stmt {
                if let Expr::Path(p) = &*a.left {
                    if let Some(id) = p.path.get_ident() {
                        let name = id.to_string();
                        if matches!(self.lookup_quiet(&name), Some(Val::Tensor(_) | Val::Poison))
                            && !assigned.contains(&name)
                        {
                            assigned.push(name);
                        }
                    }
                }
            }
        }
        match assigned.as_slice() {
            [one] => Some(one.clone()),
            [] => {
                self.cx.error(
                    for_loop.for_token.span,
                    "the layers never update the stream: assign it in the loop, e.g. `x = x + attention_out;`",
                );
                None
            }
            many => {
                self.cx.error(
                    for_loop.for_token.span,
                    format!(
                        "the layers update {} tensors ({}); a repeated block carries one stream",
                        many.len(),
                        many.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// The repeated block: the loop body evaluated once per layer, each evaluation the same
    /// structure as layer 0's (one generated type), only windows and sparse layouts varying.
    pub(super) fn repeat(
        &mut self,
        for_loop: &syn::ExprForLoop,
        carried: &str,
        width: usize,
    ) -> Option<Repeat> {
        let span = for_loop.for_token.span;
        let Pat::Ident(var) = &*for_loop.pat else {
            self.cx.error(for_loop.pat.span(), "expected the layer index: `for layer in 0..layers`");
            return None;
        };
        let var = var.ident.to_string();
        let count = self.layer_count(&for_loop.expr)?;
        let prefix = self.layers_prefix(&for_loop.attrs, &var)?;
        self.section = 1;
        let mut bodies: Vec<Section> = Vec::new();
        let errors_before = self.cx.len();
        self.section_errors = errors_before;
        for layer in 0..count {
            self.quiet = layer > 0 && self.cx.len() > errors_before;
            bodies.push(self.layer(for_loop, &var, layer, carried, width));
        }
        self.quiet = false;
        if self.cx.len() > errors_before {
            return None;
        }
        if let Some(k) = bodies.iter().position(|b| !b.same_shape(&bodies[0])) {
            self.cx.error(
                span,
                format!("layer {k} differs from layer 0 in more than its attention windows and sparse layouts: a repeated block is one type, so only `window` and `sparse` may vary by layer"),
            );
            return None;
        }
        let windows = per_layer(&bodies, |a| a.window);
        let layouts = per_layer(&bodies, |a| a.sparse);
        Some(Repeat { count, prefix, body: bodies.swap_remove(0), windows, layouts, span })
    }

    /// The number of layers, `0..n` with `n` a constant ≥ 1.
    fn layer_count(&mut self, range: &Expr) -> Option<usize> {
        match range {
            Expr::Range(r) if matches!(r.limits, syn::RangeLimits::HalfOpen(_)) => {
                let mut bound = |e: &Option<Box<Expr>>| e.as_deref().map(|e| self.constant(e));
                match (bound(&r.start), bound(&r.end)) {
                    (Some(Some(Const::Int(0))), Some(Some(Const::Int(n)))) if n >= 1 => Some(n as usize),
                    _ => {
                        self.cx.error(r.span(), "expected `0..n` with a whole number of layers n ≥ 1");
                        None
                    }
                }
            }
            other => {
                self.cx.error(other.span(), "expected `0..layers`");
                None
            }
        }
    }

    /// The layers' checkpoint prefix from the loop's `#[weights = "layers.{layer}"]`, with the
    /// index written `{i}` (`layers.{i}` when there is none).
    fn layers_prefix(&mut self, attrs: &[Attribute], var: &str) -> Option<String> {
        match weight_names(self.cx, attrs) {
            Some((names, attr_span)) if names.len() == 1 => {
                let p = names[0].replace(&format!("{{{var}}}"), "{i}");
                if p.replace("{i}", "").contains(['{', '}']) {
                    self.cx.error(attr_span, format!("the layers' prefix may contain only `{{{var}}}`"));
                }
                Some(p)
            }
            Some((_, attr_span)) => {
                self.cx.error(attr_span, "the layers take one prefix: `#[weights = \"layers.{layer}\"]`");
                None
            }
            None => Some("layers.{i}".to_string()),
        }
    }

    /// One evaluation of the loop body, with the index bound to `layer` and the stream entering
    /// as the section's input; the scope is restored after it.
    fn layer(
        &mut self,
        for_loop: &syn::ExprForLoop,
        var: &str,
        layer: usize,
        carried: &str,
        width: usize,
    ) -> Section {
        let span = for_loop.for_token.span;
        let depth = self.scope.len();
        self.cur = Section::default();
        let input = self.cur.tensor(width, span, carried);
        self.cur.input = Some(input);
        let outer = self.lookup_quiet(carried);
        self.bind(var, Val::Const(Const::Int(layer as i128)), for_loop.pat.span(), true);
        self.bind(carried, Val::Tensor(input), span, false);
        for stmt in &for_loop.body.stmts {
            self.stmt(stmt, true);
        }
        let out = match self.lookup_quiet(carried) {
            Some(Val::Tensor(t)) => t,
            _ => input,
        };
        if self.cur.tensors[out].width != width {
            let w = self.cur.tensors[out].width;
            self.error(
                span,
                format!("the repeated block turns [S, {width}] into [S, {w}]: a repeat must preserve the shape of `{carried}`"),
            );
        }
        self.cur.output = Some(out);
        if layer == 0 {
            self.mark_used(carried);
            self.unused_in_section(1);
        }
        self.scope.truncate(depth);
        if let Some(v) = outer {
            self.rebind(carried, v);
        }
        std::mem::take(&mut self.cur)
    }

    /// The tail: the statements after the loop, reading the stream as it leaves the last layer;
    /// the last one, an expression without `;`, is the result (unless the outputs are named).
    pub(super) fn tail(
        &mut self,
        forward: &Forward,
        after: &[Stmt],
        for_loop: &syn::ExprForLoop,
        carried: &str,
        width: usize,
    ) -> Option<(Section, Vec<Output>)> {
        self.section = 2;
        self.section_errors = self.cx.len();
        self.cur = Section::default();
        let input = self.cur.tensor(width, for_loop.span(), carried);
        self.cur.input = Some(input);
        self.rebind(carried, Val::Tensor(input));
        let mut result = None;
        for (n, stmt) in after.iter().enumerate() {
            let last = n == after.len() - 1;
            match stmt {
                Stmt::Expr(e, None) if last && forward.tuple.is_empty() => {
                    self.begin_stmt(stmt);
                    let names = weight_names(self.cx, expr_attrs(e));
                    result = self.eval(e);
                    self.finish_names(names, None, e.span());
                }
                _ => self.stmt(stmt, false),
            }
        }
        if !forward.tuple.is_empty() {
            return self.named_outputs(&forward.tuple);
        }
        self.returned(forward, result)
    }
}

/// For each attention node of the loop body (in order), `of` it in each layer.
fn per_layer<T: Copy>(bodies: &[Section], of: impl Fn(&AttentionNode) -> T) -> Vec<Vec<T>> {
    let per_body: Vec<Vec<T>> = bodies
        .iter()
        .map(|b| {
            b.nodes
                .iter()
                .filter_map(|n| if let Node::Attention(a) = n { Some(of(a)) } else { None })
                .collect()
        })
        .collect();
    (0..per_body[0].len()).map(|a| per_body.iter().map(|w| w[a]).collect()).collect()
}
