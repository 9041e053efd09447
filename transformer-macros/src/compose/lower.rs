//! A composed program → the same [`Graph`] the presets lower to: the statements before the loop
//! become the embeddings block, the loop body the one layer type, the statements after it the
//! final norm and the head. Graph-level fusion happens here: three projections of one tensor
//! feeding an attention become one QKV GEMM, an embedding lookup added to the stream becomes an
//! accumulating gather, and [`graph::fuse`] folds activations into GEMM epilogues and adds into
//! residual norms. Values are assigned buffers by liveness: the stream `x` is updated in place,
//! everything else lives in named scratch buffers, reused once their value is dead.

use std::cell::RefCell;
use std::collections::HashSet;

use proc_macro2::Span;

use super::program::{FieldDef, Node, Program, Section};
use crate::ctxt::Ctxt;
use crate::graph::{self, Block, Field, FieldKind, Graph, Index, Layout, Layouts, Op, Value, Window, STREAM};
use crate::spec::{Classifier, ImageInput, Pool, Pooling, Sparse};

/// A `'static` copy of a name built at expansion time; the graph's names are `&'static str`
/// because the presets' are literals. Each distinct name is leaked once per process.
pub fn intern(s: &str) -> &'static str {
    thread_local! {
        static NAMES: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(n) = names.get(s) {
            return *n;
        }
        let n: &'static str = Box::leak(s.to_string().into_boxed_str());
        names.insert(n);
        n
    })
}

/// The model family the forward pass's output decides.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    /// `-> hidden`: per-token states (and mean-pooled sentence embeddings).
    Encoder,
    /// `-> logits`: a causal language model with a KV cache and generation.
    Decoder,
    /// `fn forward(image) -> logits`: an image classifier (label logits of the pooled states).
    Image,
}

/// What lowering learned about the model, for the spec.
pub struct Lowered {
    pub graph: Graph,
    pub vocab_size: usize,
    pub max_positions: Option<usize>,
    pub type_vocab_size: Option<usize>,
    pub d_model: usize,
    /// `(heads, kv_heads, head_dim)` of the first attention.
    pub attention: (usize, usize, usize),
    /// The layer loop (`for`), where errors about the layers as a whole go.
    pub loop_span: Span,
    /// Image classifiers: the images the patches are cut from, and the head.
    pub image: Option<(ImageInput, Classifier)>,
}

/// A field after fusion: one or more checkpoint parts.
#[derive(Clone, Debug)]
struct LField {
    kind: FieldKind,
    weights: Vec<String>,
    split: Vec<usize>,
}

/// Lowers one stack; `side` names its blocks' types (`""`, `"Encoder"`, `"Decoder"`).
pub fn lower(
    cx: &mut Ctxt,
    program: &Program,
    family: Family,
    max_positions_dim: Option<usize>,
    out_span: Span,
    side: &str,
) -> Option<Lowered> {
    let errors = cx.len();
    let emb = &program.embeddings;
    // Rows a lookup covers: a table's rows past its offset (BART's positions start at row 2).
    let table = |index: Index| {
        emb.nodes.iter().find_map(|n| match n {
            Node::Gather { field, index: i, offset, .. } if *i == index => match emb.fields[*field].kind {
                FieldKind::Embedding { rows, .. } | FieldKind::Sinusoidal { rows, .. } => {
                    Some(rows.saturating_sub(*offset))
                }
                _ => None,
            },
            _ => None,
        })
    };
    let patches = emb.nodes.iter().find_map(|n| match *n {
        Node::Patches { image, cls, .. } => Some((image, cls.is_some())),
        _ => None,
    });
    let vocab_size = if family == Family::Image { patches.map(|_| 1) } else { table(Index::Token) };
    let Some(vocab_size) = vocab_size else {
        if family == Family::Image {
            cx.error(out_span, "an image model cuts its input into patches before the layers: `let x = patch_embedding(image, d_model, size = …, patch = …, channels = …, class_token = true);`");
            return None;
        }
        cx.error(
            out_span,
            "embed the tokens before the layers: `let x = embedding(tokens, vocab_size, d_model);`",
        );
        return None;
    };
    let max_positions = match patches {
        Some((image, cls)) => Some(image.patches() + usize::from(cls)),
        None => table(Index::Position).or(max_positions_dim),
    };
    let type_vocab_size = table(Index::TokenType);
    if program.token_types && type_vocab_size.is_none() {
        cx.error(out_span, "`token_types` is an input but never embedded: `embedding(token_types, type_vocab_size, d_model)`");
    }
    let body = &program.repeat.body;
    let d_model = body.tensors[body.input.unwrap_or(0)].width;
    let attentions: Vec<&super::program::AttentionNode> =
        body.nodes.iter().filter_map(|n| if let Node::Attention(a) = n { Some(a) } else { None }).collect();
    let Some(first) = attentions.first() else {
        cx.error(program.repeat.span, "the layers have no attention: add `attention(…)` to the loop body");
        return None;
    };
    let causal = attentions.iter().any(|a| a.causal);
    match family {
        Family::Decoder if attentions.iter().any(|a| !a.causal) => {
            cx.error(
                program.repeat.span,
                "a model returning `logits` is a causal decoder: give every attention `causal`",
            );
        }
        Family::Decoder if attentions.len() > 1 => {
            cx.error(program.repeat.span, "a decoder layer has one attention (one KV cache entry per layer)");
        }
        Family::Image if causal => {
            cx.error(program.repeat.span, "an image classifier's patches see each other: drop `causal`");
        }
        Family::Encoder if causal => {
            cx.error(
                program.repeat.span,
                "causal attention makes a decoder: return `logits` (a vocabulary projection)",
            );
        }
        _ => {}
    }
    let rope_positions = match (attentions.iter().any(|a| a.rope.is_some()), max_positions) {
        (true, None) => {
            cx.error(
                program.repeat.span,
                "rotary positions need the longest sequence: declare `max_positions: …`",
            );
            return None;
        }
        (_, p) => p.unwrap_or(1),
    };
    if family == Family::Decoder && max_positions.is_none() {
        cx.error(
            out_span,
            "a decoder's KV cache needs the longest sequence: declare `max_positions: …` or embed positions",
        );
    }
    let decoder = family == Family::Decoder;
    let bias_table = super::bias::table(cx, program, &attentions, max_positions);

    let embeddings =
        lower_section(cx, emb, Role::Embeddings, &[], &[], rope_positions).map(|(fields, ops)| Block {
            suffix: intern(&format!("{side}Embeddings")),
            doc: "Input embeddings, as composed.".into(),
            prefix: "",
            fields: fields.into_iter().chain(bias_table).collect(),
            ops,
            rooted: true,
            output: None,
            cached: decoder,
        });
    let layer = lower_section(
        cx,
        body,
        Role::Layer,
        &program.repeat.windows,
        &program.repeat.layouts,
        rope_positions,
    )
    .map(|(fields, ops)| Block {
        suffix: intern(&format!("{side}Layer")),
        doc: "One layer, as composed in the loop body (one type for every layer).".into(),
        prefix: intern(&program.repeat.prefix),
        fields,
        ops,
        rooted: true,
        output: None,
        cached: decoder,
    });
    let tail = match (family, patches) {
        (Family::Image, Some((_, cls))) => lower_classifier(cx, &program.tail, cls, rope_positions),
        _ => {
            lower_tail(cx, &program.tail, family, vocab_size, rope_positions, side).map(|(n, h)| (n, h, None))
        }
    };
    if let Some(b) = &embeddings {
        if let Some(v) = b.scratch().first() {
            let span = emb.tensors.iter().find(|t| t.hint == v.name).map_or(out_span, |t| t.span);
            cx.error(span, "before the layers every step must write the stream in place (lookups, sums, one norm): this value would need a buffer of its own");
        }
    }
    if cx.len() > errors {
        return None;
    }
    let (final_norm, head, classifier) = tail?;
    let graph = Graph {
        embeddings: embeddings?,
        layer: layer?,
        layers: program.repeat.count,
        other_layers: vec![],
        layer_types: vec![],
        final_norm,
        head,
        head_field: if classifier.is_some() { "classifier" } else { "lm_head" },
        ignored: program.ignored.iter().map(|n| intern(&n.replace("{layer}", "{i}"))).collect(),
        roots: &[""],
    };
    Some(Lowered {
        graph,
        vocab_size,
        max_positions,
        type_vocab_size,
        d_model,
        attention: (first.heads, first.kv_heads, first.head_dim),
        loop_span: program.repeat.span,
        image: patches.map(|(image, _)| image).zip(classifier),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Embeddings,
    Layer,
    Tail,
}

/// The final norm and (decoders) the head from the statements after the loop.
fn lower_tail(
    cx: &mut Ctxt,
    tail: &Section,
    family: Family,
    vocab: usize,
    rope_positions: usize,
    side: &str,
) -> Option<(Option<Block>, Option<Block>)> {
    let result = tail.output?;
    let (body, head) = match (family, tail.nodes.last()) {
        (Family::Decoder, Some(Node::Linear { field, input, out })) if *out == result => {
            let width = tail.tensors[result].width;
            if width != vocab {
                cx.error(
                    tail.tensors[result].span,
                    format!("logits are [S, {width}] but the vocabulary has {vocab} tokens"),
                );
                return None;
            }
            let mut rest = tail.clone();
            rest.nodes.pop();
            rest.output = Some(*input);
            let scale = if side == "Decoder" { head_scale(&mut rest) } else { None };
            (rest, Some((*field, *input, scale)))
        }
        (Family::Decoder, _) => {
            cx.error(
                tail.tensors[result].span,
                "`logits` must be the vocabulary projection of the stream: end with `linear(x, vocab_size)`",
            );
            return None;
        }
        (Family::Encoder | Family::Image, _) => (tail.clone(), None),
    };
    let (fields, ops) = lower_section(cx, &body, Role::Tail, &[], &[], rope_positions)?;
    let only_norm = match ops.as_slice() {
        [] => true,
        [Op::Norm { input, output, .. }] => input.is_stream() && output.is_stream(),
        _ => false,
    };
    if !only_norm {
        cx.error(
            tail.tensors[body.output.unwrap_or(result)].span,
            "after the layers a composed model applies at most one norm to the stream (then its head)",
        );
        return None;
    }
    let final_norm = (!ops.is_empty()).then(|| Block {
        suffix: intern(&format!("{side}FinalNorm")),
        doc: "The norm after the last layer.".into(),
        prefix: "",
        fields,
        ops,
        rooted: true,
        output: None,
        cached: false,
    });
    let head = head.map(|(field, input, scale)| {
        let f = lfield(&tail.fields[field]);
        let logits = Value { name: "logits", width: vocab };
        let stream = Value::stream(tail.tensors[input].width);
        let scale = scale.map(|factor| Op::Scale { value: stream, factor });
        let linear = Op::Linear { field: "lm_head", input: stream, output: logits, act: None };
        Block {
            suffix: "LmHead",
            doc: "Hidden states to vocabulary logits.".into(),
            prefix: "",
            fields: vec![to_field("lm_head", &f)],
            ops: scale.into_iter().chain([linear]).collect(),
            rooted: true,
            output: Some(logits),
            cached: false,
        }
    });
    Some((final_norm, head))
}

/// An encoder-decoder's head may scale the decoder's final states before projecting them,
/// `linear(x * (1.0 / sqrt(d_model)), vocab_size)` (T5's tied head, as the preset's head block
/// does): the scale of the head's input moves into the head. `rest` is the tail without the head.
fn head_scale(rest: &mut Section) -> Option<f64> {
    let result = rest.output?;
    match *rest.nodes.last()? {
        Node::Scale { input, out, factor } if out == result => {
            rest.nodes.pop();
            rest.output = Some(input);
            Some(factor)
        }
        _ => None,
    }
}

/// An image classifier's tail: at most a final norm, then `linear(cls(x), labels)` (with a class
/// token) or `linear(mean_pool(x), labels)` (without), the presets' two ViT heads.
fn lower_classifier(
    cx: &mut Ctxt,
    tail: &Section,
    class_token: bool,
    rope_positions: usize,
) -> Option<(Option<Block>, Option<Block>, Option<Classifier>)> {
    let result = tail.output?;
    let n = tail.nodes.len();
    let head = match tail.nodes.get(n.wrapping_sub(2)..) {
        Some([Node::Pool { input: states, out: pooled, pool }, Node::Linear { field, input, out }])
            if *out == result && input == pooled =>
        {
            Some((*states, *pool, *field))
        }
        _ => None,
    };
    let Some((states, pool, field)) = head else {
        cx.error(
            tail.tensors[result].span,
            "an image classifier ends with its head over the pooled states: `linear(cls(x), labels)` (with a class token) or `linear(mean_pool(x), labels)`",
        );
        return None;
    };
    let pooled_at = tail.nodes[n - 2].out();
    let pooling = pooling_fits_class_token(cx, pool, class_token, tail.tensors[pooled_at].span)?;
    let mut rest = tail.clone();
    rest.nodes.truncate(n - 2);
    rest.output = Some(states);
    let (final_norm, _) = lower_tail(cx, &rest, Family::Image, 0, rope_positions, "")?;
    let f = lfield(&tail.fields[field]);
    let labels = tail.tensors[result].width;
    let logits = Value { name: "logits", width: labels };
    let head = Block {
        suffix: "Classifier",
        doc: "Pooled hidden state to label logits.".into(),
        prefix: "",
        fields: vec![to_field("classifier", &f)],
        ops: vec![Op::Linear {
            field: "classifier",
            input: Value::stream(tail.tensors[states].width),
            output: logits,
            act: None,
        }],
        rooted: true,
        output: Some(logits),
        cached: false,
    };
    Some((final_norm, Some(head), Some(Classifier { labels, pooling })))
}

/// Rule: an image classifier pools by the class token exactly when `patch_embedding` prepends
/// one (`cls(x)` with `class_token = true`; `mean_pool(x)` without), as ViT's two heads do.
fn pooling_fits_class_token(cx: &mut Ctxt, pool: Pool, class_token: bool, span: Span) -> Option<Pooling> {
    match (pool, class_token) {
        (Pool::Cls, true) => Some(Pooling::Cls),
        (Pool::Mean, false) => Some(Pooling::Mean),
        (Pool::Cls, false) => {
            cx.error(span, "`cls(x)` reads the class token, but `patch_embedding` prepends none: add `class_token = true`, or pool with `mean_pool(x)`");
            None
        }
        (Pool::Mean, true) => {
            cx.error(span, "with a class token an image classifier pools by it (`cls(x)`); `mean_pool(x)` goes with `patch_embedding` without `class_token`");
            None
        }
        (Pool::Max, _) => {
            cx.error(span, "an image classifier pools with `cls(x)` (with a class token) or `mean_pool(x)`");
            None
        }
    }
}

fn lfield(f: &FieldDef) -> LField {
    LField {
        kind: f.kind,
        weights: if f.weight.is_empty() { vec![] } else { vec![f.weight.clone()] },
        split: vec![],
    }
}

fn to_field(name: &'static str, f: &LField) -> Field {
    let doc = match f.kind {
        FieldKind::Linear { .. } if f.weights.len() > 1 => "Fused projections (one GEMM).",
        FieldKind::Linear { .. } => "Linear layer.",
        FieldKind::LayerNorm { .. } => "LayerNorm.",
        FieldKind::RmsNorm { .. } => "RMSNorm.",
        FieldKind::Embedding { .. } => "Embedding table.",
        FieldKind::Sinusoidal { .. } => "Fixed sinusoidal positions, computed at load.",
        _ => "Table computed at load.",
    };
    Field {
        name,
        doc,
        kind: f.kind,
        weights: f.weights.iter().map(|w| intern(w)).collect(),
        split: f.split.clone(),
    }
}

/// The decoder layer's field projecting the memory to cross-attention keys and values, which the
/// generated `encode` applies once per source.
pub const CROSS_KEY_VALUE: &str = "cross_key_value";

/// The decoder layer's additive or location cross-attention field: the generated `encode`
/// projects the memory's keys with it (`layer.cross_attention`), as for the preset.
const ADDITIVE_CROSS: &str = "cross_attention";
const ADDITIVE_SCORES: &str = "cross_scores";
const ADDITIVE_ALIGNMENTS: &str = "alignments";

/// Rule: a decoder layer reads the memory through one cross-attention, multi-head or additive
/// (one memory projection per layer, one `cross_attention` field).
fn one_cross_attention(cx: &mut Ctxt, nodes: &[Node], tensors: &[super::program::Tensor]) -> bool {
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

/// Names that generated code already uses for locals or parameters around scratch buffers.
const RESERVED: &[&str] = &[
    "x",
    "s",
    "rows",
    "logits",
    "pooled",
    "last",
    "batch",
    "workspace",
    "cache",
    "layer",
    "threads",
    "bias",
    "out",
    "memory",
    "starts",
    "i",
];

/// A valid, unique Rust field name from a checkpoint or binding name.
fn ident_name(raw: &str, taken: &mut Vec<String>) -> &'static str {
    let mut base: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
        base = format!("f_{base}");
    }
    if syn::parse_str::<syn::Ident>(&base).is_err() || RESERVED.contains(&base.as_str()) {
        base.push('_');
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.push(name.clone());
    intern(&name)
}

/// Lowers one section: fusion rewrites, buffer assignment, ops.
fn lower_section(
    cx: &mut Ctxt,
    sec: &Section,
    role: Role,
    windows: &[Vec<Option<usize>>],
    layouts: &[Vec<Option<Sparse>>],
    rope_positions: usize,
) -> Option<(Vec<Field>, Vec<Op>)> {
    let mut tensors = sec.tensors.clone();
    let mut fields: Vec<LField> = sec.fields.iter().map(lfield).collect();
    let mut nodes: Vec<Node> = sec.nodes.clone();
    let uses = |nodes: &[Node], t: usize| {
        nodes.iter().filter(|n| n.inputs().contains(&t)).count() + usize::from(sec.output == Some(t))
    };
    let def = |nodes: &[Node], t: usize| nodes.iter().position(|n| n.out() == t);

    // Three projections of one tensor feeding an attention: one fused GEMM.
    let mut i = 0;
    while i < nodes.len() {
        if let Node::Attention(a) = &nodes[i] {
            if let Some((k, v)) = a.kv {
                let parts: Vec<Option<(usize, usize, usize)>> = [a.q, k, v]
                    .iter()
                    .map(|&t| match def(&nodes, t).map(|d| (d, &nodes[d])) {
                        Some((d, Node::Linear { field, input, .. })) if uses(&nodes, t) == 1 => {
                            Some((d, *field, *input))
                        }
                        _ => None,
                    })
                    .collect();
                let same = |x: &FieldKind, y: &FieldKind| match (x, y) {
                    (
                        FieldKind::Linear { bias: b1, layout: Layout::Torch, .. },
                        FieldKind::Linear { bias: b2, layout: Layout::Torch, .. },
                    ) => b1 == b2,
                    _ => false,
                };
                let fusable = parts.iter().all(Option::is_some) && {
                    let p: Vec<(usize, usize, usize)> = parts.iter().flatten().copied().collect();
                    p[0].2 == p[1].2
                        && p[0].2 == p[2].2
                        && same(&fields[p[0].1].kind, &fields[p[1].1].kind)
                        && same(&fields[p[0].1].kind, &fields[p[2].1].kind)
                };
                if !fusable {
                    cx.error(tensors[a.out].span, "`attention(q, k, v)` fuses its projections into one GEMM: q, k and v must each be an nn.Linear-layout `linear` of the same tensor, used only here (or pass one fused `qkv`)");
                    return None;
                }
                let p: Vec<(usize, usize, usize)> = parts.into_iter().flatten().collect();
                let widths: Vec<usize> = [a.q, k, v].iter().map(|&t| tensors[t].width).collect();
                let FieldKind::Linear { input, bias, .. } = fields[p[0].1].kind else {
                    unreachable!("checked by `same`")
                };
                let weights = p.iter().flat_map(|&(_, f, _)| fields[f].weights.clone()).collect();
                fields.push(LField {
                    kind: FieldKind::Linear {
                        input,
                        output: widths.iter().sum(),
                        bias,
                        layout: Layout::Torch,
                    },
                    weights,
                    split: widths.clone(),
                });
                let fused_field = fields.len() - 1;
                tensors.push(super::program::Tensor {
                    width: widths.iter().sum(),
                    span: tensors[a.q].span,
                    hint: "qkv".into(),
                    memory: false,
                    pooled: false,
                });
                let qkv = tensors.len() - 1;
                let mut a = a.clone();
                a.q = qkv;
                a.kv = None;
                nodes[i] = Node::Attention(a);
                let first = p.iter().map(|&(d, _, _)| d).min().unwrap_or(0);
                nodes[first] = Node::Linear { field: fused_field, input: p[0].2, out: qkv };
                let mut drop: Vec<usize> = p.iter().map(|&(d, _, _)| d).filter(|&d| d != first).collect();
                drop.sort_unstable_by(|a, b| b.cmp(a));
                for d in drop {
                    nodes.remove(d);
                    if d < i {
                        i -= 1;
                    }
                }
            }
        }
        i += 1;
    }

    if !one_cross_attention(cx, &nodes, &tensors) {
        return None;
    }
    // Cross-attention: its key and value projections of the memory become one field that
    // `encode` applies once per source (see `codegen::seq2seq`), so they leave the layer's ops.
    let mut cross_field = None;
    let mut i = 0;
    while i < nodes.len() {
        if let Node::Cross(c) = &nodes[i] {
            if cross_field.is_some() {
                cx.error(tensors[c.out].span, "a decoder layer has one cross-attention (the memory's keys and values are one projection per layer)");
                return None;
            }
            let parts: Vec<Option<(usize, usize)>> = [c.k, c.v]
                .iter()
                .map(|&t| match def(&nodes, t).map(|d| (d, &nodes[d])) {
                    Some((d, Node::Linear { field, input, .. }))
                        if uses(&nodes, t) == 1 && Some(*input) == sec.memory =>
                    {
                        Some((d, *field))
                    }
                    _ => None,
                })
                .collect();
            let torch = |f: usize| match fields[f].kind {
                FieldKind::Linear { bias, layout: Layout::Torch, .. } => Some(bias),
                _ => None,
            };
            let [Some((dk, fk)), Some((dv, fv))] = parts[..] else {
                cx.error(tensors[c.out].span, "cross-attention projects the memory once per source: its keys and values must each be `linear(memory, …)`, used only here");
                return None;
            };
            if let Some(packed) = packed_key_value(cx, &fields[fk], &fields[fv], tensors[c.v].span) {
                fields.push(packed?);
                cross_field = Some(fields.len() - 1);
                for d in [dk.max(dv), dk.min(dv)] {
                    nodes.remove(d);
                    if d < i {
                        i -= 1;
                    }
                }
                i += 1;
                continue;
            }
            let (Some(bias), Some(bias_v)) = (torch(fk), torch(fv)) else {
                cx.error(tensors[c.out].span, "cross-attention's key and value projections are nn.Linear-layout linears (one GEMM over the memory)");
                return None;
            };
            if bias != bias_v {
                cx.error(
                    tensors[c.v].span,
                    "the key and value projections run as one GEMM: give both a bias or neither",
                );
                return None;
            }
            let input = sec.memory.map_or(0, |m| tensors[m].width);
            let weights = [fk, fv].iter().flat_map(|&f| fields[f].weights.clone()).collect();
            fields.push(LField {
                kind: FieldKind::Linear {
                    input,
                    output: tensors[c.k].width + tensors[c.v].width,
                    bias,
                    layout: Layout::Torch,
                },
                weights,
                split: vec![],
            });
            cross_field = Some(fields.len() - 1);
            for d in [dk.max(dv), dk.min(dv)] {
                nodes.remove(d);
                if d < i {
                    i -= 1;
                }
            }
        }
        i += 1;
    }

    // `x + embedding(…)`: the lookup accumulates into the other operand.
    let mut i = 0;
    while i < nodes.len() {
        if let Node::Add { a, b, out } = nodes[i] {
            let gather_of = |t: usize, nodes: &[Node]| match def(nodes, t).map(|d| (d, &nodes[d])) {
                Some((d, Node::Gather { acc: None, .. })) if uses(nodes, t) == 1 => Some(d),
                _ => None,
            };
            let found = gather_of(b, &nodes).map(|d| (d, a)).or_else(|| gather_of(a, &nodes).map(|d| (d, b)));
            if let Some((d, other)) = found {
                if let Node::Gather { field, index, offset, .. } = nodes[d] {
                    nodes[i] = Node::Gather { field, index, offset, acc: Some(other), out };
                    nodes.remove(d);
                    continue;
                }
            }
        }
        i += 1;
    }

    // Liveness: the index of each tensor's last reader (the section's result lives to the end).
    let n = nodes.len();
    let mut last_use = vec![None::<usize>; tensors.len()];
    for (idx, node) in nodes.iter().enumerate() {
        for t in node.inputs() {
            last_use[t] = Some(idx);
        }
    }
    let target = sec.output;
    if let Some(t) = target {
        last_use[t] = Some(n);
    }
    let dead_after = |t: usize, idx: usize| last_use[t] == Some(idx);

    // The stream chain: the values that live in `x`, from where it is first written (or the
    // section's input) to the section's result, each written in place over the one before.
    let has_stream = role != Role::Embeddings || target.is_some();
    let mut on_stream = vec![false; tensors.len()];
    if let Some(t) = target {
        match chain(&nodes, t, sec.input, &dead_after) {
            Some(c) => {
                let origin = c[0];
                if Some(origin) != sec.input {
                    if let (Some(input), Some(d)) = (sec.input, def(&nodes, origin)) {
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
            None => {
                cx.error(tensors[t].span, format!("`{}` cannot be computed into the stream in place: end with a sum (`x = x + …`) or a norm of it, and do not read a value after it has been added into the stream", tensors[t].hint));
                return None;
            }
        }
    }
    if let Some(input) = sec.input {
        on_stream[input] = true;
    }

    // Scratch buffers for everything else, by first use; a buffer is reused once its value is dead.
    struct Buf {
        name: String,
        width: usize,
        occupant: usize,
    }
    let mut bufs: Vec<Buf> = Vec::new();
    let mut buf_of: Vec<Option<usize>> = vec![None; tensors.len()];
    // The additive cross-attention's own scratch (query projection or location logits, and
    // alignments) are named as the preset's.
    let mut taken_bufs: Vec<String> = vec![ADDITIVE_SCORES.into(), ADDITIVE_ALIGNMENTS.into()];
    for (idx, node) in nodes.iter().enumerate() {
        let out = node.out();
        if on_stream[out] {
            continue;
        }
        let scratch_in = |t: usize| !on_stream[t] && dead_after(t, idx);
        let in_place = match *node {
            Node::Add { a, b, .. } => {
                if scratch_in(a) {
                    Some(a)
                } else if scratch_in(b) {
                    Some(b)
                } else {
                    cx.error(tensors[out].span, "this sum would overwrite a value that is read later (or the stream): bind the operands so one of them is not used again");
                    return None;
                }
            }
            Node::Act { input, .. } | Node::Scale { input, .. } if scratch_in(input) => Some(input),
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
            Node::Norm { input, .. } if scratch_in(input) => Some(input),
            Node::Gather { acc: Some(acc), .. } if scratch_in(acc) => Some(acc),
            Node::Gather { acc: Some(_), .. } => {
                cx.error(tensors[out].span, "this lookup would add into a value that is read later");
                return None;
            }
            _ => None,
        };
        let b = match in_place.and_then(|t| buf_of[t]) {
            Some(b) => b,
            None => {
                let (hint, width) = (tensors[out].hint.clone(), tensors[out].width);
                let reuse = bufs.iter().position(|b| {
                    b.width == width
                        && (b.name == hint || b.name.strip_prefix(&hint).is_some_and(|r| r.starts_with('_')))
                        && last_use[b.occupant].is_none_or(|u| u < idx)
                });
                match reuse {
                    Some(b) => b,
                    None => {
                        let name = ident_name(&hint, &mut taken_bufs).to_string();
                        bufs.push(Buf { name, width, occupant: out });
                        bufs.len() - 1
                    }
                }
            }
        };
        bufs[b].occupant = out;
        buf_of[out] = Some(b);
    }
    let stream_width = sec.input.or(target).map_or(0, |t| tensors[t].width);
    let val = |t: usize| -> Value {
        if on_stream[t] && has_stream {
            Value { name: STREAM, width: stream_width }
        } else {
            let b = &bufs[buf_of[t].unwrap_or(0)];
            Value { name: intern(&b.name), width: b.width }
        }
    };
    if nodes.iter().any(|n| !on_stream[n.out()] && buf_of[n.out()].is_none()) {
        cx.error(
            sec.tensors.first().map_or(Span::call_site(), |t| t.span),
            "internal: a value has no buffer",
        );
        return None;
    }

    // Field names: the checkpoint name's last segment, or its whole path when that collides.
    let mut taken: Vec<String> = vec!["rope".into(), CROSS_KEY_VALUE.into(), ADDITIVE_CROSS.into()];
    let last_segments: Vec<String> = fields
        .iter()
        .map(|f| f.weights.first().map(|w| w.rsplit('.').next().unwrap_or(w).to_string()).unwrap_or_default())
        .collect();
    let used_fields: Vec<usize> = {
        let mut u: Vec<usize> = Vec::new();
        for node in &nodes {
            let fs: Vec<usize> = match node {
                Node::Gather { field, .. } | Node::Linear { field, .. } | Node::Norm { field, .. } => {
                    vec![*field]
                }
                Node::Patches { proj, cls, pos, .. } => {
                    [Some(*proj), *cls, Some(*pos)].into_iter().flatten().collect()
                }
                Node::Cross(_) => cross_field.into_iter().collect(),
                Node::Additive(a) => vec![a.field],
                _ => vec![],
            };
            for f in fs {
                if !u.contains(&f) {
                    u.push(f);
                }
            }
        }
        u
    };
    let mut field_names: Vec<Option<&'static str>> = vec![None; fields.len()];
    for &f in &used_fields {
        let fused = fields[f].weights.len() > 1;
        let collides = used_fields.iter().filter(|&&g| last_segments[g] == last_segments[f]).count() > 1;
        if Some(f) == cross_field {
            field_names[f] = Some(CROSS_KEY_VALUE);
            continue;
        }
        if nodes.iter().any(|n| matches!(n, Node::Additive(a) if a.field == f)) {
            field_names[f] = Some(ADDITIVE_CROSS);
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
        field_names[f] = Some(ident_name(&raw, &mut taken));
    }
    let mut out_fields: Vec<Field> =
        used_fields.iter().map(|&f| to_field(field_names[f].unwrap_or("field"), &fields[f])).collect();

    // Ops.
    let mut ops: Vec<Op> = Vec::new();
    let mut attention_index = 0;
    for node in &nodes {
        let fname = |f: usize| field_names[f].unwrap_or("field");
        match *node {
            Node::Gather { field, index, offset, acc, out } => ops.push(Op::Gather {
                field: fname(field),
                index,
                output: val(out),
                accumulate: acc.is_some(),
                offset,
            }),
            Node::Linear { field, input, out } => {
                ops.push(Op::Linear { field: fname(field), input: val(input), output: val(out), act: None })
            }
            Node::Act { out, act, .. } => ops.push(Op::Activation { value: val(out), act }),
            Node::Scale { out, factor, .. } => ops.push(Op::Scale { value: val(out), factor }),
            Node::Patches { image, proj, cls, pos, .. } => ops.push(Op::Patches {
                image,
                patches: fname(proj),
                class_token: cls.map(fname),
                positions: fname(pos),
            }),
            Node::Pool { out, .. } | Node::Normalize { out, .. } => {
                // `program::interpret` moves pooling out of the tail into the outputs.
                cx.error(tensors[out].span, "a pooled vector is a named output: return a tuple, e.g. `-> (states, embedding)` with `let embedding = normalize(mean_pool(x));`");
                return None;
            }
            Node::Cross(ref c) => {
                if on_stream[c.q] || on_stream[c.out] {
                    cx.error(tensors[c.out].span, "cross-attention reads projected queries and writes its context into scratch, not the stream: project the stream first");
                    return None;
                }
                ops.push(Op::CrossAttention {
                    q: val(c.q),
                    kv: CROSS_KEY_VALUE,
                    output: val(c.out),
                    heads: c.heads,
                    head_dim: c.head_dim,
                    scaled: c.scaled,
                });
            }
            Node::Additive(ref a) => {
                if on_stream[a.out] {
                    cx.error(tensors[a.out].span, "additive cross-attention writes its context into scratch, not the stream: project it (`linear(context, d_model)`) and add that");
                    return None;
                }
                ops.push(Op::AdditiveCross {
                    field: ADDITIVE_CROSS,
                    input: val(a.input),
                    scores: Value { name: ADDITIVE_SCORES, width: a.kind.scratch_width() },
                    alignments: Value { name: ADDITIVE_ALIGNMENTS, width: a.max_source },
                    output: val(a.out),
                });
            }
            Node::Glu { input, out, act } => {
                if on_stream[input] || on_stream[out] {
                    cx.error(
                        tensors[out].span,
                        "a gated unit reads and writes scratch values, not the stream",
                    );
                    return None;
                }
                ops.push(Op::Glu { input: val(input), output: val(out), act });
            }
            Node::Norm { field, input, out } => {
                ops.push(Op::Norm { field: fname(field), input: val(input), output: val(out) })
            }
            Node::Concat { ref inputs, out } => {
                let inputs: Vec<Value> = inputs.iter().map(|&t| val(t)).collect();
                ops.push(Op::Concat { inputs: Box::leak(inputs.into_boxed_slice()), output: val(out) });
            }
            Node::Slice { input, start, out } => {
                ops.push(Op::Slice { input: val(input), start, output: val(out) })
            }
            Node::Add { a, b, out } => {
                let (o, a_v, b_v) = (val(out), val(a), val(b));
                let sublayer = if a_v == o { b_v } else { a_v };
                ops.push(Op::Add { stream: o, sublayer });
            }
            Node::Attention(ref a) => {
                if on_stream[a.q] || on_stream[a.out] {
                    cx.error(tensors[a.out].span, "attention reads projections and writes its context into scratch, not the stream: project the stream first");
                    return None;
                }
                if let Some((theta, rotary_dims)) = a.rope {
                    if last_use[a.q] != nodes.iter().position(|n| n == node) {
                        cx.error(tensors[a.q].span, "rotary positions rotate the projections in place: they must not be read after the attention");
                        return None;
                    }
                    let name = "rope";
                    if !out_fields.iter().any(|f| f.name == name) {
                        out_fields.push(Field {
                            name,
                            doc: "Rotary position tables (cos/sin per position), computed at load.",
                            kind: FieldKind::Rope {
                                max_positions: rope_positions,
                                head_dim: a.head_dim,
                                rotary_dims,
                                theta,
                            },
                            weights: vec![],
                            split: vec![],
                        });
                    }
                    ops.push(Op::Rope { field: name, qkv: val(a.q), heads: a.heads, kv_heads: a.kv_heads });
                }
                let window = match windows.get(attention_index) {
                    Some(per_layer) => Window::of_layers(per_layer),
                    None => Window::from_option(a.window),
                };
                let sparse = match layouts.get(attention_index) {
                    Some(per_layer) => Layouts::of_layers(per_layer),
                    None => Layouts::from_option(a.sparse),
                };
                attention_index += 1;
                ops.push(Op::Attention {
                    qkv: val(a.q),
                    output: val(a.out),
                    heads: a.heads,
                    kv_heads: a.kv_heads,
                    head_dim: a.head_dim,
                    causal: a.causal,
                    window,
                    sparse,
                    bias: a.bias.is_some(),
                    scaled: a.scaled,
                });
            }
        }
    }
    Some((out_fields, graph::fuse(ops)))
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
