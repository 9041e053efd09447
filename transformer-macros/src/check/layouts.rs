//! Family-specific rules: what each single-stack checkpoint format (`weights: bert`, `gpt2`,
//! `vit`, `llama`, `neox`, `bloom`, and `t5` alone) fixes about the model, each conflict reported
//! at the value and at the format. The encoder-decoder formats' rules are in
//! [`seq2seq::layout`](super::seq2seq::layout).

use super::{seq2seq, Choices, Entries, Sizes};
use crate::ast::Value;
use crate::ctxt::Ctxt;
use crate::spec::{Activation, Attention, NormKind, Placement, Positions, WeightScheme};

/// The rules of the chosen checkpoint format.
pub(super) fn scheme_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    c: &Choices,
    sizes: &Sizes,
    is_image: bool,
    is_seq2seq: bool,
) {
    let (placement, norm, positions, activation, attention) =
        (c.placement, c.norm_kind, c.positions, c.activation, c.attention);
    if let (Some(WeightScheme::T5), false) = (c.weights, is_seq2seq) {
        t5_alone_is_its_encoder(cx, entries, attention);
    }
    match c.weights {
        Some(WeightScheme::Bert) => bert_layout(cx, entries, placement, attention),
        Some(WeightScheme::Gpt2) => gpt2_layout(cx, entries, placement, positions, attention),
        Some(WeightScheme::Vit) => vit_layout(cx, entries, placement, positions, attention, is_image),
        Some(WeightScheme::Llama) => {
            llama_layout(cx, entries, placement, norm, positions, activation, attention)
        }
        Some(WeightScheme::NeoX) => neox_layout(cx, entries, norm, positions, attention),
        Some(WeightScheme::Bloom) => {
            bloom_layout(cx, entries, placement, norm, positions, activation, attention)
        }
        Some(scheme @ (WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch)) => {
            let choices = seq2seq::Choices {
                placement,
                norm,
                positions,
                activation,
                scale_embeddings: c.scale_embeddings,
            };
            seq2seq::layout(cx, entries, scheme, &choices);
        }
        // `check/reformer.rs` validates a Reformer before these rules could see one.
        Some(WeightScheme::Reformer) | None => {}
    }
    if let Some(scheme @ (WeightScheme::Bert | WeightScheme::Gpt2 | WeightScheme::Vit)) = c.weights {
        classic_layout(cx, entries, scheme, norm, positions, activation, sizes.heads, sizes.kv_heads);
    }
}

/// Rule: BERT checkpoints are post-norm bidirectional encoders; their tensor names have no place
/// for a final norm or a causal head.
fn bert_layout(cx: &mut Ctxt, entries: &Entries, placement: Option<Placement>, attention: Option<Attention>) {
    if placement == Some(Placement::Pre) {
        layout_conflict(
            cx,
            entries,
            "norm_placement",
            "`weights: bert` checkpoints are post-norm: use `norm_placement: post`",
        );
    }
    if attention == Some(Attention::Causal) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "`weights: bert` checkpoints are encoders: use `attention: bidirectional`",
        );
    }
}

/// Rule: GPT-2 checkpoints are pre-norm causal decoders with learned positions and no token
/// types.
fn gpt2_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    positions: Option<Positions>,
    attention: Option<Attention>,
) {
    if placement == Some(Placement::Post) {
        layout_conflict(
            cx,
            entries,
            "norm_placement",
            "`weights: gpt2` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if positions == Some(Positions::Sinusoidal) {
        layout_conflict(
            cx,
            entries,
            "positions",
            "`weights: gpt2` checkpoints learn their positions (`wpe`): use `positions: learned`",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "`weights: gpt2` checkpoints are decoders: use `attention: causal`",
        );
    }
    if let Some(types) = entries.get("type_vocab_size") {
        cx.error(
            types.key.span(),
            "`weights: gpt2` checkpoints have no token-type embeddings: remove `type_vocab_size`",
        );
        cx.error(entries["weights"].value.span(), "GPT-2 naming chosen here");
    }
}

/// Rule: ViT checkpoints are pre-norm bidirectional image encoders with learned positions.
fn vit_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    positions: Option<Positions>,
    attention: Option<Attention>,
    is_image: bool,
) {
    if placement == Some(Placement::Post) {
        layout_conflict(
            cx,
            entries,
            "norm_placement",
            "`weights: vit` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if positions == Some(Positions::Sinusoidal) {
        layout_conflict(
            cx,
            entries,
            "positions",
            "`weights: vit` checkpoints learn their positions: use `positions: learned`",
        );
    }
    vit_positions_stay_learned(cx, entries, positions);
    if attention == Some(Attention::Causal) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "`weights: vit` checkpoints are encoders: use `attention: bidirectional`",
        );
    }
    if !is_image {
        cx.error(
            entries["weights"].value.span(),
            "`weights: vit` checkpoints read images: declare `image_size`, `patch_size`, `channels`, `labels` and `pooling`",
        );
    }
}

/// Rule: ViT adds a learned position per patch. Distance biases (ALiBi, T5's buckets) and
/// rotations measure a 1-D distance, and over patches in raster order that distance puts the
/// patch below a neighbour a whole row away: no ViT checkpoint positions patches so.
fn vit_positions_stay_learned(cx: &mut Ctxt, entries: &Entries, positions: Option<Positions>) {
    if matches!(positions, Some(Positions::Rope { .. } | Positions::Relative { .. } | Positions::Alibi)) {
        layout_conflict(
            cx,
            entries,
            "positions",
            "`weights: vit` checkpoints learn a position per patch: use `positions: learned` (1-D \
             distance biases and rotations over patches in raster order would put vertical neighbours a \
             whole row apart)",
        );
    }
}

/// Rule: `weights: t5` without `encoder`/`decoder` sections is T5's encoder alone
/// (`T5EncoderModel`): bidirectional, with no head and no token types; like the encoder-decoder
/// stacks it is built from, it attends globally with a sequential residual.
fn t5_alone_is_its_encoder(cx: &mut Ctxt, entries: &Entries, attention: Option<Attention>) {
    if attention == Some(Attention::Causal) {
        layout_conflict(
            cx,
            entries,
            "attention",
            "a `weights: t5` model without sections is T5's encoder (`T5EncoderModel`): use `attention: \
             bidirectional`, or declare `encoder: { … }` and `decoder: { … }` for the whole model",
        );
    }
    for key in ["lm_head", "type_vocab_size"] {
        if let Some(entry) = entries.get(key) {
            cx.error(
                entry.key.span(),
                format!("T5's encoder alone (`T5EncoderModel`) has no `{key}`: remove it"),
            );
        }
    }
    let parallel = entries.get("residual").filter(|e| matches!(&e.value, Value::Name(n) if n == "parallel"));
    for entry in ["window", "sparse"].iter().filter_map(|k| entries.get(*k)).chain(parallel) {
        cx.error(
            entry.key.span(),
            format!(
                "`{}` is not implemented for T5's encoder alone in this version (it lowers through the \
                 encoder-decoder stack): remove it",
                entry.key
            ),
        );
    }
}

/// Rule: LLaMA/Mistral checkpoints are pre-norm causal decoders with RMS norms, SwiGLU
/// feed-forwards and no position table: rotary positions, or a score bias (ALiBi as in MPT, or
/// T5's relative buckets with the table in `model.layers.0.self_attn.relative_attention_bias`).
fn llama_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    activation: Option<Activation>,
    attention: Option<Attention>,
) {
    let conflict = |cx: &mut Ctxt, key: &str, message: &str| layout_conflict(cx, entries, key, message);
    if placement == Some(Placement::Post) {
        conflict(
            cx,
            "norm_placement",
            "`weights: llama` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if norm == Some(NormKind::LayerNorm) {
        conflict(cx, "norm", "`weights: llama` checkpoints use RMS norms: use `norm: rms_norm`");
    }
    if matches!(positions, Some(Positions::Learned | Positions::Sinusoidal)) {
        conflict(
            cx,
            "positions",
            "`weights: llama` checkpoints have no position table: use `positions: rope` (or a score bias: \
             `alibi`, `relative`)",
        );
    }
    if matches!(activation, Some(a) if a != Activation::SwiGlu) {
        conflict(
            cx,
            "activation",
            "`weights: llama` feed-forwards are gated (`gate_proj`, `up_proj`): use `activation: swiglu`",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        conflict(cx, "attention", "`weights: llama` checkpoints are decoders: use `attention: causal`");
    }
    if let Some(types) = entries.get("type_vocab_size") {
        cx.error(
            types.key.span(),
            "`weights: llama` checkpoints have no token-type embeddings: remove `type_vocab_size`",
        );
    }
}

/// Rule: GPT-NeoX checkpoints are LayerNorm causal decoders with no position table: rotary
/// positions (partial: `rotary_dims`), or a score bias (ALiBi, or T5's relative buckets with the
/// table in `gpt_neox.layers.0.attention.relative_attention_bias`); `residual: parallel` matches
/// `use_parallel_residual: true`, their default.
fn neox_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    attention: Option<Attention>,
) {
    let conflict = |cx: &mut Ctxt, key: &str, message: &str| layout_conflict(cx, entries, key, message);
    if norm == Some(NormKind::RmsNorm) {
        conflict(cx, "norm", "`weights: neox` checkpoints use LayerNorm: use `norm: layer_norm`");
    }
    if matches!(positions, Some(Positions::Learned | Positions::Sinusoidal)) {
        conflict(
            cx,
            "positions",
            "`weights: neox` checkpoints have no position table: use `positions: rope` (or a score bias: \
             `alibi`, `relative`)",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        conflict(cx, "attention", "`weights: neox` checkpoints are decoders: use `attention: causal`");
    }
}

/// Rule: BLOOM checkpoints are pre-norm LayerNorm causal decoders with ALiBi positions and an
/// ungated GELU (tanh) feed-forward.
fn bloom_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    placement: Option<Placement>,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    activation: Option<Activation>,
    attention: Option<Attention>,
) {
    let conflict = |cx: &mut Ctxt, key: &str, message: &str| layout_conflict(cx, entries, key, message);
    if placement == Some(Placement::Post) {
        conflict(
            cx,
            "norm_placement",
            "`weights: bloom` checkpoints are pre-norm: use `norm_placement: pre`",
        );
    }
    if norm == Some(NormKind::RmsNorm) {
        conflict(cx, "norm", "`weights: bloom` checkpoints use LayerNorm: use `norm: layer_norm`");
    }
    if positions.is_some_and(|p| p != Positions::Alibi) {
        conflict(
            cx,
            "positions",
            "`weights: bloom` checkpoints bias scores by distance: use `positions: alibi`",
        );
    }
    if activation.is_some_and(|a| a != Activation::GeluTanh) {
        conflict(
            cx,
            "activation",
            "`weights: bloom` feed-forwards use the tanh GELU: use `activation: gelu_tanh`",
        );
    }
    if attention == Some(Attention::Bidirectional) {
        conflict(cx, "attention", "`weights: bloom` checkpoints are decoders: use `attention: causal`");
    }
    if let Some(types) = entries.get("type_vocab_size") {
        cx.error(
            types.key.span(),
            "`weights: bloom` checkpoints have no token-type embeddings: remove `type_vocab_size`",
        );
    }
}

/// Rule: BERT, GPT-2 and ViT checkpoints have LayerNorm, ungated feed-forwards and one key/value
/// head per query head. Their positions are a learned table, or for BERT and GPT-2 a score bias in
/// its place (ALiBi, as in MosaicBERT; T5's relative buckets); rotary positions need no table but
/// these checkpoints' attention does not rotate.
fn classic_layout(
    cx: &mut Ctxt,
    entries: &Entries,
    scheme: WeightScheme,
    norm: Option<NormKind>,
    positions: Option<Positions>,
    activation: Option<Activation>,
    heads: Option<usize>,
    kv_heads: Option<usize>,
) {
    let name = match scheme {
        WeightScheme::Bert => "bert",
        WeightScheme::Gpt2 => "gpt2",
        _ => "vit",
    };
    if norm == Some(NormKind::RmsNorm) {
        layout_conflict(
            cx,
            entries,
            "norm",
            &format!("`weights: {name}` checkpoints use LayerNorm: use `norm: layer_norm`"),
        );
    }
    // ViT's positions: `vit_positions_stay_learned`.
    if scheme != WeightScheme::Vit && matches!(positions, Some(Positions::Rope { .. })) {
        layout_conflict(
            cx,
            entries,
            "positions",
            &format!(
                "`weights: {name}` checkpoints do not rotate queries and keys: use `positions: learned` \
                 (or a score bias: `alibi`, `relative`)"
            ),
        );
    }
    if activation.is_some_and(Activation::is_gated) {
        layout_conflict(
            cx,
            entries,
            "activation",
            &format!(
                "`weights: {name}` feed-forwards are not gated: use an ungated activation such as `gelu_erf`"
            ),
        );
    }
    if let (Some(h), Some(kv)) = (heads, kv_heads) {
        if h != kv && entries.contains_key("kv_heads") {
            layout_conflict(cx, entries, "kv_heads", &format!("`weights: {name}` checkpoints have one key/value head per query head: use `kv_heads: {h}` or leave it out"));
        }
    }
}

/// Reports a value that the chosen weight scheme rules out, at the value and at the scheme.
pub(super) fn layout_conflict(cx: &mut Ctxt, entries: &Entries, key: &str, message: &str) {
    cx.error(entries[key].value.span(), message);
    let scheme = &entries["weights"].value;
    cx.error(scheme.span(), format!("{} naming chosen here", scheme_label(scheme)));
}

fn scheme_label(value: &Value) -> &'static str {
    match value {
        Value::Name(n) if n == "gpt2" => "GPT-2",
        Value::Name(n) if n == "vit" => "ViT",
        Value::Name(n) if n == "llama" => "LLaMA",
        Value::Name(n) if n == "bloom" => "BLOOM",
        Value::Name(n) if n == "neox" => "GPT-NeoX",
        Value::Name(n) if n == "t5" => "T5",
        Value::Name(n) if n == "bart" => "BART",
        Value::Name(n) if n == "torch" => "`torch.nn.Transformer`",
        _ => "BERT",
    }
}
