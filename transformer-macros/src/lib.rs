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
mod ctxt;
mod fallback;
mod graph;
mod spec;
mod suggest;

use proc_macro::TokenStream;

/// Declares a transformer model. See the `transformer` crate's documentation for the grammar.
#[proc_macro]
pub fn model(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as ast::ModelInput);
    expand(input).into()
}

fn expand(input: ast::ModelInput) -> proc_macro2::TokenStream {
    if compose::is_reformer(&input) {
        return match compose::expand_reformer(&input) {
            Ok(spec) => codegen::reformer::generate(&spec),
            Err(errors) => {
                let dummy = fallback::reformer(&input);
                let errors = errors.into_compile_error();
                quote::quote! { #errors #dummy }
            }
        };
    }
    if let Some(first) = input.functions.first() {
        return match compose::expand(&input, first) {
            Ok(compose::Composed::Stack(spec, graph)) => codegen::generate(&spec, &graph),
            Ok(compose::Composed::Outputs(spec, graph, outputs)) => {
                codegen::generate_with_outputs(&spec, &graph, &outputs)
            }
            Ok(compose::Composed::Seq2Seq(spec, graph)) => match &spec.seq2seq {
                Some(s2s) => codegen::seq2seq::generate(&spec, s2s, &graph),
                None => {
                    syn::Error::new(first.name.span(), "internal: an encoder-decoder without its decoder")
                        .into_compile_error()
                }
            },
            Err(errors) => {
                let dummy = fallback::dummy(&input);
                let errors = errors.into_compile_error();
                quote::quote! { #errors #dummy }
            }
        };
    }
    if check::reformer::declared(&input) {
        return match check::reformer::validate(&input) {
            Ok(spec) => codegen::reformer::generate(&spec),
            Err(errors) => {
                let dummy = fallback::reformer(&input);
                let errors = errors.into_compile_error();
                quote::quote! { #errors #dummy }
            }
        };
    }
    match check::validate(&input) {
        Ok(spec) => match &spec.seq2seq {
            Some(s2s) => {
                let graph = graph::seq2seq::lower(&spec, s2s);
                codegen::seq2seq::generate(&spec, s2s, &graph)
            }
            None => {
                let graph = graph::lower(&spec);
                codegen::generate(&spec, &graph)
            }
        },
        Err(errors) => {
            let dummy = fallback::dummy(&input);
            let errors = errors.into_compile_error();
            quote::quote! { #errors #dummy }
        }
    }
}
