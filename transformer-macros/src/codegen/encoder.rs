//! The API of an encoder (bidirectional attention): hidden states and pooled sentence embeddings.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use super::{carve, layer_loop, rt, stack_bias};
use crate::graph::{Graph, Value};
use crate::spec::Spec;

pub fn methods(spec: &Spec, graph: &Graph, scratch_ty: &Ident, scratch: &[Value]) -> TokenStream {
    let rt = rt();
    let name = &spec.name;
    let d = spec.d_model;
    // Spanned at the user's `d_model`, so a width mismatch in user code points there.
    let row = quote_spanned!(spec.d_model_span=> [f32; #d]);
    let validate = validate(spec);
    let carve =
        carve(spec, scratch_ty, scratch, &[(format_ident!("pooled"), quote!(batch.batch_size() * #d))]);
    let stack = stack_forward(graph);
    quote! {
        impl #name {
            /// Last hidden states, one row per token (`batch.rows()` rows, sequence-major), written
            /// into `workspace`: after the first call at a batch shape, no allocation.
            pub fn forward_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#row]> {
                self.run(batch, workspace).map(|(hidden, _)| hidden)
            }

            /// Sentence embeddings, one row per sequence: mean of the unpadded hidden states,
            /// L2-normalised (sentence-transformers' mean pooling + Normalize).
            pub fn embed_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#row]> {
                self.run(batch, workspace).map(|(_, pooled)| pooled)
            }

            /// [`Self::forward_into`] with a workspace kept by the model; returns owned rows.
            pub fn forward(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#row>> {
                self.workspaces.with(|ws| self.forward_into(batch, ws).map(<[_]>::to_vec))
            }

            /// [`Self::embed_into`] with a workspace kept by the model; returns owned rows.
            pub fn embed(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#row>> {
                self.workspaces.with(|ws| self.embed_into(batch, ws).map(<[_]>::to_vec))
            }

            /// Sentence embeddings of `texts` (see [`Self::embed`]): tokenised with the model's
            /// special tokens and padded into one batch. A text longer than `MAX_POSITIONS` tokens
            /// is an error naming it; [`Self::embed_texts_with`] can cut it instead.
            pub fn embed_texts(&self, tokenizer: &impl #rt::text::TextTokenizer, texts: &[&str]) -> #rt::Result<::std::vec::Vec<#row>> {
                self.embed_texts_with(tokenizer, texts, #rt::text::Truncation::Refuse)
            }

            /// [`Self::embed_texts`], with what to do with a text that is too long.
            pub fn embed_texts_with(
                &self,
                tokenizer: &impl #rt::text::TextTokenizer,
                texts: &[&str],
                truncation: #rt::text::Truncation,
            ) -> #rt::Result<::std::vec::Vec<#row>> {
                self.embed(&#rt::text::batch(tokenizer, texts, Self::MAX_POSITIONS, truncation)?)
            }

            /// Hidden states as a `[batch, seq, d_model]` array.
            pub fn forward_array(&self, batch: &#rt::Batch) -> #rt::Result<#rt::ndarray::Array3<f32>> {
                let flat = self.forward(batch)?.into_iter().flatten().collect();
                ::core::result::Result::Ok(
                    #rt::ndarray::Array3::from_shape_vec((batch.batch_size(), batch.seq_len(), #d), flat)
                        .expect("rows = batch * seq, each d_model wide"),
                )
            }

            /// Sentence embeddings as a `[batch, d_model]` array.
            pub fn embed_array(&self, batch: &#rt::Batch) -> #rt::Result<#rt::ndarray::Array2<f32>> {
                let flat = self.embed(batch)?.into_iter().flatten().collect();
                ::core::result::Result::Ok(
                    #rt::ndarray::Array2::from_shape_vec((batch.batch_size(), #d), flat)
                        .expect("one row per sequence, each d_model wide"),
                )
            }

            fn run<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<(&'w [#row], &'w [#row])> {
                #validate
                #carve
                #stack
                let pooled = pooled.as_chunks_mut::<#d>().0;
                #rt::layers::mean_pool_normalize(x, batch, pooled);
                ::core::result::Result::Ok((x, pooled))
            }
        }
    }
}

/// The batch check every encoder entry point starts with (ids, positions, token types).
pub(super) fn validate(spec: &Spec) -> TokenStream {
    let type_vocab = match spec.type_vocab_size {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    quote!(batch.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, #type_vocab)?;)
}

/// The encoder stack over the carved `x`: embeddings, the stack's position bias (if any), every
/// layer, the final norm. Shared by the fixed API above and a composed encoder's named outputs.
pub(super) fn stack_forward(graph: &Graph) -> TokenStream {
    let (layer_loop, layer_arg) = layer_loop(&graph.layer);
    let final_norm = graph.final_norm.as_ref().map(|_| quote!(self.final_norm.forward(x);));
    let (bias_let, bias_arg) = stack_bias(&graph.embeddings, quote!(embeddings)).unzip();
    quote! {
        self.embeddings.forward(x, batch);
        #bias_let
        for #layer_loop {
            layer.forward(x, batch, #bias_arg s, #layer_arg &self.threads);
        }
        #final_norm
    }
}
