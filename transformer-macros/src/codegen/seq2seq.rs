//! The API of an encoder-decoder model: encode sources once (hidden states plus every decoder
//! layer's cross-attention keys and values), teacher-forced logits, cached decoding steps, and
//! generation through the runtime's one driver (a model conditioned on an encoder memory is a
//! causal language model).
//!
//! [`generate`] writes the model in parts, one method of [`Model`] each: the struct, its consts,
//! loading, encoding, teacher-forced logits, cached steps, generation, the conditioned model and
//! the blocks. The methods' parts go into one `impl`, in that order.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::LitStr;

use super::{additive_cross, block, block_ident, carve_width, rt, scratch_struct, stack_bias};
use crate::graph::seq2seq::{Seq2SeqGraph, Stack};
use crate::graph::{self, AdditiveKind, Block};
use crate::spec::{Seq2Seq, Spec};

pub fn generate(spec: &Spec, s2s: &Seq2Seq, graph: &Seq2SeqGraph) -> TokenStream {
    if let Err(e) = graph::check_widths(graph.blocks(), spec.d_model_span) {
        return e.into_compile_error();
    }
    let model = Model::new(spec, s2s, graph);
    let name = &spec.name;
    let (model_struct, consts, loading) = (model.model_struct(), model.consts(), model.loading());
    let (encoding, teacher_forced) = (model.encoding(), model.teacher_forced());
    let (cached_steps, generation) = (model.cached_steps(), model.generation());
    let (conditioned, blocks) = (model.conditioned(), model.blocks());
    quote! {
        #model_struct

        impl #name {
            #consts
            #loading
            #encoding
            #teacher_forced
            #cached_steps
            #generation
        }

        #conditioned
        #blocks
        const _: () = {
            // Models are shared across threads: one loaded model serves many callers.
            fn assert_send_sync<T: ::core::marker::Send + ::core::marker::Sync>() {}
            fn check() {
                assert_send_sync::<#name>();
            }
        };
    }
}

/// What the generated parts share: the model, the runtime's path, the two stacks' scratch types,
/// and how the methods feed the decoder layers' cross-attention.
struct Model<'a> {
    spec: &'a Spec,
    s2s: &'a Seq2Seq,
    graph: &'a Seq2SeqGraph,
    rt: TokenStream,
    enc_scratch: Ident,
    dec_scratch: Ident,
    cross: CrossCalls,
}

impl<'a> Model<'a> {
    fn new(spec: &'a Spec, s2s: &'a Seq2Seq, graph: &'a Seq2SeqGraph) -> Self {
        Model {
            spec,
            s2s,
            graph,
            rt: rt(),
            enc_scratch: format_ident!("{}EncoderScratch", spec.name),
            dec_scratch: format_ident!("{}DecoderScratch", spec.name),
            cross: CrossCalls::of(&graph.decoder.layer, s2s.decoder.inner(), spec.d_model),
        }
    }

    fn ty(&self, b: &Block) -> Ident {
        block_ident(self.spec, b)
    }

    /// `Block::load(loader, prefix)` for a block loaded once.
    fn load(&self, b: &Block) -> TokenStream {
        let (t, prefix) = (self.ty(b), b.prefix);
        quote!(#t::load(loader, #prefix))
    }

    /// A stack's layers, each loaded from its own prefix.
    fn layers_load(&self, stack: &Stack) -> TokenStream {
        let (t, prefix) = (self.ty(&stack.layer), LitStr::new(stack.layer.prefix, Span::call_site()));
        let n = stack.layers;
        quote!((0..#n).map(|i| #t::load(loader, &format!(#prefix))).collect())
    }

    /// `[f32; D_MODEL]`, spanned at the user's `d_model`: a row of the encoder's output.
    fn enc_row(&self) -> TokenStream {
        let d = self.spec.d_model;
        quote_spanned!(self.spec.d_model_span=> [f32; #d])
    }

    /// `[f32; VOCAB_SIZE]`, spanned at the user's `vocab_size`: a row of logits.
    fn logits_row(&self) -> TokenStream {
        let v = self.spec.vocab_size;
        quote_spanned!(self.spec.vocab_span=> [f32; #v])
    }

    /// The layer index argument, for layers whose windows differ.
    fn index(layer: &Block) -> Option<TokenStream> {
        layer.per_layer().then(|| quote!(i,))
    }

    /// The model struct: each stack's blocks, the head, threads and workspaces (and the
    /// alignment states a location-sensitive model reuses).
    fn model_struct(&self) -> TokenStream {
        let (spec, graph, rt) = (self.spec, self.graph, &self.rt);
        let (attrs, vis, name) = (&spec.attrs, &spec.vis, &spec.name);
        let (enc_emb, enc_layer, dec_emb, dec_layer, head_ty) = (
            self.ty(&graph.encoder.embeddings),
            self.ty(&graph.encoder.layer),
            self.ty(&graph.decoder.embeddings),
            self.ty(&graph.decoder.layer),
            self.ty(&graph.head),
        );
        let enc_final = graph.encoder.final_norm.as_ref().map(|b| {
            let t = self.ty(b);
            quote!(#[doc = "The norm after the encoder's last layer."] pub encoder_final_norm: #t,)
        });
        let dec_final = graph.decoder.final_norm.as_ref().map(|b| {
            let t = self.ty(b);
            quote!(#[doc = "The norm after the decoder's last layer."] pub decoder_final_norm: #t,)
        });
        let (enc_layers, dec_layers) = (graph.encoder.layers, graph.decoder.layers);
        let enc_layers_doc =
            format!("The {enc_layers} encoder layers, loaded from `{}`.", graph.encoder.layer.prefix);
        let dec_layers_doc =
            format!("The {dec_layers} decoder layers, loaded from `{}`.", graph.decoder.layer.prefix);
        // Location-sensitive models keep the teacher-forced passes' alignment states for reuse.
        let pool_field = self
            .cross
            .full_state
            .as_ref()
            .map(|_| quote!(alignment_states: #rt::layers::additive::AlignmentPool,));
        quote! {
            #(#attrs)*
            #[derive(Debug)]
            #vis struct #name {
                /// Encoder input: token embeddings (and positions).
                pub encoder_embeddings: #enc_emb,
                #[doc = #enc_layers_doc]
                pub encoder_layers: ::std::vec::Vec<#enc_layer>,
                #enc_final
                /// Decoder input: token embeddings (and positions).
                pub decoder_embeddings: #dec_emb,
                #[doc = #dec_layers_doc]
                pub decoder_layers: ::std::vec::Vec<#dec_layer>,
                #dec_final
                /// Decoder states to vocabulary logits.
                pub lm_head: #head_ty,
                threads: #rt::Threads,
                workspaces: #rt::workspace::WorkspacePool,
                #pool_field
            }
        }
    }

    /// The dims as consts, and the checkpoint tensors deliberately left unused.
    fn consts(&self) -> TokenStream {
        let (spec, s2s, graph) = (self.spec, self.s2s, self.graph);
        let (d, dd, v) = (spec.d_model, s2s.decoder.d_model, spec.vocab_size);
        let (heads, head_dim, enc_layers, dec_layers, d_ff, max_pos, start) = (
            spec.heads,
            spec.head_dim(),
            graph.encoder.layers,
            graph.decoder.layers,
            spec.d_ff,
            spec.max_positions,
            s2s.decoder_start,
        );
        let (dec_heads, dec_ff) = (s2s.decoder.heads, s2s.decoder.d_ff);
        let ignored = &graph.ignored;
        quote! {
            /// Vocabulary size: token ids are `0..VOCAB_SIZE`.
            pub const VOCAB_SIZE: usize = #v;
            /// Longest source or decoded sequence the positions cover.
            pub const MAX_POSITIONS: usize = #max_pos;
            /// Width of the encoder's hidden states.
            pub const D_MODEL: usize = #d;
            /// Width of the decoder's hidden states.
            pub const DECODER_D_MODEL: usize = #dd;
            /// Attention heads per encoder layer.
            pub const HEADS: usize = #heads;
            /// Attention heads per decoder layer.
            pub const DECODER_HEADS: usize = #dec_heads;
            /// Width of one head.
            pub const HEAD_DIM: usize = #head_dim;
            /// Encoder layers.
            pub const ENCODER_LAYERS: usize = #enc_layers;
            /// Decoder layers.
            pub const DECODER_LAYERS: usize = #dec_layers;
            /// Inner width of the encoder's feed-forward blocks.
            pub const D_FF: usize = #d_ff;
            /// Inner width of the decoder's feed-forward blocks.
            pub const DECODER_D_FF: usize = #dec_ff;
            /// The token every decoded sequence starts from.
            pub const DECODER_START: u32 = #start;
            /// Checkpoint tensors this model knows and deliberately does not use.
            pub const IGNORED_TENSORS: &'static [&'static str] = &[#(#ignored),*];
        }
    }

    /// `from_safetensors`, `load`, and the threads forward passes use.
    fn loading(&self) -> TokenStream {
        let (graph, rt) = (self.graph, &self.rt);
        let (enc_emb_load, dec_emb_load, head_load) = (
            self.load(&graph.encoder.embeddings),
            self.load(&graph.decoder.embeddings),
            self.load(&graph.head),
        );
        let (enc_layers_load, dec_layers_load) =
            (self.layers_load(&graph.encoder), self.layers_load(&graph.decoder));
        let enc_final_load = graph.encoder.final_norm.as_ref().map(|b| {
            let l = self.load(b);
            quote!(encoder_final_norm: #l,)
        });
        let dec_final_load = graph.decoder.final_norm.as_ref().map(|b| {
            let l = self.load(b);
            quote!(decoder_final_norm: #l,)
        });
        let from_pretrained = super::config::from_pretrained(self.spec, &super::config::Extra::default());
        let threads = super::threads_methods();
        let pool_init = self
            .cross
            .full_state
            .as_ref()
            .map(|_| quote!(alignment_states: ::core::default::Default::default(),));
        quote! {
            /// Loads the model from a safetensors file, checking every tensor's name and shape;
            /// every problem is listed in one error.
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
                let mut loader = #rt::WeightLoader::open(path)?;
                let model = Self::load(&mut loader);
                loader.finish()?;
                ::core::result::Result::Ok(model)
            }

            #from_pretrained

            /// Takes every tensor from `loader` (which records each problem: call
            /// `loader.finish()` afterwards).
            pub fn load(loader: &mut #rt::WeightLoader) -> Self {
                for name in Self::IGNORED_TENSORS {
                    loader.ignore(name);
                }
                Self {
                    encoder_embeddings: #enc_emb_load,
                    encoder_layers: #enc_layers_load,
                    #enc_final_load
                    decoder_embeddings: #dec_emb_load,
                    decoder_layers: #dec_layers_load,
                    #dec_final_load
                    lm_head: #head_load,
                    threads: #rt::Threads::sequential(),
                    workspaces: ::core::default::Default::default(),
                    #pool_init
                }
            }

            #threads
        }
    }

    /// `encode_into` (the encoder's output), `encode` (that output and every decoder layer's
    /// projection of it, kept in an `EncoderMemory`) and `encoder_hidden`.
    fn encoding(&self) -> TokenStream {
        let (graph, rt) = (self.graph, &self.rt);
        let d = self.spec.d_model;
        let enc_row = self.enc_row();
        let enc_carve = carve_width(d, &self.enc_scratch, &graph.encoder.layer.scratch(), &[]);
        let (enc_bias_let, enc_bias_arg) =
            stack_bias(&graph.encoder.embeddings, quote!(encoder_embeddings)).unzip();
        let enc_index = Self::index(&graph.encoder.layer);
        let enc_loop = if enc_index.is_some() {
            quote!((i, layer) in self.encoder_layers.iter().enumerate())
        } else {
            quote!(layer in &self.encoder_layers)
        };
        let enc_final_run =
            graph.encoder.final_norm.as_ref().map(|_| quote!(self.encoder_final_norm.forward(x);));
        let project_memory = &self.cross.project;
        quote! {
            /// The encoder's output for every source token (`sources.rows()` rows), written into
            /// `workspace`.
            pub fn encode_into<'w>(&self, sources: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#enc_row]> {
                sources.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, ::core::option::Option::None)?;
                let batch = sources;
                #enc_carve
                self.encoder_embeddings.forward(x, batch);
                #enc_bias_let
                for #enc_loop {
                    layer.forward(x, batch, #enc_bias_arg s, #enc_index &self.threads);
                }
                #enc_final_run
                ::core::result::Result::Ok(x)
            }

            /// Encodes `sources` once: the encoder's output and every decoder layer's
            /// cross-attention keys and values of it, for any number of decoding steps.
            pub fn encode(&self, sources: &#rt::Batch) -> #rt::Result<#rt::EncoderMemory> {
                self.workspaces.with(|ws| {
                    let hidden = self.encode_into(sources, ws)?;
                    let key_values = self
                        .decoder_layers
                        .iter()
                        .map(|layer| #project_memory)
                        .collect();
                    ::core::result::Result::Ok(#rt::EncoderMemory::new(
                        sources.clone(),
                        hidden.as_flattened().to_vec(),
                        key_values,
                    ))
                })
            }

            /// The encoder's output kept in `memory`, one row per source token.
            pub fn encoder_hidden<'m>(&self, memory: &'m #rt::EncoderMemory) -> &'m [#enc_row] {
                memory.hidden().as_chunks::<#d>().0
            }
        }
    }

    /// Whether the decoder embeds absolute positions, which continue each cache's length on a
    /// cached step: the `starts` argument of a full pass and of a step.
    fn decoder_starts(&self) -> (TokenStream, TokenStream) {
        let embeds_positions = self
            .graph
            .decoder
            .embeddings
            .ops
            .iter()
            .any(|op| matches!(op, graph::Op::Gather { index: graph::Index::Position, .. }));
        if embeds_positions {
            (quote!(, ::core::option::Option::None), quote!(, ::core::option::Option::Some(cache.lens())))
        } else {
            (quote!(), quote!())
        }
    }

    /// `logits_into` and `logits`: every target token's logits, teacher-forced (a full
    /// recompute over the decoder, no cache).
    fn teacher_forced(&self) -> TokenStream {
        let (graph, rt, cross) = (self.graph, &self.rt, &self.cross);
        let (dd, v) = (self.s2s.decoder.d_model, self.spec.vocab_size);
        let logits_row = self.logits_row();
        let full_carve = carve_width(
            dd,
            &self.dec_scratch,
            &graph.decoder.layer.scratch(),
            &[(format_ident!("logits"), quote!(rows * #v))],
        );
        let (full_starts, _) = self.decoder_starts();
        let (dec_bias_let, dec_bias_arg) =
            stack_bias(&graph.decoder.embeddings, quote!(decoder_embeddings)).unzip();
        let dec_index = Self::index(&graph.decoder.layer);
        let (memory_args, full_state, full_restore) = (&cross.args, &cross.full_state, &cross.full_restore);
        let dec_final_run =
            graph.decoder.final_norm.as_ref().map(|_| quote!(self.decoder_final_norm.forward(x);));
        quote! {
            /// Teacher-forced logits: every token of every target sequence (`targets.rows()`
            /// rows), each seeing the target tokens before it and its own source. A full
            /// recompute, no cache.
            pub fn logits_into<'w>(
                &self,
                memory: &#rt::EncoderMemory,
                targets: &#rt::Batch,
                workspace: &'w mut #rt::Workspace,
            ) -> #rt::Result<&'w [#logits_row]> {
                targets.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, ::core::option::Option::None)?;
                memory.check_targets(targets)?;
                let batch = targets;
                #full_carve
                self.decoder_embeddings.forward(x, batch #full_starts);
                #dec_bias_let
                #full_state
                for (i, layer) in self.decoder_layers.iter().enumerate() {
                    layer.forward(x, batch, #dec_bias_arg #memory_args s, #dec_index &self.threads);
                }
                #full_restore
                #dec_final_run
                let logits = logits.as_chunks_mut::<#v>().0;
                self.lm_head.forward(x, logits, &self.threads);
                ::core::result::Result::Ok(logits)
            }

            /// [`Self::logits_into`] with a workspace kept by the model; returns owned rows.
            pub fn logits(&self, memory: &#rt::EncoderMemory, targets: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#logits_row>> {
                self.workspaces.with(|ws| self.logits_into(memory, targets, ws).map(<[_]>::to_vec))
            }
        }
    }

    /// `new_cache` and `step_into`: one cached decoding step, the logits of each sequence's
    /// last token.
    fn cached_steps(&self) -> TokenStream {
        let (graph, rt, cross) = (self.graph, &self.rt, &self.cross);
        let (dd, v) = (self.s2s.decoder.d_model, self.spec.vocab_size);
        let inner = self.s2s.decoder.inner();
        let logits_row = self.logits_row();
        let step_carve = carve_width(
            dd,
            &self.dec_scratch,
            &graph.decoder.layer.scratch(),
            &[
                (format_ident!("last"), quote!(batch.batch_size() * #dd)),
                (format_ident!("logits"), quote!(batch.batch_size() * #v)),
            ],
        );
        let (_, step_starts) = self.decoder_starts();
        let (dec_bias_let, dec_bias_arg) =
            stack_bias(&graph.decoder.embeddings, quote!(decoder_embeddings)).unzip();
        let (cached_memory_args, step_take, step_restore) =
            (&cross.cached_args, &cross.step_take, &cross.step_restore);
        let dec_final_last =
            graph.decoder.final_norm.as_ref().map(|_| quote!(self.decoder_final_norm.forward(last);));
        quote! {
            /// A KV cache for the decoder's self-attention: `batch_size` sequences, room for
            /// `MAX_POSITIONS` tokens each.
            pub fn new_cache(&self, batch_size: usize) -> #rt::KvCache {
                #rt::KvCache::new(Self::DECODER_LAYERS, batch_size, Self::MAX_POSITIONS, #inner)
            }

            /// One cached decoding step: `batch`'s tokens continue each cached sequence (one per
            /// source of `memory`); returns the logits of each sequence's last real token.
            pub fn step_into<'w>(
                &self,
                memory: &#rt::EncoderMemory,
                batch: &#rt::Batch,
                cache: &mut #rt::KvCache,
                workspace: &'w mut #rt::Workspace,
            ) -> #rt::Result<&'w [#logits_row]> {
                batch.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, ::core::option::Option::None)?;
                memory.check_targets(batch)?;
                cache.check_step(batch)?;
                #step_carve
                self.decoder_embeddings.forward(x, batch #step_starts);
                #dec_bias_let
                #step_take
                for (i, layer) in self.decoder_layers.iter().enumerate() {
                    layer.forward_cached(x, batch, #dec_bias_arg #cached_memory_args s, cache, i, &self.threads);
                }
                #step_restore
                let last = last.as_chunks_mut::<#dd>().0;
                for (b, row) in last.iter_mut().enumerate() {
                    *row = x[b * batch.seq_len() + batch.extent_of(b) - 1];
                }
                #dec_final_last
                let logits = logits.as_chunks_mut::<#v>().0;
                self.lm_head.forward(last, logits, &self.threads);
                cache.advance_batch(batch);
                ::core::result::Result::Ok(logits)
            }
        }
    }

    /// `conditioned` (the decoder as a causal language model over one memory) and `generate`.
    fn generation(&self) -> TokenStream {
        let rt = &self.rt;
        let conditioned = format_ident!("{}Conditioned", self.spec.name);
        quote! {
            /// The decoder conditioned on `memory`: a [`CausalLm`](#rt::CausalLm) whose prompts
            /// are decoder prefixes (usually `[Self::DECODER_START]`), one per source.
            pub fn conditioned<'m>(&'m self, memory: &'m #rt::EncoderMemory) -> #conditioned<'m> {
                #conditioned { model: self, memory }
            }

            /// Encodes each source and decodes up to `options.max_new_tokens` tokens from
            /// `DECODER_START` (one batched encode, then one cached step per token); returns the
            /// new tokens per source.
            pub fn generate(&self, sources: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> {
                let memory = self.encode(&#rt::Batch::from_sequences(sources)?)?;
                let start = [Self::DECODER_START];
                let prompts: ::std::vec::Vec<&[u32]> = sources.iter().map(|_| &start[..]).collect();
                #rt::generate::generate(&self.conditioned(&memory), &prompts, options)
            }
        }
    }

    /// `{Name}Conditioned`: the model and one memory, a `CausalLm` (so generation is the
    /// runtime's one driver).
    fn conditioned(&self) -> TokenStream {
        let (rt, name, vis) = (&self.rt, &self.spec.name, &self.spec.vis);
        let conditioned = format_ident!("{}Conditioned", name);
        let conditioned_doc = format!(
            "`{name}` conditioned on an encoded batch of sources: a causal language model over the decoder, \
             so the runtime's generation driver serves it."
        );
        quote! {
            #[doc = #conditioned_doc]
            #[derive(Clone, Copy, Debug)]
            #vis struct #conditioned<'m> {
                model: &'m #name,
                memory: &'m #rt::EncoderMemory,
            }

            impl #rt::CausalLm for #conditioned<'_> {
                fn vocab_size(&self) -> usize {
                    #name::VOCAB_SIZE
                }

                fn max_positions(&self) -> usize {
                    #name::MAX_POSITIONS
                }

                fn new_cache(&self, batch: usize) -> #rt::KvCache {
                    self.model.new_cache(batch)
                }

                fn step<'w>(&self, batch: &#rt::Batch, cache: &mut #rt::KvCache, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [f32]> {
                    self.model.step_into(self.memory, batch, cache, workspace).map(<[_]>::as_flattened)
                }
            }
        }
    }

    /// Each stack's block types (over its own scratch type), the head, and the two scratch
    /// structs.
    fn blocks(&self) -> TokenStream {
        let (spec, graph) = (self.spec, self.graph);
        let (enc_scratch, dec_scratch) = (&self.enc_scratch, &self.dec_scratch);
        let blocks = [&graph.encoder, &graph.decoder].into_iter().flat_map(|stack| {
            let scratch = if stack.layer.cached { dec_scratch } else { enc_scratch };
            stack_blocks(stack).map(move |b| block(spec, b, scratch)).collect::<Vec<_>>()
        });
        let head = block(spec, &graph.head, dec_scratch);
        let enc_scratch_def = scratch_struct(spec, enc_scratch, &graph.encoder.layer.scratch());
        let dec_scratch_def = scratch_struct(spec, dec_scratch, &graph.decoder.layer.scratch());
        quote! {
            #(#blocks)*
            #head
            #enc_scratch_def
            #dec_scratch_def
        }
    }
}

/// How the model's methods feed the decoder layers' cross-attention.
struct CrossCalls {
    /// `encode`: one decoder layer's memory projection (a closure body over `layer`, `hidden`).
    project: TokenStream,
    /// The layer arguments after the position bias in `logits_into` (layer `i`).
    args: TokenStream,
    /// The same in `step_into`.
    cached_args: TokenStream,
    /// Location-sensitive alignments: zeroed states from the model's pool for a teacher-forced
    /// pass (given back after its layers); taken from the cache before a step's layers and given
    /// back after them.
    full_state: Option<TokenStream>,
    full_restore: Option<TokenStream>,
    step_take: Option<TokenStream>,
    step_restore: Option<TokenStream>,
}

impl CrossCalls {
    /// `inner`: multi-head K/V width per projection; `d`: the encoder's (memory's) width.
    fn of(layer: &Block, inner: usize, d: usize) -> Self {
        let rt = rt();
        let Some((kind, _)) = additive_cross(layer) else {
            return Self {
                project: quote!({
                    let mut kv = ::std::vec![[0.0f32; 2 * #inner]; hidden.len()];
                    layer.cross_key_value.forward(hidden, &mut kv, #rt::Activation::Identity, &self.threads);
                    kv.into_flattened()
                }),
                args: quote!(memory.key_values(i), memory.sources(),),
                cached_args: quote!(memory.key_values(i), memory.sources(),),
                full_state: None,
                full_restore: None,
                step_take: None,
                step_restore: None,
            };
        };
        // Luong's location has no keys: its per-layer memory entry is empty.
        let project = match kind {
            AdditiveKind::Bahdanau { attention } | AdditiveKind::LocationSensitive { attention, .. } => {
                quote!({
                    let mut keys = ::std::vec![[0.0f32; #attention]; hidden.len()];
                    layer.cross_attention.project_memory(hidden, &mut keys, &self.threads);
                    keys.into_flattened()
                })
            }
            AdditiveKind::Location { .. } => quote!(::std::vec::Vec::new()),
        };
        let rows = quote!(memory.hidden().as_chunks::<#d>().0, memory.key_values(i), memory.sources(),);
        if !matches!(kind, AdditiveKind::LocationSensitive { .. }) {
            return Self {
                project,
                args: rows.clone(),
                cached_args: rows,
                full_state: None,
                full_restore: None,
                step_take: None,
                step_restore: None,
            };
        }
        Self {
            project,
            args: quote!(#rows &mut alignments[i],),
            cached_args: quote!(#rows &mut alignments[i],),
            full_state: Some(quote! {
                // Each pass starts from zero alignments, in memory kept from earlier passes.
                let mut alignments = self.alignment_states.take(Self::DECODER_LAYERS, memory.sources());
            }),
            full_restore: Some(quote!(self.alignment_states.put(alignments);)),
            step_take: Some(quote! {
                let mut alignments = cache.take_alignments(Self::DECODER_LAYERS, memory.sources())?;
            }),
            step_restore: Some(quote!(cache.restore_alignments(alignments);)),
        }
    }
}

fn stack_blocks(stack: &Stack) -> impl Iterator<Item = &Block> {
    [Some(&stack.embeddings), Some(&stack.layer), stack.final_norm.as_ref()].into_iter().flatten()
}
