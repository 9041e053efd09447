//! Rust for a Reformer (`weights: reformer`), straight from its spec: its layers are reversible
//! two-stream layers (`Y1 = X1 + Attention(X2)`, `Y2 = X2 + FeedForward(Y1)`) whose attention is
//! LSH or local per layer, which the single-stream op graph does not describe.
//!
//! One struct per block: `…Embeddings` (tokens + axial positions), `…LshAttention` /
//! `…LocalAttention` (LayerNorm, projections, chunked attention, output), `…FeedForward`,
//! `…Layer` (one attention + one feed-forward), and the model (layers, the LayerNorm over both
//! streams side by side, the LM head). Checkpoint names are Hugging Face's
//! (`reformer.encoder.layers.{i}.attention.self_attention.query_key`, …); each LSH layer's
//! rotations come from a second file under `….self_attention.rotations`.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use super::{activation, rt};
use crate::spec::{Reformer, ReformerAttention};

/// Every checkpoint name, relative to nothing (the Reformer has one naming).
const EMBEDDINGS: &str = "reformer.embeddings";
const LAYER: &str = "reformer.encoder.layers";
const FINAL_NORM: &str = "reformer.encoder.layer_norm";
const HEAD_WEIGHT: &str = "lm_head.decoder.weight";
const HEAD_BIAS: &str = "lm_head.bias";

pub fn generate(spec: &Reformer) -> TokenStream {
    let rt = rt();
    let (attrs, vis, name) = (&spec.attrs, &spec.vis, &spec.name);
    let ident = |suffix: &str| format_ident!("{}{}", name, suffix);
    let (embeddings_ty, layer_ty, scratch_ty) = (ident("Embeddings"), ident("Layer"), ident("Scratch"));
    let (attention_ty, lsh_ty, local_ty, ff_ty) =
        (ident("Attention"), ident("LshAttention"), ident("LocalAttention"), ident("FeedForward"));
    let (d, v, ff, w) = (spec.d_model, spec.vocab_size, spec.d_ff, 2 * spec.d_model);
    let eps = spec.eps as f32;
    let logits_row = quote_spanned!(spec.vocab_span=> [f32; #v]);
    let n_layers = spec.layers.len();
    let lsh_layers = spec.layers.iter().map(|k| *k == ReformerAttention::Lsh);
    let chunk_lengths: Vec<usize> =
        spec.lsh.map(|l| l.chunk).into_iter().chain(spec.local.map(|l| l.chunk)).collect();
    // The projection buffer holds LSH's `[QK | V]` and local attention's `[Q | K | V]`.
    let projected = if spec.local.is_some() { 3 * d } else { 2 * d };
    let consts = [
        ("VOCAB_SIZE", spec.vocab_size, "Vocabulary size: token ids are `0..VOCAB_SIZE`."),
        ("MAX_POSITIONS", spec.max_positions, "Positions of the axial table (`shape[0] · shape[1]`)."),
        ("D_MODEL", d, "Width of each of the two residual streams."),
        ("HEADS", spec.heads, "Attention heads per layer."),
        ("HEAD_DIM", spec.head_dim, "Width of one head: `D_MODEL / HEADS`."),
        ("LAYERS", n_layers, "Number of reversible layers."),
        ("D_FF", ff, "Inner width of the feed-forward blocks."),
    ]
    .map(|(n, value, doc)| {
        let n = format_ident!("{}", n);
        quote!(#[doc = #doc] pub const #n: usize = #value;)
    });
    let attention = attention_blocks(spec, &attention_ty, &lsh_ty, &local_ty, &scratch_ty);
    let feed_forward = feed_forward_block(spec, &ff_ty, &scratch_ty);
    let embeddings = embeddings_block(spec, &embeddings_ty);
    let layer_load = |kind: ReformerAttention| match kind {
        ReformerAttention::Lsh => quote!(#attention_ty::Lsh(#lsh_ty::load(loader, rotations, &attention))),
        ReformerAttention::Local => quote!(#attention_ty::Local(#local_ty::load(loader, &attention))),
    };
    let load_lsh = spec.lsh.map(|_| layer_load(ReformerAttention::Lsh));
    let load_local = spec.local.map(|_| layer_load(ReformerAttention::Local));
    let load_attention = match (load_lsh, load_local) {
        (Some(lsh), Some(local)) => quote!(if Self::LSH_LAYERS[i] { #lsh } else { #local }),
        (Some(only), None) | (None, Some(only)) => only,
        // Validation requires a section for every kind `attn_layers` (never empty) names.
        (None, None) => {
            return syn::Error::new(name.span(), "internal: a Reformer without an attention section")
                .into_compile_error()
        }
    };
    let layers_doc = format!("The {n_layers} reversible layers, loaded from `{LAYER}.{{i}}`.");
    let rotations_doc = format!(
        "Loads the model from a safetensors checkpoint and each LSH layer's rotations from a second \
         file (`{LAYER}.{{i}}.attention.self_attention.rotations`, `[heads, head_dim, hashes, buckets / 2]`: \
         Hugging Face draws them at random in every forward, so they are an input of the model); \
         every problem of either file is listed in one error."
    );
    let scratch_fields = quote! {
        /// A sublayer's output, `[rows, D_MODEL]`.
        pub sublayer: &'a mut [[f32; #d]],
        /// A sublayer's normalised input, `[rows, D_MODEL]`.
        pub normed: &'a mut [[f32; #d]],
        /// The attention's projections, flat: `[rows, 2·D_MODEL]` (LSH's `[QK | V]`) or
        /// `[rows, 3·D_MODEL]` (local attention's `[Q | K | V]`).
        pub projected: &'a mut [f32],
        /// The heads' context before the output projection, `[rows, D_MODEL]`.
        pub context: &'a mut [[f32; #d]],
        /// The feed-forward's inner activations, `[rows, D_FF]`.
        pub hidden: &'a mut [[f32; #ff]],
        /// The chunked attentions' per-head working memory.
        pub lsh: &'a mut #rt::layers::lsh::LshWorkspace,
    };
    // A causal Reformer generates by recomputing the whole sequence for every token (no cache).
    let generate = spec.causal.then(|| {
        quote! {
            /// Generates up to `options.max_new_tokens` tokens after each prompt and returns them
            /// (a stop token included). There is no KV cache: each prompt runs alone and every
            /// token is a full [`Self::logits_into`] over the sequence so far (see
            /// `generate::generate_by_recompute`).
            pub fn generate(&self, prompts: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> {
                #rt::generate::generate_by_recompute(Self::VOCAB_SIZE, Self::MAX_POSITIONS, prompts, options, |batch, workspace, row| {
                    let logits = self.logits_into(batch, workspace)?;
                    row.copy_from_slice(&logits[batch.rows() - 1]);
                    ::core::result::Result::Ok(())
                })
            }
        }
    });
    let scratch_doc = format!("Per-layer scratch buffers of `{name}`, carved from a workspace.");
    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            /// Token embeddings plus axial positions.
            pub embeddings: #embeddings_ty,
            #[doc = #layers_doc]
            pub layers: ::std::vec::Vec<#layer_ty>,
            /// LayerNorm over both streams side by side (`reformer.encoder.layer_norm`).
            pub final_norm: #rt::layers::LayerNorm<#w>,
            /// From both streams to the vocabulary (`lm_head.decoder.weight`, bias `lm_head.bias`).
            pub lm_head: #rt::layers::Linear<#w, #v>,
            threads: #rt::Threads,
            workspaces: #rt::workspace::WorkspacePool,
            lsh_workspaces: #rt::layers::lsh::LshWorkspacePool,
        }

        impl #name {
            #(#consts)*
            /// Which layers attend by LSH (the others attend locally): Hugging Face's `attn_layers`.
            pub const LSH_LAYERS: [bool; #n_layers] = [#(#lsh_layers),*];
            /// The chunk lengths of the attention kinds present: inputs are padded to a multiple
            /// of their least common multiple, as Hugging Face pads them.
            pub const CHUNK_LENGTHS: &'static [usize] = &[#(#chunk_lengths),*];

            #[doc = #rotations_doc]
            pub fn from_safetensors(
                model: impl ::core::convert::AsRef<::std::path::Path>,
                rotations: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> #rt::Result<Self> {
                let mut loader = #rt::WeightLoader::open(model)?;
                let mut rotations = #rt::WeightLoader::open(rotations)?;
                let model = Self::load(&mut loader, &mut rotations);
                loader.finish()?;
                rotations.finish()?;
                ::core::result::Result::Ok(model)
            }

            /// Takes every tensor from `loader` and every LSH layer's rotations from `rotations`
            /// (both record, rather than stop at, each problem: call `finish()` on both).
            pub fn load(loader: &mut #rt::WeightLoader, rotations: &mut #rt::WeightLoader) -> Self {
                Self {
                    embeddings: #embeddings_ty::load(loader, #EMBEDDINGS),
                    layers: (0..#n_layers)
                        .map(|i| {
                            let attention = ::std::format!("{}.{i}.attention", #LAYER);
                            #layer_ty {
                                attention: #load_attention,
                                feed_forward: #ff_ty::load(loader, &::std::format!("{}.{i}.feed_forward", #LAYER)),
                            }
                        })
                        .collect(),
                    final_norm: #rt::layers::LayerNorm::load(loader, #FINAL_NORM, Self::NORM_EPS),
                    lm_head: #rt::layers::Linear::load_with_bias(loader, #HEAD_WEIGHT, #HEAD_BIAS),
                    threads: #rt::Threads::sequential(),
                    workspaces: ::core::default::Default::default(),
                    lsh_workspaces: ::core::default::Default::default(),
                }
            }

            /// Uses `threads` for every later forward pass.
            pub fn with_threads(mut self, threads: #rt::Threads) -> Self {
                self.threads = threads;
                self
            }

            /// The threads forward passes use.
            pub fn threads(&self) -> &#rt::Threads {
                &self.threads
            }

            /// Logits for every token of every sequence (`batch.rows()` rows). The batch runs as
            /// Hugging Face runs it: padded on the right to a multiple of [`Self::CHUNK_LENGTHS`]
            /// (which changes how tokens are chunked), positions counted from each row's start;
            /// the padding's rows are dropped from the result.
            pub fn logits_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#logits_row]> {
                batch.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, ::core::option::Option::None)?;
                let (width, padded) = (batch.seq_len(), #rt::layers::lsh::padded_length(batch.seq_len(), Self::CHUNK_LENGTHS));
                if padded > Self::MAX_POSITIONS {
                    return ::core::result::Result::Err(#rt::Error::PaddedTooLong { width, padded, max: Self::MAX_POSITIONS });
                }
                let mut lsh = self.lsh_workspaces.take();
                let run = lsh.pad(batch, padded);
                let rows = run.rows();
                let [x1, x2, sublayer, normed, projected, context, hidden, wide, logits] = workspace.carve([
                    (rows * #d), (rows * #d), (rows * #d), (rows * #d), (rows * #projected),
                    (rows * #d), (rows * #ff), (rows * #w), (rows * #v),
                ]);
                let (x1, x2) = (x1.as_chunks_mut::<#d>().0, x2.as_chunks_mut::<#d>().0);
                let s = &mut #scratch_ty {
                    sublayer: sublayer.as_chunks_mut::<#d>().0,
                    normed: normed.as_chunks_mut::<#d>().0,
                    projected,
                    context: context.as_chunks_mut::<#d>().0,
                    hidden: hidden.as_chunks_mut::<#ff>().0,
                    lsh: &mut lsh,
                };
                // Both streams start as the embeddings.
                self.embeddings.forward(x2, &run);
                x1.copy_from_slice(x2);
                for layer in &self.layers {
                    layer.forward(x1, x2, &run, s, &self.threads);
                }
                lsh.recycle(run);
                self.lsh_workspaces.put(lsh);
                let wide = wide.as_chunks_mut::<#w>().0;
                #rt::layers::lsh::concat_streams(x1, x2, wide);
                self.final_norm.forward(wide);
                let logits = logits.as_chunks_mut::<#v>().0;
                self.lm_head.forward(wide, logits, #rt::Activation::Identity, &self.threads);
                // Row t of sequence b moves from b·padded + t to b·width + t (never later).
                for b in 0..batch.batch_size() {
                    logits.copy_within(b * padded..b * padded + width, b * width);
                }
                ::core::result::Result::Ok(&logits[..batch.rows()])
            }

            /// [`Self::logits_into`] with a workspace kept by the model; returns owned rows.
            pub fn logits(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#logits_row>> {
                self.workspaces.with(|ws| self.logits_into(batch, ws).map(<[_]>::to_vec))
            }
    #generate        }

        #embeddings
        #attention
        #feed_forward

        /// One reversible layer: `Y1 = X1 + Attention(X2)`, then `Y2 = X2 + FeedForward(Y1)`.
        #[derive(Clone, Debug)]
        #vis struct #layer_ty {
            pub attention: #attention_ty,
            pub feed_forward: #ff_ty,
        }

        impl #layer_ty {
            /// Updates both streams in place.
            pub fn forward(
                &self,
                x1: &mut [[f32; #d]],
                x2: &mut [[f32; #d]],
                batch: &#rt::Batch,
                s: &mut #scratch_ty<'_>,
                threads: &#rt::Threads,
            ) {
                self.attention.forward(x2, batch, s, threads);
                #rt::layers::residual_add(x1, s.sublayer);
                self.feed_forward.forward(x1, s, threads);
                #rt::layers::residual_add(x2, s.sublayer);
            }
        }

        #[doc = #scratch_doc]
        #[derive(Debug)]
        #vis struct #scratch_ty<'a> {
            #scratch_fields
        }

        impl #name {
            /// The LayerNorms' epsilon (`layer_norm_eps`).
            pub const NORM_EPS: f32 = #eps;
        }

        const _: () = {
            fn assert_send_sync<T: ::core::marker::Send + ::core::marker::Sync>() {}
            fn check() {
                assert_send_sync::<#name>();
            }
        };
    }
}

/// `…Embeddings`: `x[row] = word_embeddings[id] + axial(position in the padded row)`.
fn embeddings_block(spec: &Reformer, ty: &Ident) -> TokenStream {
    let rt = rt();
    let (vis, d, v) = (&spec.vis, spec.d_model, spec.vocab_size);
    let (shape, dims) = (spec.axial_shape, spec.axial_dims);
    let (s0, s1, d0, d1) = (shape[0], shape[1], dims[0], dims[1]);
    quote! {
        /// Token embeddings plus axial position embeddings (`reformer.embeddings`).
        #[derive(Clone, Debug)]
        #vis struct #ty {
            /// `word_embeddings.weight`, `[VOCAB_SIZE, D_MODEL]`.
            pub word_embeddings: #rt::layers::Embedding<#d>,
            /// `position_embeddings.weights.{0,1}`: `[s0, 1, d0]` and `[1, s1, d1]`.
            pub position_embeddings: #rt::layers::lsh::AxialPositions<#d>,
        }

        impl #ty {
            /// Loads this block's tensors under `prefix`.
            pub fn load(loader: &mut #rt::WeightLoader, prefix: &str) -> Self {
                Self {
                    word_embeddings: #rt::layers::Embedding::load(loader, &::std::format!("{prefix}.word_embeddings.weight"), #v),
                    position_embeddings: #rt::layers::lsh::AxialPositions::load(
                        loader,
                        &::std::format!("{prefix}.position_embeddings"),
                        [#s0, #s1],
                        [#d0, #d1],
                    ),
                }
            }

            /// `x[row] = word(id) + axial(position)`; positions are indices in the padded row, as
            /// Hugging Face counts them.
            pub fn forward(&self, x: &mut [[f32; #d]], batch: &#rt::Batch) {
                let seq = batch.seq_len();
                for (row, (x, &id)) in x.iter_mut().zip(batch.ids()).enumerate() {
                    self.word_embeddings.copy_row(id as usize, x);
                    self.position_embeddings.add_row(row % seq, x);
                }
            }
        }
    }
}

/// `…Attention` (one variant per kind the model has) and the kinds' blocks.
fn attention_blocks(
    spec: &Reformer,
    ty: &Ident,
    lsh_ty: &Ident,
    local_ty: &Ident,
    scratch_ty: &Ident,
) -> TokenStream {
    let rt = rt();
    let (vis, d, hd, heads, causal) = (&spec.vis, spec.d_model, spec.head_dim, spec.heads, spec.causal);
    let norm_eps = spec.eps as f32;
    let lsh = spec.lsh.map(|l| {
        let (chunk, before, after, buckets, hashes) = (l.chunk, l.chunks_before, l.chunks_after, l.buckets, l.hashes);
        let qkv = 2 * d;
        quote! {
            /// LSH self-attention (`attention` of an `lsh` layer): queries and keys share one
            /// projection, hashed into buckets by this layer's rotations, sorted, and attended in
            /// chunks.
            #[derive(Clone, Debug)]
            #vis struct #lsh_ty {
                /// `layer_norm`, applied to the sublayer's input.
                pub layer_norm: #rt::layers::LayerNorm<#d>,
                /// `self_attention.query_key` and `self_attention.value`: `[QK | V]`, no bias.
                pub query_key_value: #rt::layers::Linear<#d, #qkv>,
                /// `output.dense`, no bias.
                pub output: #rt::layers::Linear<#d, #d>,
                /// `self_attention.rotations` from the rotations file, `[heads, head_dim, hashes, buckets / 2]`.
                pub rotations: ::std::vec::Vec<f32>,
            }

            impl #lsh_ty {
                /// The layer's hashing and chunking.
                pub const SHAPE: #rt::layers::lsh::LshShape = #rt::layers::lsh::LshShape {
                    heads: #heads,
                    hashes: #hashes,
                    buckets: #buckets,
                    chunk: #chunk,
                    chunks_before: #before,
                    chunks_after: #after,
                    causal: #causal,
                };

                /// Loads the weights under `prefix` and the rotations under
                /// `{prefix}.self_attention.rotations` from `rotations`.
                pub fn load(loader: &mut #rt::WeightLoader, rotations: &mut #rt::WeightLoader, prefix: &str) -> Self {
                    Self {
                        layer_norm: #rt::layers::LayerNorm::load(loader, &::std::format!("{prefix}.layer_norm"), #norm_eps),
                        query_key_value: #rt::layers::Linear::load_fused(
                            loader,
                            &[&::std::format!("{prefix}.self_attention.query_key"), &::std::format!("{prefix}.self_attention.value")],
                            false,
                        ),
                        output: #rt::layers::Linear::load(loader, &::std::format!("{prefix}.output.dense"), false),
                        rotations: rotations.take(
                            &::std::format!("{prefix}.self_attention.rotations"),
                            &Self::SHAPE.rotations_shape(#hd),
                        ),
                    }
                }

                /// `s.sublayer = output(lsh_attention(query_key_value(layer_norm(x))))`.
                pub fn forward(&self, x: &[[f32; #d]], batch: &#rt::Batch, s: &mut #scratch_ty<'_>, threads: &#rt::Threads) {
                    self.layer_norm.forward_into(x, s.normed);
                    let qkv = s.projected[..batch.rows() * #qkv].as_chunks_mut::<#qkv>().0;
                    self.query_key_value.forward(s.normed, qkv, #rt::Activation::Identity, threads);
                    #rt::layers::lsh::lsh_self_attention_in::<#hd>(
                        qkv.as_flattened(), batch, Self::SHAPE, &self.rotations, s.context.as_flattened_mut(), threads, s.lsh,
                    );
                    self.output.forward(s.context, s.sublayer, #rt::Activation::Identity, threads);
                }
            }
        }
    });
    let local = spec.local.map(|l| {
        let (chunk, before, after) = (l.chunk, l.chunks_before, l.chunks_after);
        let qkv = 3 * d;
        quote! {
            /// Local self-attention (`attention` of a `local` layer): each chunk of positions
            /// attends to itself and its neighbour chunks.
            #[derive(Clone, Debug)]
            #vis struct #local_ty {
                /// `layer_norm`, applied to the sublayer's input.
                pub layer_norm: #rt::layers::LayerNorm<#d>,
                /// `self_attention.{query,key,value}`: `[Q | K | V]`, no bias.
                pub query_key_value: #rt::layers::Linear<#d, #qkv>,
                /// `output.dense`, no bias.
                pub output: #rt::layers::Linear<#d, #d>,
            }

            impl #local_ty {
                /// The layer's chunking.
                pub const SHAPE: #rt::layers::lsh::LocalShape = #rt::layers::lsh::LocalShape {
                    heads: #heads,
                    chunk: #chunk,
                    chunks_before: #before,
                    chunks_after: #after,
                    causal: #causal,
                };

                /// Loads the weights under `prefix`.
                pub fn load(loader: &mut #rt::WeightLoader, prefix: &str) -> Self {
                    Self {
                        layer_norm: #rt::layers::LayerNorm::load(loader, &::std::format!("{prefix}.layer_norm"), #norm_eps),
                        query_key_value: #rt::layers::Linear::load_fused(
                            loader,
                            &[
                                &::std::format!("{prefix}.self_attention.query"),
                                &::std::format!("{prefix}.self_attention.key"),
                                &::std::format!("{prefix}.self_attention.value"),
                            ],
                            false,
                        ),
                        output: #rt::layers::Linear::load(loader, &::std::format!("{prefix}.output.dense"), false),
                    }
                }

                /// `s.sublayer = output(local_attention(query_key_value(layer_norm(x))))`.
                pub fn forward(&self, x: &[[f32; #d]], batch: &#rt::Batch, s: &mut #scratch_ty<'_>, threads: &#rt::Threads) {
                    self.layer_norm.forward_into(x, s.normed);
                    let qkv = s.projected[..batch.rows() * #qkv].as_chunks_mut::<#qkv>().0;
                    self.query_key_value.forward(s.normed, qkv, #rt::Activation::Identity, threads);
                    #rt::layers::lsh::local_self_attention_in::<#hd>(
                        qkv.as_flattened(), batch, Self::SHAPE, s.context.as_flattened_mut(), threads, s.lsh,
                    );
                    self.output.forward(s.context, s.sublayer, #rt::Activation::Identity, threads);
                }
            }
        }
    });
    let variants = [
        spec.lsh.map(|_| quote!(#[doc = "LSH attention."] Lsh(#lsh_ty),)),
        spec.local.map(|_| quote!(#[doc = "Local attention."] Local(#local_ty),)),
    ];
    let arms = [
        spec.lsh.map(|_| quote!(Self::Lsh(a) => a.forward(x, batch, s, threads),)),
        spec.local.map(|_| quote!(Self::Local(a) => a.forward(x, batch, s, threads),)),
    ];
    let (variants, arms) = (variants.iter().flatten(), arms.iter().flatten());
    quote! {
        /// A layer's attention sublayer: LSH or local, as `attn_layers` lists it.
        #[derive(Clone, Debug)]
        #vis enum #ty {
            #(#variants)*
        }

        impl #ty {
            /// `s.sublayer = Attention(x)`.
            pub fn forward(&self, x: &[[f32; #d]], batch: &#rt::Batch, s: &mut #scratch_ty<'_>, threads: &#rt::Threads) {
                match self {
                    #(#arms)*
                }
            }
        }

        #lsh
        #local
    }
}

/// `…FeedForward`: `s.sublayer = output(act(dense(layer_norm(x))))`.
fn feed_forward_block(spec: &Reformer, ty: &Ident, scratch_ty: &Ident) -> TokenStream {
    let rt = rt();
    let (vis, d, ff) = (&spec.vis, spec.d_model, spec.d_ff);
    let norm_eps = spec.eps as f32;
    let act = activation(Some(spec.activation));
    quote! {
        /// The feed-forward sublayer (`feed_forward`).
        #[derive(Clone, Debug)]
        #vis struct #ty {
            /// `layer_norm`, applied to the sublayer's input.
            pub layer_norm: #rt::layers::LayerNorm<#d>,
            /// `dense.dense`, with bias; the activation is fused into it.
            pub dense: #rt::layers::Linear<#d, #ff>,
            /// `output.dense`, with bias.
            pub output: #rt::layers::Linear<#ff, #d>,
        }

        impl #ty {
            /// Loads the weights under `prefix`.
            pub fn load(loader: &mut #rt::WeightLoader, prefix: &str) -> Self {
                Self {
                    layer_norm: #rt::layers::LayerNorm::load(loader, &::std::format!("{prefix}.layer_norm"), #norm_eps),
                    dense: #rt::layers::Linear::load(loader, &::std::format!("{prefix}.dense.dense"), true),
                    output: #rt::layers::Linear::load(loader, &::std::format!("{prefix}.output.dense"), true),
                }
            }

            /// `s.sublayer = FeedForward(x)`.
            pub fn forward(&self, x: &[[f32; #d]], s: &mut #scratch_ty<'_>, threads: &#rt::Threads) {
                self.layer_norm.forward_into(x, s.normed);
                let hidden = &mut s.hidden[..x.len()];
                self.dense.forward(s.normed, hidden, #act, threads);
                self.output.forward(hidden, s.sublayer, #rt::Activation::Identity, threads);
            }
        }
    }
}
