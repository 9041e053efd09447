//! A composed stack's position bias: the attentions' `bias = alibi` / `bias = relative(…)`
//! become one table field of the embeddings block (as in the presets), which the model borrows
//! once per forward pass and every biased attention adds to its scores.

use super::lower::intern;
use proc_macro2::Span;

use super::program::{AttentionNode, BiasArg, Node, Program};
use crate::ctxt::Ctxt;
use crate::graph::{Field, FieldKind, Index};

/// The table every biased attention of the layers reads, if any, with the rules a stack's bias
/// obeys (errors in `cx`; `None` after an error too).
pub fn table(
    cx: &mut Ctxt,
    program: &Program,
    attentions: &[&AttentionNode],
    max_positions: Option<usize>,
) -> Option<Field> {
    let biased: Vec<(&AttentionNode, &BiasArg, Span)> =
        attentions.iter().filter_map(|a| a.bias.as_ref().map(|(b, at)| (*a, b, at.0))).collect();
    let &(first, bias, at) = biased.first()?;
    if !one_table(cx, &biased) {
        return None;
    }
    let Some(max_positions) = max_positions else {
        cx.error(
            at,
            "a position bias is a table per offset up to the longest sequence: declare `max_positions: …`",
        );
        return None;
    };
    if *bias == BiasArg::Alibi && !alibi_replaces_positions(cx, program, at) {
        return None;
    }
    let bidirectional = !first.causal;
    Some(match bias {
        BiasArg::Alibi => Field {
            name: "alibi",
            doc: "ALiBi score bias per head and offset, shared by every layer.",
            kind: FieldKind::Alibi { heads: first.heads, max_positions, bidirectional },
            weights: vec![],
            split: vec![],
        },
        BiasArg::Relative { buckets, max_distance, weights } => Field {
            name: "relative_attention_bias",
            doc: "Relative position bias per head and distance bucket, shared by every layer.",
            kind: FieldKind::RelativeBias {
                heads: first.heads,
                buckets: *buckets,
                max_distance: *max_distance,
                bidirectional,
                max_positions,
            },
            weights: vec![intern(&format!("{weights}.weight"))],
            split: vec![],
        },
    })
}

/// Rule: a stack has one position-bias table, so every attention that takes a `bias` takes the
/// same one, with the same heads and direction.
fn one_table(cx: &mut Ctxt, biased: &[(&AttentionNode, &BiasArg, Span)]) -> bool {
    let (first, bias, _) = biased[0];
    let mut ok = true;
    for &(a, b, at) in &biased[1..] {
        if b != bias || a.heads != first.heads || a.causal != first.causal {
            cx.error(
                at,
                "every attention of the layers shares one position-bias table: give each the same `bias`, heads and direction",
            );
            ok = false;
        }
    }
    ok
}

/// Rule: ALiBi is the model's position signal; adding a position table as well counts positions
/// twice (MosaicBERT, BLOOM and MPT have none), so `bias = alibi` goes without
/// `embedding(positions, …)`.
fn alibi_replaces_positions(cx: &mut Ctxt, program: &Program, bias_at: Span) -> bool {
    let emb = &program.embeddings;
    let table = emb.nodes.iter().find_map(|n| match n {
        Node::Gather { index: Index::Position, out, .. } => Some(emb.tensors[*out].span),
        _ => None,
    });
    let Some(table_at) = table else { return true };
    cx.error(
        bias_at,
        "`bias = alibi` is the model's position signal, and positions are also embedded: drop one of them",
    );
    cx.error(table_at, "positions embedded here");
    false
}
