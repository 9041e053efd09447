//! t5-small's shape (60M parameters: the original T5, ReLU feed-forward, tied head), for the
//! benchmarks, with random weights: this environment has no T5 checkpoint to load, and speed does
//! not depend on the values. Its config is t5-small's `config.json`.

transformer::model! {
    /// t5-small's shape: 6 encoder and 6 decoder layers, 512 wide, 8 heads of 64, d_ff 2048.
    pub struct T5Small {
        vocab_size: 32128,
        max_positions: 512,
        d_model: 512,
        heads: 8,
        head_dim: 64,
        d_ff: 2048,
        activation: relu,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: relative,
        relative_buckets: 32,
        relative_max_distance: 128,
        weights: t5,
        lm_head: tied,
        decoder_start: 0,
        encoder: { layers: 6, attention: bidirectional },
        decoder: { layers: 6, attention: causal, cross_attention: encoder },
    }
}
