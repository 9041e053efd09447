//! The encoder-decoders with additive and location cross-attention of
//! `tests/fixtures/additive_seq2seq` (written by `scripts/reference/additive_seq2seq.py`), declared
//! once for their parity test and for the composed models that must be bit-identical to them.
#![allow(dead_code)]

transformer::model! {
    /// `bahdanau`: additive cross-attention, a scoring MLP of width 16.
    pub struct PaperBahdanau {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        embedding_scale: sqrt_d_model,
        weights: torch,
        lm_head: untied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: {
            layers: 2,
            attention: causal,
            cross_attention: encoder,
            cross_attention_kind: additive,
            attention_dim: 16,
        },
    }
}

transformer::model! {
    /// `location`: Luong's location scoring, one logit per source position up to 32.
    pub struct PaperLocation {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        embedding_scale: sqrt_d_model,
        weights: torch,
        lm_head: untied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder, cross_attention_kind: location },
    }
}

transformer::model! {
    /// `location_sensitive`: Bahdanau plus 4 filters of width 5 over the previous and cumulative
    /// alignments.
    pub struct PaperLocationSensitive {
        vocab_size: 48,
        max_positions: 32,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: sinusoidal,
        embedding_scale: sqrt_d_model,
        weights: torch,
        lm_head: untied,
        decoder_start: 1,
        encoder: { layers: 2, attention: bidirectional },
        decoder: {
            layers: 2,
            attention: causal,
            cross_attention: encoder,
            cross_attention_kind: location_sensitive,
            attention_dim: 16,
            location_filters: 4,
            location_kernel: 5,
        },
    }
}
