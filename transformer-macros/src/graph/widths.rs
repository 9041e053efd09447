//! Width checking: every op's values against the fields it uses. Presets are right by
//! construction; a composed model's mismatch becomes a compile error here, one per op.

use proc_macro2::Span;

use super::{Block, FieldKind, Op, Value};

/// Checks that every op's inputs have the widths its field expects. Presets are right by
/// construction; this is what turns a composed block's mismatch into a spanned compile error.
pub fn check_widths<'g>(blocks: impl Iterator<Item = &'g Block>, span: Span) -> Result<(), syn::Error> {
    let mut errors: Vec<syn::Error> = Vec::new();
    for block in blocks {
        for op in &block.ops {
            if let Err(message) = check_op(block, op) {
                errors.push(syn::Error::new(span, format!("in block `{}`: {message}", block.suffix)));
            }
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            errors.for_each(|e| first.combine(e));
            Err(first)
        }
    }
}

/// One op against its block's fields; the attentions, whose checks are longer, have their own
/// functions below.
fn check_op(block: &Block, op: &Op) -> Result<(), String> {
    match *op {
        Op::Linear { field: f, input, output, .. } => match field_kind(block, f)? {
            FieldKind::Linear { input: i, output: o, .. } if i == input.width && o == output.width => Ok(()),
            FieldKind::Linear { input: i, output: o, .. } => Err(format!(
                "linear `{f}` maps {i} to {o} features but is applied to [S, {}] (`{}`) writing [S, {}] (`{}`)",
                input.width, input.name, output.width, output.name
            )),
            _ => Err(format!("`{f}` is not a linear layer")),
        },
        Op::Attention { qkv, output, heads, kv_heads, head_dim, .. } => {
            attention_widths(qkv, output, heads, kv_heads, head_dim)
        }
        Op::CrossAttention { q, kv, output, heads, head_dim, .. } => {
            cross_attention_widths(block, q, kv, output, heads, head_dim)
        }
        Op::AdditiveCross { field, input, scores, output, .. } => {
            additive_cross_widths(block, field, input, scores, output)
        }
        Op::LshAttention { rotations, qkv, output, heads, head_dim, buckets, hashes, .. } => {
            lsh_attention_widths(block, rotations, qkv, output, heads, head_dim, buckets, hashes)
        }
        Op::LocalAttention { qkv, output, heads, head_dim, .. } => {
            chunked_widths("local", qkv, 3, output, heads, head_dim)
        }
        Op::Scale { .. } => Ok(()),
        Op::Concat { inputs, output } if inputs.iter().map(|v| v.width).sum::<usize>() == output.width => Ok(()),
        Op::Concat { inputs, output } => Err(format!(
            "concatenating widths {:?} gives {}, not [S, {}] (`{}`)",
            inputs.iter().map(|v| v.width).collect::<Vec<_>>(),
            inputs.iter().map(|v| v.width).sum::<usize>(),
            output.width,
            output.name
        )),
        Op::Slice { input, start, output } if start + output.width <= input.width => Ok(()),
        Op::Slice { input, start, output } => Err(format!(
            "columns {start}..{} are outside [S, {}] (`{}`)",
            start + output.width,
            input.width,
            input.name
        )),
        Op::Add { stream, sublayer } => same_width(stream, sublayer),
        Op::AddNorm { field: f, stream, sublayer } => {
            same_width(stream, sublayer)?;
            norm_fits(f, field_kind(block, f)?, stream)
        }
        Op::Norm { field: f, input, output } => {
            same_width(input, output)?;
            norm_fits(f, field_kind(block, f)?, input)
        }
        Op::Activation { .. } => Ok(()),
        Op::Rope { field: f, .. } => match field_kind(block, f)? {
            FieldKind::Rope { .. } => Ok(()),
            _ => Err(format!("`{f}` is not a rotary table")),
        },
        Op::Glu { input, output, .. } if input.width == 2 * output.width => Ok(()),
        Op::Glu { input, output, .. } => Err(format!(
            "a gated unit halves its input: [S, {}] (`{}`) cannot give [S, {}] (`{}`)",
            input.width, input.name, output.width, output.name
        )),
        Op::Patches { image, patches, .. } => match field_kind(block, patches)? {
            FieldKind::Linear { input, .. } if input == image.patch_width() => Ok(()),
            _ => Err(format!("patch projection `{patches}` does not take {} inputs", image.patch_width())),
        },
        Op::Gather { field: f, output, .. } => match field_kind(block, f)? {
            FieldKind::Embedding { width, .. }
            | FieldKind::Sinusoidal { width, .. }
            | FieldKind::Axial { width, .. }
                if width == output.width =>
            {
                Ok(())
            }
            _ => Err(format!("embedding `{f}` does not produce [S, {}]", output.width)),
        },
    }
}

/// The kind of the block's field `name`.
fn field_kind(block: &Block, name: &str) -> Result<FieldKind, String> {
    block.field(name).map(|f| f.kind).ok_or_else(|| format!("no field `{name}`"))
}

/// A residual add (or a norm written to another value) needs two values of one width.
fn same_width(a: Value, b: Value) -> Result<(), String> {
    if a.width == b.width {
        Ok(())
    } else {
        Err(format!("cannot add [S, {}] (`{}`) and [S, {}] (`{}`)", a.width, a.name, b.width, b.name))
    }
}

/// Self-attention reads `[Q | K | V]` (grouped-query K and V may be narrower than Q) and writes
/// the query heads' context.
fn attention_widths(
    qkv: Value,
    output: Value,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<(), String> {
    if qkv.width != (heads + 2 * kv_heads) * head_dim || output.width != heads * head_dim {
        return Err(format!(
            "attention with {heads} heads of {head_dim} needs [S, {}] projections and writes [S, {}], got [S, {}] and [S, {}]",
            (heads + 2 * kv_heads) * head_dim,
            heads * head_dim,
            qkv.width,
            output.width
        ));
    }
    Ok(())
}

/// Cross-attention reads the heads' queries, writes their context, and its `kv` field projects the
/// memory to keys and values for every head.
fn cross_attention_widths(
    block: &Block,
    q: Value,
    kv: &str,
    output: Value,
    heads: usize,
    head_dim: usize,
) -> Result<(), String> {
    if q.width != heads * head_dim || output.width != heads * head_dim {
        return Err(format!(
            "cross-attention with {heads} heads of {head_dim} needs [S, {}] queries and writes [S, {}], got [S, {}] and [S, {}]",
            heads * head_dim,
            heads * head_dim,
            q.width,
            output.width
        ));
    }
    match field_kind(block, kv)? {
        FieldKind::Linear { output, .. } if output == 2 * heads * head_dim => Ok(()),
        FieldKind::Linear { output, .. } => Err(format!(
            "cross-attention `{kv}` projects the memory to {output} features, but {heads} heads of {head_dim} need keys and values of {}",
            2 * heads * head_dim
        )),
        _ => Err(format!("`{kv}` is not a linear layer")),
    }
}

/// An additive or location cross-attention's field fixes its query width, the memory's width (the
/// context's) and its scores' width.
fn additive_cross_widths(
    block: &Block,
    field: &str,
    input: Value,
    scores: Value,
    output: Value,
) -> Result<(), String> {
    match field_kind(block, field)? {
        FieldKind::Additive { kind, query, memory }
            if query == input.width && memory == output.width && kind.scratch_width() == scores.width =>
        {
            Ok(())
        }
        FieldKind::Additive { kind, query, memory } => Err(format!(
            "cross-attention `{field}` reads [S, {query}] queries over [M, {memory}] memory rows with [S, {}] \
             scores, but is applied to [S, {}] (`{}`) writing [S, {}] (`{}`) with [S, {}] (`{}`)",
            kind.scratch_width(),
            input.width,
            input.name,
            output.width,
            output.name,
            scores.width,
            scores.name
        )),
        _ => Err(format!("`{field}` is not an additive attention")),
    }
}

/// LSH attention reads `[QK | V]`, and its rotations field must have been drawn for this
/// attention's heads, head width, hashes and buckets.
fn lsh_attention_widths(
    block: &Block,
    rotations: &str,
    qkv: Value,
    output: Value,
    heads: usize,
    head_dim: usize,
    buckets: usize,
    hashes: usize,
) -> Result<(), String> {
    chunked_widths("LSH", qkv, 2, output, heads, head_dim)?;
    match field_kind(block, rotations)? {
        FieldKind::Rotations { heads: h, head_dim: hd, hashes: n, buckets: b }
            if (h, hd, n, b) == (heads, head_dim, hashes, buckets) =>
        {
            Ok(())
        }
        _ => Err(format!("`{rotations}` is not this attention's rotations")),
    }
}

/// A chunked attention reads `parts` projections of `heads × head_dim` (LSH: `[QK | V]`, local:
/// `[Q | K | V]`) and writes the heads' context.
fn chunked_widths(
    kind: &str,
    qkv: Value,
    parts: usize,
    output: Value,
    heads: usize,
    head_dim: usize,
) -> Result<(), String> {
    let inner = heads * head_dim;
    if qkv.width == parts * inner && output.width == inner {
        Ok(())
    } else {
        Err(format!(
            "{kind} attention with {heads} heads of {head_dim} needs [S, {}] projections and writes [S, {inner}], got [S, {}] and [S, {}]",
            parts * inner,
            qkv.width,
            output.width
        ))
    }
}

/// A norm's field must be a norm, of the normalised value's width.
fn norm_fits(name: &str, kind: FieldKind, value: Value) -> Result<(), String> {
    match kind {
        FieldKind::LayerNorm { width, .. } | FieldKind::RmsNorm { width, .. } if width == value.width => {
            Ok(())
        }
        FieldKind::LayerNorm { width, .. } | FieldKind::RmsNorm { width, .. } => {
            Err(format!("norm `{name}` of width {width} applied to [S, {}]", value.width))
        }
        _ => Err(format!("`{name}` is not a norm")),
    }
}
