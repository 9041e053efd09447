//! Rules of the position schemes and the keys that parametrise them: RoPE's base (`rope_theta`)
//! and rotated width (`rotary_dims`), T5's relative buckets (`relative_buckets`,
//! `relative_max_distance`). Each key goes with its scheme, and each scheme fits the head.

use super::{
    given_name, given_size, list, positive_number, Entries, Sizes, MAX_BUCKETS, MAX_POSITIONS, MAX_WIDTH,
    POSITIONS,
};
use crate::ast::{Entry, Value};
use crate::ctxt::Ctxt;
use crate::spec::{Attention, Positions};

/// The position scheme as chosen (`None` where absent or invalid, already reported), and T5's
/// bucket keys, which [`relative_buckets`] checks once the attention's direction is known.
pub(super) struct PositionChoice {
    pub(super) positions: Option<Positions>,
    buckets: Option<usize>,
    max_distance: Option<usize>,
}

/// `positions` and the keys that parametrise it, each given exactly with its scheme; rotary
/// positions fit the head.
pub(super) fn positions(cx: &mut Ctxt, entries: &Entries, sizes: &Sizes) -> PositionChoice {
    let rope_theta = entries.get("rope_theta").and_then(|e| positive_number(cx, e, "`10000.0`"));
    let rotary_dims = given_size(cx, entries, "rotary_dims", MAX_WIDTH);
    let buckets = given_size(cx, entries, "relative_buckets", MAX_BUCKETS);
    let max_distance = given_size(cx, entries, "relative_max_distance", MAX_POSITIONS);
    let positions = given_name(cx, entries, "positions", POSITIONS).and_then(|n| match n {
        "learned" => Some(Positions::Learned),
        "sinusoidal" => Some(Positions::Sinusoidal),
        "alibi" => Some(Positions::Alibi),
        "relative" => buckets
            .zip(max_distance)
            .map(|(buckets, max_distance)| Positions::Relative { buckets, max_distance }),
        _ => rope_theta
            .zip(rotary_dims.or(sizes.head_dim))
            .map(|(theta, rotary_dims)| Positions::Rope { theta, rotary_dims }),
    });
    if let Some(p) = entries.get("positions") {
        rope_theta_goes_with_rope(cx, p, entries.get("rope_theta").copied());
        buckets_go_with_relative(cx, p, entries);
    }
    if let (Some(Positions::Rope { .. }), Some(hd)) = (positions, sizes.head_dim) {
        let derived = match (sizes.head_dim_given, sizes.d_model, sizes.heads) {
            (None, Some(d), Some(h)) => format!(" ({d} / {h})"),
            _ => String::new(),
        };
        match (rotary_dims, entries.get("rotary_dims")) {
            (Some(r), Some(entry)) => rotary_dims_fit(cx, r, hd, entry),
            _ => rope_needs_even_head_dim(cx, hd, &derived, entries["positions"]),
        }
    }
    rotary_dims_go_with_rope(cx, entries, positions);
    PositionChoice { positions, buckets, max_distance }
}

/// Rule: `rotary_dims` belongs to `positions: rope` (reported when `positions` names another
/// scheme).
fn rotary_dims_go_with_rope(cx: &mut Ctxt, entries: &Entries, positions: Option<Positions>) {
    if let (Some(entry), false) =
        (entries.get("rotary_dims"), matches!(positions, Some(Positions::Rope { .. })))
    {
        if entries.get("positions").is_some_and(|p| !matches!(&p.value, Value::Name(n) if n == "rope")) {
            cx.error(entry.key.span(), "`rotary_dims` belongs to `positions: rope`: remove it");
        }
    }
}

/// T5's buckets as given: an even number in a bidirectional stack, and a farthest distance past
/// the exactly-bucketed offsets.
pub(super) fn relative_buckets(
    cx: &mut Ctxt,
    entries: &Entries,
    p: &PositionChoice,
    attention: Option<Attention>,
) {
    if let (Some(b), Some(entry)) = (p.buckets, entries.get("relative_buckets")) {
        // An encoder-decoder is checked as its (bidirectional) encoder: its buckets are even.
        if attention != Some(Attention::Causal) {
            relative_buckets_even(cx, b, entry);
        }
        if let (Some(m), Some(max_entry)) = (p.max_distance, entries.get("relative_max_distance")) {
            relative_buckets_fit(cx, b, m, max_entry);
        }
    }
}

/// Rule: `rope_theta` is given exactly when `positions: rope` is.
fn rope_theta_goes_with_rope(cx: &mut Ctxt, positions: &Entry, theta: Option<&Entry>) {
    let is_rope = matches!(&positions.value, Value::Name(n) if n == "rope");
    match (is_rope, theta) {
        (true, None) => cx.error(
            positions.value.span(),
            "`positions: rope` needs its base: add `rope_theta: 10000.0` (the checkpoint's `rope_theta`)",
        ),
        (false, Some(theta)) => cx.error(
            theta.key.span(),
            "`rope_theta` belongs to `positions: rope`: remove it or use rotary positions",
        ),
        _ => {}
    }
}

/// Rule: rotary embeddings rotate pairs of dimensions, so the head width is even.
fn rope_needs_even_head_dim(cx: &mut Ctxt, head_dim: usize, derived: &str, positions: &Entry) {
    if !head_dim.is_multiple_of(2) {
        cx.error(
            positions.value.span(),
            format!("rotary positions rotate pairs of dimensions, but a head is {head_dim} wide{derived}: use an even head width"),
        );
    }
}

/// Rule: partial rotary turns the first `rotary_dims` of each head, in pairs: an even number no
/// larger than the head.
fn rotary_dims_fit(cx: &mut Ctxt, rotary_dims: usize, head_dim: usize, entry: &Entry) {
    if rotary_dims.is_multiple_of(2) && rotary_dims <= head_dim {
        return;
    }
    cx.error(
        entry.value.span(),
        format!(
            "`rotary_dims` of {rotary_dims} must be even and at most the head width, {head_dim} (GPT-NeoX: \
             `rotary_pct × head_dim`)"
        ),
    );
}

/// Rule: `relative_buckets` and `relative_max_distance` are given exactly when
/// `positions: relative` is.
fn buckets_go_with_relative(cx: &mut Ctxt, positions: &Entry, entries: &Entries) {
    let is_relative = matches!(&positions.value, Value::Name(n) if n == "relative");
    let keys = ["relative_buckets", "relative_max_distance"];
    if is_relative {
        let missing: Vec<&str> = keys.into_iter().filter(|k| !entries.contains_key(*k)).collect();
        if !missing.is_empty() {
            cx.error(
                positions.value.span(),
                format!(
                    "`positions: relative` needs {} (the checkpoint's `relative_attention_num_buckets` and \
                     `relative_attention_max_distance`, e.g. 32 and 128)",
                    list(&missing)
                ),
            );
        }
    } else {
        for key in keys {
            if let Some(e) = entries.get(key) {
                cx.error(e.key.span(), format!("`{key}` belongs to `positions: relative`: remove it"));
            }
        }
    }
}

/// Rule: T5's buckets are half exact (one per offset) and half logarithmic up to
/// `relative_max_distance`, in each direction: at least 4 buckets, and the farthest distance beyond
/// the exact ones (`max_distance > buckets / 2`), else the logarithmic half is empty.
fn relative_buckets_fit(cx: &mut Ctxt, buckets: usize, max_distance: usize, entry: &Entry) {
    if buckets >= 4 && max_distance > buckets / 2 {
        return;
    }
    cx.error(
        entry.value.span(),
        format!(
            "{buckets} relative buckets need `relative_max_distance` above {} (the last exactly-bucketed \
             offset) and at least 4 buckets; found {max_distance} (T5 uses 32 buckets up to 128)",
            buckets / 2
        ),
    );
}

/// Rule: T5 buckets split into two halves (keys before and after the query) in a bidirectional
/// stack (an encoder, and so an encoder-decoder's shared setting), so their number is even; a
/// causal stack's buckets all count keys before the query.
fn relative_buckets_even(cx: &mut Ctxt, buckets: usize, entry: &Entry) {
    if !buckets.is_multiple_of(2) {
        cx.error(
            entry.value.span(),
            format!(
                "relative buckets are split in half by direction, so their number is even: {buckets} is odd"
            ),
        );
    }
}
