//! The API of a composed encoder that names its outputs, `fn forward(tokens) -> (states,
//! embedding)`: a `…Outputs` struct with one field per output, borrowed from the workspace, and one
//! method per output returning owned rows.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use super::{carve, rt};
use crate::graph::{Graph, Value};
use crate::spec::{Output, OutputKind, Pool, Spec};

pub fn methods(
    spec: &Spec,
    graph: &Graph,
    scratch_ty: &Ident,
    scratch: &[Value],
    outputs: &[Output],
) -> TokenStream {
    let rt = rt();
    let (name, vis) = (&spec.name, &spec.vis);
    let d = spec.d_model;
    // Spanned at the user's `d_model`, so a width mismatch in user code points there.
    let row = quote_spanned!(spec.d_model_span=> [f32; #d]);
    let validate = super::encoder::validate(spec);
    let outputs_ty = format_ident!("{}Outputs", name);
    // Each pooled output gets a buffer of one row per sequence, named after it.
    let buffer = |o: &Output| format_ident!("out_{}", o.name);
    let extra: Vec<(Ident, TokenStream)> = outputs
        .iter()
        .filter(|o| o.kind != OutputKind::States)
        .map(|o| (buffer(o), quote!(batch.batch_size() * #d)))
        .collect();
    let carve = carve(spec, scratch_ty, scratch, &extra);
    let stack = super::encoder::stack_forward(graph);
    let pools = outputs.iter().filter_map(|o| {
        let OutputKind::Pooled { pool, normalize } = o.kind else { return None };
        let buf = buffer(o);
        let pooling = match pool {
            Pool::Mean => quote!(Mean),
            Pool::Max => quote!(Max),
            Pool::Cls => quote!(Cls),
        };
        let normalize = normalize.then(|| quote!(#rt::layers::pooling::normalize_rows(#buf);));
        Some(quote! {
            let #buf = #buf.as_chunks_mut::<#d>().0;
            #rt::layers::pooling::pool(x, batch, #rt::layers::pooling::Pooling::#pooling, #buf);
            #normalize
        })
    });
    let fields = outputs.iter().map(|o| {
        let field = &o.name;
        let doc = describe(o);
        quote! {
            #[doc = #doc]
            pub #field: &'w [#row],
        }
    });
    let values = outputs.iter().map(|o| {
        let field = &o.name;
        match o.kind {
            OutputKind::States => quote!(#field: &*x),
            OutputKind::Pooled { .. } => {
                let buf = buffer(o);
                quote!(#field: &*#buf)
            }
        }
    });
    let owned = outputs.iter().map(|o| {
        let field = &o.name;
        let doc = format!("`{field}` of every sequence in `batch` (see [`{outputs_ty}::{field}`]), with a workspace kept by the model; owned rows.");
        quote! {
            #[doc = #doc]
            pub fn #field(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#row>> {
                self.workspaces.with(|ws| self.outputs_into(batch, ws).map(|o| o.#field.to_vec()))
            }
        }
    });
    let list = outputs.iter().map(|o| format!("`{}`", o.name)).collect::<Vec<_>>().join(", ");
    let struct_doc =
        format!("The outputs of [`{name}`] for one batch ({list}), borrowed from the workspace.");
    quote! {
        #[doc = #struct_doc]
        #vis struct #outputs_ty<'w> {
            #(#fields)*
        }

        impl #name {
            /// Every output for `batch`, written into `workspace` (its buffers are reused by the
            /// next call).
            pub fn outputs_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<#outputs_ty<'w>> {
                #validate
                #carve
                #stack
                #(#pools)*
                ::core::result::Result::Ok(#outputs_ty { #(#values,)* })
            }

            #(#owned)*
        }
    }
}

/// The doc line of an output's field.
fn describe(o: &Output) -> String {
    match o.kind {
        OutputKind::States => {
            "The final states: one row per token (`batch.rows()` rows, sequence-major).".into()
        }
        OutputKind::Pooled { pool, normalize } => {
            let pooled = match pool {
                Pool::Mean => "The mean of each sequence's real (unpadded) states",
                Pool::Max => "The element-wise maximum of each sequence's real (unpadded) states",
                Pool::Cls => "Each sequence's first token's state",
            };
            let norm = if normalize { ", L2-normalised" } else { "" };
            format!("{pooled}{norm}: one row per sequence (`batch.batch_size()` rows).")
        }
    }
}
