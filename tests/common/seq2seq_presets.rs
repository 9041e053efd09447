//! The encoder-decoder presets of the committed fixtures (`tests/fixtures/seq2seq`, written by
//! `scripts/reference/seq2seq.py`; the windowed one by `windowed_seq2seq.py`), declared once for the
//! parity tests and for the composed models that must be bit-identical to them.
#![allow(dead_code)]

transformer::model! {
    /// `t5`: T5 v1.1 (gated GELU, untied head), 4 heads of 12 in a 32-wide model, 2 encoder and
    /// 3 decoder layers.
    pub struct T5Gated {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        head_dim: 12,
        d_ff: 40,
        activation: geglu_tanh,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        weights: t5,
        lm_head: untied,
        decoder_start: 0,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 3, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// `t5_tied`: the original T5 (ReLU feed-forward, tied head rescaled by 1/sqrt(d_model)).
    pub struct T5Tied {
        vocab_size: 96,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: relu,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: relative,
        relative_buckets: 8,
        relative_max_distance: 20,
        weights: t5,
        lm_head: tied,
        decoder_start: 0,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// `bart`: BART with `scale_embedding`.
    pub struct Bart {
        vocab_size: 120,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: post,
        positions: learned,
        embedding_scale: sqrt_d_model,
        weights: bart,
        lm_head: tied,
        decoder_start: 2,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// `transformer`: `torch.nn.Transformer` with the paper's embeddings and positions.
    pub struct Paper {
        vocab_size: 100,
        max_positions: 64,
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
        decoder: { layers: 2, attention: causal, cross_attention: encoder },
    }
}

transformer::model! {
    /// `transformer` with windows in both stacks.
    pub struct PaperWindowed {
        vocab_size: 100,
        max_positions: 64,
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
        encoder: { layers: 2, attention: bidirectional, window: 4 },
        decoder: { layers: 2, attention: causal, cross_attention: encoder, window: [3, global] },
    }
}
