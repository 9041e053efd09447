//! A composed program → the same [`Graph`] the presets lower to: the statements before the loop
//! become the embeddings block, the loop body the one layer type, the statements after it the
//! final norm and the head. Graph-level fusion happens here: three projections of one tensor
//! feeding an attention become one QKV GEMM, an embedding lookup added to the stream becomes an
//! accumulating gather, and [`graph::fuse`] folds activations into GEMM epilogues and adds into
//! residual norms. Values are assigned buffers by liveness: the stream `x` is updated in place,
//! everything else lives in named scratch buffers, reused once their value is dead.
//!
//! [`lower_section`] runs a section through the phases, one child module each: [`rewrite`] (the
//! graph-level rewrites), [`buffers`] (liveness, the stream chain, scratch buffers) and [`ops`]
//! (field names, then one op per node).

mod buffers;
mod ops;
mod rewrite;

use std::cell::RefCell;
use std::collections::HashSet;

use proc_macro2::Span;

use super::program::{AttentionNode, FieldDef, Node, Program, Section};
use crate::ctxt::Ctxt;
use crate::graph::{self, Block, Field, FieldKind, Graph, Index, Op, Value};
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
    let StackInputs { vocab_size, max_positions, type_vocab_size, patches } =
        stack_inputs(cx, program, family, max_positions_dim, out_span)?;
    let body = &program.repeat.body;
    let d_model = body.tensors[body.input.unwrap_or(0)].width;
    let attentions: Vec<&AttentionNode> =
        body.nodes.iter().filter_map(|n| if let Node::Attention(a) = n { Some(a) } else { None }).collect();
    let Some(first) = attentions.first() else {
        cx.error(program.repeat.span, "the layers have no attention: add `attention(…)` to the loop body");
        return None;
    };
    attention_fits_the_family(cx, program, family, &attentions);
    let rope_positions = rope_positions(cx, program, &attentions, max_positions)?;
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
    embeddings_write_in_place(cx, emb, embeddings.as_ref(), out_span);
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

/// What the statements before the loop say about the stack's input.
struct StackInputs {
    /// Token ids (an image model's one placeholder row).
    vocab_size: usize,
    max_positions: Option<usize>,
    type_vocab_size: Option<usize>,
    /// Image models: the images the patches are cut from, and whether a class token leads them.
    patches: Option<(ImageInput, bool)>,
}

/// The stack's input sizes, from its lookups (or its patches): the vocabulary must be embedded
/// (or the image cut into patches), and token types, if an input, embedded too.
fn stack_inputs(
    cx: &mut Ctxt,
    program: &Program,
    family: Family,
    max_positions_dim: Option<usize>,
    out_span: Span,
) -> Option<StackInputs> {
    let emb = &program.embeddings;
    let patches = emb.nodes.iter().find_map(|n| match *n {
        Node::Patches { image, cls, .. } => Some((image, cls.is_some())),
        _ => None,
    });
    let vocab_size = if family == Family::Image { patches.map(|_| 1) } else { table_rows(emb, Index::Token) };
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
        None => table_rows(emb, Index::Position).or(max_positions_dim),
    };
    let type_vocab_size = table_rows(emb, Index::TokenType);
    if program.token_types && type_vocab_size.is_none() {
        cx.error(out_span, "`token_types` is an input but never embedded: `embedding(token_types, type_vocab_size, d_model)`");
    }
    Some(StackInputs { vocab_size, max_positions, type_vocab_size, patches })
}

/// Rows a lookup by `index` covers: its table's rows past its offset (BART's positions start at
/// row 2).
fn table_rows(emb: &Section, index: Index) -> Option<usize> {
    emb.nodes.iter().find_map(|n| match n {
        Node::Gather { field, index: i, offset, .. } if *i == index => match emb.fields[*field].kind {
            FieldKind::Embedding { rows, .. } | FieldKind::Sinusoidal { rows, .. } => {
                Some(rows.saturating_sub(*offset))
            }
            _ => None,
        },
        _ => None,
    })
}

/// Rule: what the model returns decides its attention: a model returning `logits` is a causal
/// decoder with one attention per layer (one KV cache entry); encoders and image classifiers
/// see the whole sequence.
fn attention_fits_the_family(
    cx: &mut Ctxt,
    program: &Program,
    family: Family,
    attentions: &[&AttentionNode],
) {
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
}

/// Rule: rotary positions need the longest sequence (their table has a row per position). The
/// rows a rotary table gets; one when no attention rotates.
fn rope_positions(
    cx: &mut Ctxt,
    program: &Program,
    attentions: &[&AttentionNode],
    max_positions: Option<usize>,
) -> Option<usize> {
    match (attentions.iter().any(|a| a.rope.is_some()), max_positions) {
        (true, None) => {
            cx.error(
                program.repeat.span,
                "rotary positions need the longest sequence: declare `max_positions: …`",
            );
            None
        }
        (_, p) => Some(p.unwrap_or(1)),
    }
}

/// Rule: before the layers every step writes the stream in place (the embeddings block has no
/// scratch struct of its own): lookups, sums, one norm.
fn embeddings_write_in_place(cx: &mut Ctxt, emb: &Section, embeddings: Option<&Block>, out_span: Span) {
    if let Some(b) = embeddings {
        if let Some(v) = b.scratch().first() {
            let span = emb.tensors.iter().find(|t| t.hint == v.name).map_or(out_span, |t| t.span);
            cx.error(span, "before the layers every step must write the stream in place (lookups, sums, one norm): this value would need a buffer of its own");
        }
    }
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

/// Lowers one section: the graph-level rewrites, then liveness and the values' places (the
/// stream or scratch buffers), then the fields and one op per node, then [`graph::fuse`].
fn lower_section(
    cx: &mut Ctxt,
    sec: &Section,
    role: Role,
    windows: &[Vec<Option<usize>>],
    layouts: &[Vec<Option<Sparse>>],
    rope_positions: usize,
) -> Option<(Vec<Field>, Vec<Op>)> {
    let rewritten = rewrite::rewrite(cx, sec)?;
    let last_use = buffers::last_uses(&rewritten.nodes, rewritten.tensors.len(), sec.output);
    let places = buffers::place(cx, sec, role, &rewritten, &last_use)?;
    let (fields, ops) =
        ops::fields_and_ops(cx, &rewritten, &places, &last_use, windows, layouts, rope_positions)?;
    Some((fields, graph::fuse(ops)))
}
