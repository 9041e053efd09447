// A valid declaration: the program uses the model's associated consts and generated types, so it
// compiles only if the macro produced them with the declared dims.

use transformer::{Batch, Workspace};

transformer::model! {
    /// A MiniLM-sized encoder.
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

const _: () = assert!(Model::VOCAB_SIZE == 30522);
const _: () = assert!(Model::MAX_POSITIONS == 512);
const _: () = assert!(Model::TYPE_VOCAB_SIZE == 2);
const _: () = assert!(Model::D_MODEL == 384);
const _: () = assert!(Model::HEADS == 12);
const _: () = assert!(Model::HEAD_DIM == 32);
const _: () = assert!(Model::LAYERS == 6);
const _: () = assert!(Model::D_FF == 1536);

/// Sentence embeddings, typed by the model's width.
fn embed(model: &Model, batch: &Batch) -> transformer::Result<Vec<[f32; Model::D_MODEL]>> {
    model.embed(batch)
}

/// Hidden rows borrowed from a workspace, typed by the model's width.
fn hidden<'w>(
    model: &Model,
    batch: &Batch,
    workspace: &'w mut Workspace,
) -> transformer::Result<&'w [[f32; 384]]> {
    model.forward_into(batch, workspace)
}

/// The generated block types are public and named after the model.
fn layers(model: &Model) -> (&ModelEmbeddings, &[ModelLayer]) {
    (&model.embeddings, &model.layers)
}

fn main() {
    let _ = (embed, hidden, layers);
    let batch = Batch::from_sequences(&[[101u32, 7592, 102]]).unwrap();
    assert_eq!(batch.rows(), 3);
}
