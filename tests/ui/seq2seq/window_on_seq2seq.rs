// A window at the top level of an encoder-decoder: each stack gives its own in its section.

transformer::model! {
    /// A T5 v1.1-shaped model: gated GELU, head width apart from d_model.
    pub struct T5Like {
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
        window: 8,
        weights: t5,
        lm_head: untied,
        decoder_start: 0,
        encoder: { layers: 2, attention: bidirectional },
        decoder: { layers: 3, d_ff: 56, attention: causal, cross_attention: encoder },
    }
}

fn main() {}
