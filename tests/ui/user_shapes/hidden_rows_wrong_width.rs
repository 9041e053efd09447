// The hidden rows of a 384-wide model passed to a function written for 768-wide rows.

transformer::model! {
    /// A MiniLM-sized encoder, 384 wide.
    pub struct Model {
        vocab_size: 30522,
        max_positions: 512,
        type_vocab_size: 2,
        d_model: 384,
        heads: 12,
        layers: 6,
        d_ff: 1536,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

/// Written for a 768-wide model.
fn first_token(rows: &[[f32; 768]]) -> f32 {
    rows[0][0]
}

fn run(model: &Model, batch: &transformer::Batch, workspace: &mut transformer::Workspace) -> f32 {
    let hidden = model.forward_into(batch, workspace).unwrap();
    first_token(hidden)
}

fn main() {
    let _ = run;
}
