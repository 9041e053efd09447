//! The Reformer's API over its graph ([`crate::graph::reformer`]): the blocks are written by
//! [`super::block`] like every other model's; this writes what only a Reformer has — a layer
//! enum over its layer types (LSH, local), loading from a second file of LSH rotations, and a
//! forward pass that pads the batch to whole chunks as Hugging Face does and drops the padding's
//! rows from the logits. A causal Reformer generates by recomputing (it has no KV cache).

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::LitStr;

use super::{block, block_ident, carve, rt, scratch_struct, scratch_union};
use crate::graph::{self, Block, Chunking, FieldKind, Graph, Op};
use crate::spec::Spec;

pub fn generate(spec: &Spec, graph: &Graph) -> TokenStream {
    if let Err(e) = graph::check_widths(graph.blocks(), spec.d_model_span) {
        return e.into_compile_error();
    }
    let name = &spec.name;
    let scratch_ty = format_ident!("{}Scratch", name);
    let blocks = graph.blocks().map(|b| block(spec, b, &scratch_ty));
    let scratch_values = scratch_union(graph.blocks());
    let scratch_def = scratch_struct(spec, &scratch_ty, &scratch_values);
    let layer_types: Vec<&Block> = std::iter::once(&graph.layer).chain(&graph.other_layers).collect();
    let layer_enum = layer_enum(spec, &layer_types, &scratch_ty);
    let model = model_struct(spec, graph);
    let consts = consts(spec, graph, &layer_types);
    let load = load(spec, graph, &layer_types);
    let logits = logits(spec, graph, &scratch_ty, &scratch_values);
    quote! {
        #model
        impl #name {
            #consts
            #load
            #logits
        }
        #layer_enum
        #(#blocks)*
        #scratch_def
        const _: () = {
            fn assert_send_sync<T: ::core::marker::Send + ::core::marker::Sync>() {}
            fn check() {
                assert_send_sync::<#name>();
            }
        };
    }
}

/// A layer type's attention kind: the variant name of the layer enum.
fn kind(layer: &Block) -> Ident {
    match layer.ops.iter().any(|op| matches!(op, Op::LshAttention { .. })) {
        true => format_ident!("Lsh"),
        false => format_ident!("Local"),
    }
}

fn chunking(layer: &Block) -> Option<Chunking> {
    layer.ops.iter().find_map(|op| match op {
        Op::LshAttention { chunking, .. } | Op::LocalAttention { chunking, .. } => Some(*chunking),
        _ => None,
    })
}

fn has_rotations(layer: &Block) -> bool {
    layer.fields.iter().any(|f| matches!(f.kind, FieldKind::Rotations { .. }))
}

fn model_struct(spec: &Spec, graph: &Graph) -> TokenStream {
    let rt = rt();
    let (attrs, vis, name) = (&spec.attrs, &spec.vis, &spec.name);
    let ident = |b: &Block| block_ident(spec, b);
    let (embeddings, layer) = (ident(&graph.embeddings), format_ident!("{}Layer", name));
    let final_norm = graph.final_norm.as_ref().map(ident);
    let head = graph.head.as_ref().map(ident);
    let layers_doc = format!("The {} reversible layers, loaded from `{}`.", graph.layers, graph.layer.prefix);
    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            /// Token embeddings plus axial positions.
            pub embeddings: #embeddings,
            #[doc = #layers_doc]
            pub layers: ::std::vec::Vec<#layer>,
            /// LayerNorm over both streams side by side (`reformer.encoder.layer_norm`).
            pub final_norm: #final_norm,
            /// From both streams to the vocabulary (`lm_head.decoder.weight`, bias `lm_head.bias`).
            pub lm_head: #head,
            threads: #rt::Threads,
            workspaces: #rt::workspace::WorkspacePool,
            lsh_workspaces: #rt::layers::lsh::LshWorkspacePool,
        }
    }
}

/// `…Layer`: one variant per layer type, each running its block.
fn layer_enum(spec: &Spec, layer_types: &[&Block], scratch_ty: &Ident) -> TokenStream {
    let rt = rt();
    let (vis, d, name) = (&spec.vis, spec.d_model, format_ident!("{}Layer", spec.name));
    let variants = layer_types.iter().map(|b| {
        let (kind, ty, doc) = (kind(b), block_ident(spec, b), &b.doc);
        quote!(#[doc = #doc] #kind(#ty),)
    });
    let arms = layer_types.iter().map(|b| {
        let kind = kind(b);
        quote!(Self::#kind(layer) => layer.forward(x, batch, s, chunked, threads),)
    });
    quote! {
        /// One reversible layer: `Y1 = X1 + Attention(X2)`, then `Y2 = X2 + FeedForward(Y1)`, with
        /// the attention its type has (Hugging Face's `attn_layers`).
        #[derive(Clone, Debug)]
        #vis enum #name {
            #(#variants)*
        }

        impl #name {
            /// Updates both streams (`x` and `s.x2`) in place.
            pub fn forward(
                &self,
                x: &mut [[f32; #d]],
                batch: &#rt::Batch,
                s: &mut #scratch_ty<'_>,
                chunked: &mut #rt::layers::lsh::LshWorkspace,
                threads: &#rt::Threads,
            ) {
                match self {
                    #(#arms)*
                }
            }
        }
    }
}

fn consts(spec: &Spec, graph: &Graph, layer_types: &[&Block]) -> TokenStream {
    let n_layers = graph.layers;
    let standard = [
        ("VOCAB_SIZE", spec.vocab_size, "Vocabulary size: token ids are `0..VOCAB_SIZE`."),
        ("MAX_POSITIONS", spec.max_positions, "Positions of the axial table (`shape[0] · shape[1]`)."),
        ("D_MODEL", spec.d_model, "Width of each of the two residual streams."),
        ("HEADS", spec.heads, "Attention heads per layer."),
        ("HEAD_DIM", spec.head_dim, "Width of one head: `D_MODEL / HEADS`."),
        ("LAYERS", n_layers, "Number of reversible layers."),
        ("D_FF", spec.d_ff, "Inner width of the feed-forward blocks."),
    ]
    .map(|(n, value, doc)| {
        let n = format_ident!("{}", n);
        quote!(#[doc = #doc] pub const #n: usize = #value;)
    });
    let type_of = |i: usize| layer_types[graph.layer_types.get(i).copied().unwrap_or(0)];
    let lsh_layers = (0..n_layers).map(|i| has_rotations(type_of(i)));
    let chunk_lengths = layer_types.iter().filter_map(|b| chunking(b)).map(|c| c.chunk);
    let eps = spec.norm.eps as f32;
    quote! {
        #(#standard)*
        /// Which layers attend by LSH (the others attend locally): Hugging Face's `attn_layers`.
        pub const LSH_LAYERS: [bool; #n_layers] = [#(#lsh_layers),*];
        /// The chunk lengths of the attention kinds present: inputs are padded to a multiple
        /// of their least common multiple, as Hugging Face pads them.
        pub const CHUNK_LENGTHS: &'static [usize] = &[#(#chunk_lengths),*];
        /// The LayerNorms' epsilon (`layer_norm_eps`).
        pub const NORM_EPS: f32 = #eps;
    }
}

/// `from_safetensors` / `load` (the model file and the rotations file), threads.
fn load(spec: &Spec, graph: &Graph, layer_types: &[&Block]) -> TokenStream {
    let rt = rt();
    let ident = |b: &Block| block_ident(spec, b);
    let layer = format_ident!("{}Layer", spec.name);
    let prefix = |b: &Block| LitStr::new(b.prefix, Span::call_site());
    let (embeddings, embeddings_prefix) = (ident(&graph.embeddings), prefix(&graph.embeddings));
    let load_type = |b: &Block| {
        let (kind, ty) = (kind(b), ident(b));
        let rotations = has_rotations(b).then(|| quote!(rotations,));
        quote!(#layer::#kind(#ty::load(loader, #rotations &prefix)))
    };
    let load_layer = match layer_types {
        [only] => load_type(only),
        _ => {
            let types = &graph.layer_types;
            let n = types.len();
            let arms = layer_types.iter().enumerate().map(|(t, b)| {
                let load = load_type(b);
                quote!(#t => #load,)
            });
            quote!({
                const TYPES: [usize; #n] = [#(#types),*];
                match TYPES[i] {
                    #(#arms)*
                    _ => ::core::unreachable!("a layer type index from the macro"),
                }
            })
        }
    };
    let (norm, head) = (graph.final_norm.as_ref(), graph.head.as_ref());
    let (norm_ty, norm_prefix) = (norm.map(ident), norm.map(prefix));
    let (head_ty, head_prefix) = (head.map(ident), head.map(prefix));
    let layer_prefix = prefix(&graph.layer);
    let n_layers = graph.layers;
    let (renames, threads) = (super::config::renames(spec), super::threads_methods());
    let from_pretrained = super::config::from_pretrained(
        spec,
        &super::config::Extra {
            params: quote!(, rotations: impl ::core::convert::AsRef<::std::path::Path>),
            open: quote!(let mut rotations = #rt::WeightLoader::open(rotations)?;),
            finish: quote!(rotations.finish()?;),
            args: quote!(, &mut rotations),
        },
    );
    let doc = format!(
        "Loads the model from a safetensors checkpoint and each LSH layer's rotations from a second \
         file (`{}.attention.self_attention.rotations`, `[heads, head_dim, hashes, buckets / 2]`: \
         Hugging Face draws them at random in every forward, so they are an input of the model); \
         every problem of either file is listed in one error.",
        graph.layer.prefix
    );
    quote! {
        #[doc = #doc]
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

        #from_pretrained

        /// Takes every tensor from `loader` and every LSH layer's rotations from `rotations`
        /// (both record, rather than stop at, each problem: call `finish()` on both).
        pub fn load(loader: &mut #rt::WeightLoader, rotations: &mut #rt::WeightLoader) -> Self {
            #renames
            Self {
                embeddings: #embeddings::load(loader, #embeddings_prefix),
                layers: (0..#n_layers)
                    .map(|i| {
                        let prefix = ::std::format!(#layer_prefix);
                        #load_layer
                    })
                    .collect(),
                final_norm: #norm_ty::load(loader, #norm_prefix),
                lm_head: #head_ty::load(loader, #head_prefix),
                threads: #rt::Threads::sequential(),
                workspaces: ::core::default::Default::default(),
                lsh_workspaces: ::core::default::Default::default(),
            }
        }

        #threads
    }
}

/// `logits_into` (padding to whole chunks, the blocks in order, the padding's rows dropped),
/// `logits`, and for a causal Reformer `generate`.
fn logits(spec: &Spec, graph: &Graph, scratch_ty: &Ident, scratch: &[graph::Value]) -> TokenStream {
    let rt = rt();
    let v = spec.vocab_size;
    let logits_row = quote_spanned!(spec.vocab_span=> [f32; #v]);
    let carve = carve(spec, scratch_ty, scratch, &[(format_ident!("logits"), quote!(rows * #v))]);
    let causal = graph.layer.ops.iter().any(|op| {
        matches!(op, Op::LshAttention { causal: true, .. } | Op::LocalAttention { causal: true, .. })
    });
    let generate = causal.then(|| {
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
    quote! {
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
            let (sequences, real_rows) = (batch.batch_size(), batch.rows());
            let mut chunked = self.lsh_workspaces.take();
            let run = chunked.pad(batch, padded);
            let batch = &run;
            #carve
            let logits = logits.as_chunks_mut::<#v>().0;
            let threads = &self.threads;
            self.embeddings.forward(x, batch, s);
            for layer in &self.layers {
                layer.forward(x, batch, s, &mut chunked, threads);
            }
            self.final_norm.forward(x, s);
            self.lm_head.forward(logits, s, threads);
            chunked.recycle(run);
            self.lsh_workspaces.put(chunked);
            // Row t of sequence b moves from b·padded + t to b·width + t (never later).
            for b in 0..sequences {
                logits.copy_within(b * padded..b * padded + width, b * width);
            }
            ::core::result::Result::Ok(&logits[..real_rows])
        }

        /// [`Self::logits_into`] with a workspace kept by the model; returns owned rows.
        pub fn logits(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#logits_row>> {
            self.workspaces.with(|ws| self.logits_into(batch, ws).map(<[_]>::to_vec))
        }

        #generate
    }
}
