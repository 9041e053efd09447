// ALiBi adds a bias to the attention scores; its backward is not written yet, so asking for a
// trainer is an error under the `training` value, naming the op — never a trainer that skips it.
transformer::model! {
    pub struct Bloomish {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: alibi,
        attention: causal,
        weights: bloom,
        lm_head: tied,
        training: causal_lm,
    }
}

fn main() {}
