//! `training: causal_lm` in a declaration asks for a trainer beside the model: the objective it
//! names, and a backward pass derived from the same op graph the forward runs
//! ([`crate::codegen::train`]). The key is taken out before validation, so every front end (preset
//! or composed) sees the declaration it always saw, and the request reaches codegen on [`Model`].
//!
//! [`Model`]: crate::model::Model

use proc_macro2::Span;

use crate::ast::{ModelInput, Value};
use crate::suggest;

/// The key asking for a trainer.
const KEY: &str = "training";

/// The objectives a trainer can be generated for.
const OBJECTIVES: &[&str] = &["causal_lm", "masked_lm", "contrastive"];

/// What a trainer is trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Next-token cross-entropy over the LM head's logits (GPT pre-training).
    CausalLm,
    /// Cross-entropy over the masked positions through BERT's masked-LM head (`BertForMaskedLM`),
    /// with the labels the caller's masking produced.
    MaskedLm,
    /// Sentence embeddings (mean pooling, L2 normalisation) trained with in-batch negatives:
    /// sentence-transformers' `MultipleNegativesRankingLoss`.
    Contrastive,
}

/// A request for a trainer: its objective, and the span errors about training are reported under.
#[derive(Clone, Copy, Debug)]
pub struct Training {
    pub objective: Objective,
    pub span: Span,
}

/// The declaration without its `training` entry, and the request it held.
pub fn take(input: &ModelInput) -> Result<(ModelInput, Option<Training>), syn::Error> {
    let mut rest = input.clone();
    let Some(at) = rest.entries.iter().position(|e| e.key == KEY) else { return Ok((rest, None)) };
    let entry = rest.entries.remove(at);
    let objective = match &entry.value {
        Value::Name(name) if name == "causal_lm" => Objective::CausalLm,
        Value::Name(name) if name == "masked_lm" => Objective::MaskedLm,
        Value::Name(name) if name == "contrastive" => Objective::Contrastive,
        Value::Name(name) => {
            let hint = suggest::closest(&name.to_string(), OBJECTIVES)
                .map_or(String::new(), |c| format!(" (did you mean `{c}`?)"));
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "unknown training objective `{name}`: expected one of {}{hint}",
                    OBJECTIVES.join(", ")
                ),
            ));
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                format!("`training` takes an objective name: one of {}", OBJECTIVES.join(", ")),
            ))
        }
    };
    Ok((rest, Some(Training { objective, span: entry.value.span() })))
}
