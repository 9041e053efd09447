//! The one route every declaration takes: validated into a [`Spec`], lowered into the op graph,
//! then generated from it (`codegen::generate`). Presets and composed models, single stacks,
//! encoder-decoders and Reformers differ only in which front end validates them; all of them end
//! here as a [`Model`].

use proc_macro2::TokenStream;

use crate::ast::ModelInput;
use crate::compose::{self, Composed};
use crate::graph::{self, seq2seq::Seq2SeqGraph, Graph};
use crate::spec::{Output, Spec};
use crate::training::Training;
use crate::{check, config_file};

/// A validated declaration and its graph: everything codegen reads.
pub struct Model {
    pub spec: Spec,
    pub graph: Lowered,
    /// Items emitted beside the model: a named config.json's `include_bytes!`, so cargo rebuilds
    /// when it changes.
    pub beside: TokenStream,
    /// `training: …`: a trainer is generated beside the model.
    pub training: Option<Training>,
}

/// The op graph of a model's family.
pub enum Lowered {
    /// One stack of layers: an encoder, a decoder, an image classifier or a Reformer. `outputs`:
    /// a composed encoder's named outputs (`-> (states, embedding)`).
    Stack { graph: Box<Graph>, outputs: Option<Vec<Output>> },
    /// An encoder and a decoder joined by cross-attention.
    Seq2Seq(Box<Seq2SeqGraph>),
}

/// Validates and lowers a declaration; every error found, with its span, on failure.
pub fn validate_and_lower(input: &ModelInput) -> Result<Model, syn::Error> {
    match input.functions.first() {
        None => preset(input),
        Some(_) if compose::is_reformer(input) => {
            compose::expand_reformer(input).map(|r| lower(r.into_spec()))
        }
        Some(first) => Ok(match compose::expand(input, first)? {
            Composed::Stack(spec, graph) => Model::new(spec, Lowered::Stack { graph, outputs: None }),
            Composed::Outputs(spec, graph, outputs) => {
                Model::new(spec, Lowered::Stack { graph, outputs: Some(outputs) })
            }
            Composed::Seq2Seq(spec, graph) => Model::new(spec, Lowered::Seq2Seq(graph)),
        }),
    }
}

/// A declaration by keys, with the keys its named config.json gives filled in first and the whole
/// declaration checked against that file after validation ([`config_file`]).
fn preset(input: &ModelInput) -> Result<Model, syn::Error> {
    let Some((input, file)) = config_file::read(input)? else {
        return validate(input).map(lower);
    };
    let spec = validate(&input)?;
    config_file::check(&spec, &file)?;
    let mut model = lower(spec);
    model.beside = config_file::track(&file);
    Ok(model)
}

/// A Reformer's key set is its own (`check/reformer.rs`), every other preset's is `check.rs`'s.
fn validate(input: &ModelInput) -> Result<Spec, syn::Error> {
    if check::reformer::declared(input) {
        check::reformer::validate(input).map(|r| r.into_spec())
    } else {
        check::validate(input)
    }
}

/// A preset's graph, by its family.
fn lower(spec: Spec) -> Model {
    let graph = match &spec.seq2seq {
        Some(s2s) => Lowered::Seq2Seq(Box::new(graph::seq2seq::lower(&spec, s2s))),
        None => Lowered::Stack { graph: Box::new(graph::lower(&spec)), outputs: None },
    };
    Model::new(spec, graph)
}

impl Model {
    fn new(spec: Spec, graph: Lowered) -> Self {
        Model { spec, graph, beside: TokenStream::new(), training: None }
    }

    pub fn with_training(mut self, training: Option<Training>) -> Self {
        self.training = training;
        self
    }
}
