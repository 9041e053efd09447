//! The `model!` procedural macro of the `transformer` crate.
//!
//! One module per phase, wired by [`expand`]: [`ast`] parses tokens into a typed, span-keeping
//! input; [`check`] validates every key in one pass, collecting errors in a [`ctxt::Ctxt`], and
//! produces a [`spec::Spec`] with concrete dims; [`graph`] lowers the spec to a typed op graph
//! with inferred widths and makes the fusion decisions; [`codegen`] writes Rust from that graph only.
//! On any error, [`fallback`] still emits the model type so user code does not drown the real error.

mod ast;
mod check;
mod codegen;
mod compose;
mod config_file;
mod ctxt;
mod fallback;
mod graph;
mod hf_config;
mod model;
mod spec;
mod suggest;
mod training;

use proc_macro::TokenStream;

/// Declares a transformer model. See the `transformer` crate's documentation for the grammar.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as ast::ModelInput);
    expand(input).into()
}

/// The one route: validate and lower ([`model`]), generate ([`codegen`]); on any error, the
/// errors and the model type with unreachable bodies ([`fallback`]).
fn expand(input: ast::ModelInput) -> proc_macro2::TokenStream {
    let lowered = training::take(&input).and_then(|(declaration, training)| {
        model::validate_and_lower(&declaration).map(|model| model.with_training(training))
    });
    match lowered {
        Ok(model) => {
            let (code, beside) = (codegen::generate(&model), &model.beside);
            quote::quote! { #code #beside }
        }
        Err(errors) => {
            let dummy = fallback::dummy(&input);
            let errors = errors.into_compile_error();
            quote::quote! { #errors #dummy }
        }
    }
}
