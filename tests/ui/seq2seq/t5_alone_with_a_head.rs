// `weights: t5` without sections is T5's encoder alone (`T5EncoderModel`): it has no LM head.

transformer::model! {
    /// T5's encoder alone, with a mistake.
    pub struct Model {
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
        layers: 2,
        attention: bidirectional,
    }
}

fn main() {}
