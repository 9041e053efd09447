//! The API of a decoder (causal attention): logits, cached steps and generation.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use super::{carve, layer_loop, rt, stack_bias};
use crate::graph::{Graph, Index, Op, Value};
use crate::spec::Spec;

pub fn methods(spec: &Spec, graph: &Graph, scratch_ty: &Ident, scratch: &[Value]) -> TokenStream {
    let rt = rt();
    let generation = generation();
    let name = &spec.name;
    let (d, v) = (spec.d_model, spec.vocab_size);
    // Spanned at the user's `vocab_size`: the width of a logits row is the vocabulary.
    let logits_row = quote_spanned!(spec.vocab_span=> [f32; #v]);
    let kv_width = spec.kv_heads * spec.head_dim();
    // Absolute positions are embedded (and continue a cache's length); rotary ones are applied
    // inside the attention instead.
    let embeds_positions =
        graph.embeddings.ops.iter().any(|op| matches!(op, Op::Gather { index: Index::Position, .. }));
    let (full_starts, step_starts) = if embeds_positions {
        (quote!(, ::core::option::Option::None), quote!(, ::core::option::Option::Some(cache.lens())))
    } else {
        (quote!(), quote!())
    };
    let (bias_let, bias_arg) = stack_bias(&graph.embeddings, quote!(embeddings)).unzip();
    let (layer_loop, layer_arg) = layer_loop(&graph.layer);
    let final_norm = graph.final_norm.as_ref().map(|_| quote!(self.final_norm.forward(x);));
    // A step only needs the last row of each sequence past the final norm.
    let final_norm_last = graph.final_norm.as_ref().map(|_| quote!(self.final_norm.forward(last);));
    let full_carve = carve(spec, scratch_ty, scratch, &[(format_ident!("logits"), quote!(rows * #v))]);
    let step_carve = carve(
        spec,
        scratch_ty,
        scratch,
        &[
            (format_ident!("last"), quote!(batch.batch_size() * #d)),
            (format_ident!("logits"), quote!(batch.batch_size() * #v)),
        ],
    );
    quote! {
        impl #name {
            /// Logits for every token of every sequence (`batch.rows()` rows), each token seeing
            /// only the tokens before it: a full recompute, no cache.
            pub fn logits_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#logits_row]> {
                batch.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, ::core::option::Option::None)?;
                #full_carve
                self.embeddings.forward(x, batch #full_starts);
                #bias_let
                for #layer_loop {
                    layer.forward(x, batch, #bias_arg s, #layer_arg &self.threads);
                }
                #final_norm
                let logits = logits.as_chunks_mut::<#v>().0;
                self.lm_head.forward(x, logits, &self.threads);
                ::core::result::Result::Ok(logits)
            }

            /// [`Self::logits_into`] with a workspace kept by the model; returns owned rows.
            pub fn logits(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#logits_row>> {
                self.workspaces.with(|ws| self.logits_into(batch, ws).map(<[_]>::to_vec))
            }

            /// A KV cache for `batch_size` sequences, with room for `MAX_POSITIONS` tokens each.
            pub fn new_cache(&self, batch_size: usize) -> #rt::KvCache {
                #rt::KvCache::new(Self::LAYERS, batch_size, Self::MAX_POSITIONS, #kv_width)
            }

            /// One cached step: `batch`'s tokens continue each sequence of `cache` (sequence `b`
            /// starts at position `cache.lens()[b]`; right padding allowed). Their keys and values
            /// are appended, and the logits of each sequence's last real token come back.
            pub fn step_into<'w>(
                &self,
                batch: &#rt::Batch,
                cache: &mut #rt::KvCache,
                workspace: &'w mut #rt::Workspace,
            ) -> #rt::Result<&'w [#logits_row]> {
                batch.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, ::core::option::Option::None)?;
                cache.check_step(batch)?;
                #step_carve
                self.embeddings.forward(x, batch #step_starts);
                #bias_let
                for (i, layer) in self.layers.iter().enumerate() {
                    layer.forward_cached(x, batch, #bias_arg s, cache, i, &self.threads);
                }
                let last = last.as_chunks_mut::<#d>().0;
                for (b, row) in last.iter_mut().enumerate() {
                    *row = x[b * batch.seq_len() + batch.extent_of(b) - 1];
                }
                #final_norm_last
                let logits = logits.as_chunks_mut::<#v>().0;
                self.lm_head.forward(last, logits, &self.threads);
                cache.advance_batch(batch);
                ::core::result::Result::Ok(logits)
            }

            #generation
        }

        impl #rt::CausalLm for #name {
            fn vocab_size(&self) -> usize {
                Self::VOCAB_SIZE
            }

            fn max_positions(&self) -> usize {
                Self::MAX_POSITIONS
            }

            fn new_cache(&self, batch: usize) -> #rt::KvCache {
                #name::new_cache(self, batch)
            }

            fn step<'w>(&self, batch: &#rt::Batch, cache: &mut #rt::KvCache, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [f32]> {
                self.step_into(batch, cache, workspace).map(<[_]>::as_flattened)
            }
        }
    }
}

/// Generation over the runtime's driver: token ids, a padded batch with its mask, text, a stream.
fn generation() -> TokenStream {
    let rt = rt();
    quote! {
        /// Generates up to `options.max_new_tokens` tokens after each prompt (one batched
        /// prefill, then one cached step per token); returns the new tokens per prompt.
        pub fn generate(&self, prompts: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> {
            #rt::generate::generate(self, prompts, options)
        }

        /// [`Self::generate`] for prompts as a padded `[batch, seq]` id array with its
        /// attention mask (left or right padding, as Hugging Face's
        /// `generate(input_ids, attention_mask=…)` takes them).
        pub fn generate_padded(
            &self,
            ids: #rt::ndarray::ArrayView2<'_, u32>,
            mask: #rt::ndarray::ArrayView2<'_, u32>,
            options: &#rt::GenerateOptions,
        ) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> {
            #rt::generate::generate_padded(self, ids, mask, options)
        }

        /// The text generated after `prompt` (tokenised with the model's special tokens; a
        /// prompt longer than `MAX_POSITIONS` tokens is an error naming its length), decoded
        /// with special tokens skipped.
        pub fn generate_text(&self, tokenizer: &impl #rt::text::TextTokenizer, prompt: &str, options: &#rt::GenerateOptions) -> #rt::Result<::std::string::String> {
            let prompt = tokenizer.encode(prompt, 0, Self::MAX_POSITIONS, #rt::text::Truncation::Refuse)?;
            let new = #rt::generate::generate(self, &[&prompt.ids], options)?;
            tokenizer.decode(&new[0])
        }

        /// Streams the continuation of one prompt, token by token.
        pub fn stream<'m>(&'m self, prompt: &[u32], options: &#rt::GenerateOptions) -> #rt::Result<#rt::generate::TokenStream<'m, Self>> {
            #rt::generate::stream(self, prompt, options)
        }
    }
}
