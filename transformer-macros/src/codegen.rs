//! Rust from the validated spec and its op graph: a struct per block with named fields, a scratch
//! struct naming every workspace buffer, and a model type whose API carries `d_model` in its types.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::LitStr;

use crate::graph::{self, Block, Field, FieldKind, Graph, Index, Op, Value};
use crate::spec::{Activation, Spec};

/// Path of the runtime as generated code sees it (through the facade's hidden re-export).
fn rt() -> TokenStream {
    quote!(::transformer::__private)
}

pub fn generate(spec: &Spec, graph: &Graph) -> TokenStream {
    if let Err(e) = graph::check_widths(graph, spec.d_model_span) {
        return e.into_compile_error();
    }
    let name = &spec.name;
    let scratch_ty = format_ident!("{}Scratch", name);
    let blocks = [Some(&graph.embeddings), Some(&graph.layer), graph.final_norm.as_ref()];
    let block_defs = blocks.into_iter().flatten().map(|b| block(spec, b, &scratch_ty));
    let scratch_values = graph.layer.scratch();
    let scratch_def = scratch_struct(spec, &scratch_ty, &scratch_values);
    let model = model(spec, graph, &scratch_ty, &scratch_values);
    quote! {
        #model
        #(#block_defs)*
        #scratch_def
        const _: () = {
            // Models are shared across threads: one loaded model serves many callers.
            fn assert_send_sync<T: ::core::marker::Send + ::core::marker::Sync>() {}
            fn check() { assert_send_sync::<#name>(); }
        };
    }
}

fn block_ident(spec: &Spec, block: &Block) -> Ident {
    format_ident!("{}{}", spec.name, block.suffix)
}

fn row(width: usize) -> TokenStream {
    quote!([f32; #width])
}

/// The struct of one block, its `load` and its `forward`.
fn block(spec: &Spec, block: &Block, scratch_ty: &Ident) -> TokenStream {
    let rt = rt();
    let vis = &spec.vis;
    let ident = block_ident(spec, block);
    let doc = &block.doc;
    let field_defs = block.fields.iter().map(|f| {
        let (name, doc, ty) = (format_ident!("{}", f.name), f.doc, field_type(f));
        quote!(#[doc = #doc] pub #name: #ty,)
    });
    let field_loads = block.fields.iter().map(|f| {
        let name = format_ident!("{}", f.name);
        let load = field_load(f);
        quote!(#name: #load,)
    });
    let d = spec.d_model;
    let uses_batch = block.ops.iter().any(|op| matches!(op, Op::Gather { .. } | Op::Attention { .. }));
    let uses_threads = block.ops.iter().any(|op| matches!(op, Op::Linear { .. } | Op::Attention { .. }));
    let uses_scratch = !block.scratch().is_empty();
    let mut params = vec![quote!(x: &mut [[f32; #d]])];
    if uses_batch {
        params.push(quote!(batch: &#rt::Batch));
    }
    if uses_scratch {
        params.push(quote!(s: &mut #scratch_ty<'_>));
    }
    if uses_threads {
        params.push(quote!(threads: &#rt::Threads));
    }
    let body = forward_body(block);
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #ident {
            #(#field_defs)*
        }

        impl #ident {
            /// Loads this block's tensors under `prefix`.
            pub fn load(loader: &mut #rt::WeightLoader, prefix: &str) -> Self {
                Self { #(#field_loads)* }
            }

            /// Runs the block on the residual stream `x` in place.
            pub fn forward(&self, #(#params),*) {
                #body
            }
        }
    }
}

fn field_type(f: &Field) -> TokenStream {
    let rt = rt();
    match f.kind {
        FieldKind::Linear { input, output, .. } => quote!(#rt::layers::Linear<#input, #output>),
        FieldKind::LayerNorm { width, .. } => quote!(#rt::layers::LayerNorm<#width>),
        FieldKind::Embedding { width, .. } => quote!(#rt::layers::Embedding<#width>),
        FieldKind::Sinusoidal { width, .. } => quote!(#rt::layers::SinusoidalPositions<#width>),
    }
}

/// `format!("{prefix}.<relative>")`, or the prefix itself for an empty relative name.
fn tensor_name(relative: &str) -> TokenStream {
    if relative.is_empty() {
        quote!(prefix.to_string())
    } else {
        let fmt = LitStr::new(&format!("{{prefix}}.{relative}"), Span::call_site());
        quote!(format!(#fmt))
    }
}

fn field_load(f: &Field) -> TokenStream {
    let rt = rt();
    match f.kind {
        FieldKind::Linear { bias, .. } if f.weights.len() == 1 => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Linear::load(loader, &#name, #bias))
        }
        FieldKind::Linear { bias, .. } => {
            let names = f.weights.iter().map(|w| tensor_name(w));
            quote!(#rt::layers::Linear::load_fused(loader, &[#(#names.as_str()),*], #bias))
        }
        FieldKind::LayerNorm { eps, .. } => {
            let name = tensor_name(f.weights[0]);
            let eps = eps as f32;
            quote!(#rt::layers::LayerNorm::load(loader, &#name, #eps))
        }
        FieldKind::Embedding { rows, .. } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Embedding::load(loader, &#name, #rows))
        }
        FieldKind::Sinusoidal { rows, .. } => quote!(#rt::layers::SinusoidalPositions::new(#rows)),
    }
}

/// A value read by an op.
fn read(v: Value) -> TokenStream {
    if v.is_stream() {
        quote!(x)
    } else {
        let n = format_ident!("{}", v.name);
        quote!(&*s.#n)
    }
}

/// A value written by an op.
fn write(v: Value) -> TokenStream {
    if v.is_stream() {
        quote!(x)
    } else {
        let n = format_ident!("{}", v.name);
        quote!(s.#n)
    }
}

fn activation(act: Option<Activation>) -> TokenStream {
    let rt = rt();
    match act {
        None => quote!(#rt::Activation::Identity),
        Some(Activation::GeluErf) => quote!(#rt::Activation::GeluErf),
        Some(Activation::GeluTanh) => quote!(#rt::Activation::GeluTanh),
        Some(Activation::Relu) => quote!(#rt::Activation::Relu),
    }
}

fn forward_body(block: &Block) -> TokenStream {
    let rt = rt();
    let mut out = TokenStream::new();
    let mut gathers = Vec::new();
    let flush = |gathers: &mut Vec<TokenStream>, out: &mut TokenStream| {
        if !gathers.is_empty() {
            out.extend(quote! {
                let seq = batch.seq_len();
                for (row, x) in x.iter_mut().enumerate() {
                    #(#gathers)*
                }
            });
            gathers.clear();
        }
    };
    for op in &block.ops {
        if let Op::Gather { field, index, accumulate, .. } = op {
            let f = format_ident!("{}", field);
            let idx = match index {
                Index::Token => quote!(batch.ids()[row] as usize),
                Index::Position => quote!(row % seq),
                Index::TokenType => quote!(batch.type_id(row) as usize),
            };
            gathers.push(if *accumulate {
                quote!(self.#f.add_row(#idx, x);)
            } else {
                quote!(self.#f.copy_row(#idx, x);)
            });
            continue;
        }
        flush(&mut gathers, &mut out);
        out.extend(match *op {
            Op::Linear { field, input, output, act } => {
                let (f, i, o, a) = (format_ident!("{}", field), read(input), write(output), activation(act));
                quote!(self.#f.forward(#i, #o, #a, threads);)
            }
            Op::Attention { qkv, output, heads, head_dim } => {
                let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
                let (q, o) = (format_ident!("{}", qkv.name), format_ident!("{}", output.name));
                quote!(#rt::layers::self_attention::<#head_dim>(s.#q.as_flattened(), batch, #heads, #scale, s.#o.as_flattened_mut(), threads);)
            }
            Op::Add { stream, sublayer } => {
                let (x, sub) = (write(stream), read(sublayer));
                quote!(#rt::layers::residual_add(#x, #sub);)
            }
            Op::AddNorm { field, stream, sublayer } => {
                let (f, x, sub) = (format_ident!("{}", field), write(stream), read(sublayer));
                quote!(self.#f.forward_residual(#x, #sub);)
            }
            Op::Norm { field, input, output } if input == output => {
                let (f, x) = (format_ident!("{}", field), write(output));
                quote!(self.#f.forward(#x);)
            }
            Op::Norm { field, input, output } => {
                let (f, i, o) = (format_ident!("{}", field), read(input), write(output));
                quote!(self.#f.forward_into(#i, #o);)
            }
            Op::Activation { value, act } => {
                let (v, a) = (write(value), activation(Some(act)));
                quote!(#a.apply_slice(#v.as_flattened_mut());)
            }
            Op::Gather { .. } => unreachable!("gathers are handled above"),
        });
    }
    flush(&mut gathers, &mut out);
    out
}

/// The workspace buffers a layer needs, each a named field.
fn scratch_struct(spec: &Spec, ident: &Ident, values: &[Value]) -> TokenStream {
    let vis = &spec.vis;
    let fields = values.iter().map(|v| {
        let (n, r) = (format_ident!("{}", v.name), row(v.width));
        let doc = format!("`[rows, {}]`", v.width);
        quote!(#[doc = #doc] pub #n: &'a mut [#r],)
    });
    let doc = format!("Per-layer scratch buffers of `{}`, carved from a workspace.", spec.name);
    quote! {
        #[doc = #doc]
        #[derive(Debug)]
        #vis struct #ident<'a> {
            #(#fields)*
        }
    }
}

fn model(spec: &Spec, graph: &Graph, scratch_ty: &Ident, scratch: &[Value]) -> TokenStream {
    let rt = rt();
    let (attrs, vis, name) = (&spec.attrs, &spec.vis, &spec.name);
    let d = spec.d_model;
    let dm = quote_spanned!(spec.d_model_span=> [f32; #d]);
    let (vocab, max_pos, heads, head_dim, layers, d_ff) =
        (spec.vocab_size, spec.max_positions, spec.heads, spec.head_dim(), spec.layers, spec.d_ff);
    let emb_ty = block_ident(spec, &graph.embeddings);
    let layer_ty = block_ident(spec, &graph.layer);
    let emb_prefix = graph.embeddings.prefix;
    let layer_prefix = LitStr::new(graph.layer.prefix, Span::call_site());
    let ignored = &graph.ignored;
    let n_layers = graph.layers;
    let type_vocab = match spec.type_vocab_size {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let type_const = spec.type_vocab_size.map(|t| {
        quote! {
            /// Token-type (segment) vocabulary size.
            pub const TYPE_VOCAB_SIZE: usize = #t;
        }
    });
    let (final_field, final_load, final_run) = match &graph.final_norm {
        Some(b) => {
            let ty = block_ident(spec, b);
            let prefix = b.prefix;
            (
                quote!(/// The norm after the last layer.
                       pub final_norm: #ty,),
                quote!(final_norm: #ty::load(loader, #prefix),),
                quote!(self.final_norm.forward(x);),
            )
        }
        None => (quote!(), quote!(), quote!()),
    };
    let scratch_names: Vec<Ident> = scratch.iter().map(|v| format_ident!("{}", v.name)).collect();
    let scratch_widths: Vec<usize> = scratch.iter().map(|v| v.width).collect();
    let layers_doc = format!("The {n_layers} layers: one type, loaded from `{}`.", graph.layer.prefix);
    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            /// Input embeddings.
            pub embeddings: #emb_ty,
            #[doc = #layers_doc]
            pub layers: ::std::vec::Vec<#layer_ty>,
            #final_field
            threads: #rt::Threads,
            workspaces: #rt::workspace::WorkspacePool,
        }

        impl #name {
            /// Vocabulary size: token ids are `0..VOCAB_SIZE`.
            pub const VOCAB_SIZE: usize = #vocab;
            /// Longest sequence the position table covers.
            pub const MAX_POSITIONS: usize = #max_pos;
            #type_const
            /// Width of every hidden state.
            pub const D_MODEL: usize = #d;
            /// Attention heads per layer.
            pub const HEADS: usize = #heads;
            /// Width of one head: `D_MODEL / HEADS`.
            pub const HEAD_DIM: usize = #head_dim;
            /// Number of layers.
            pub const LAYERS: usize = #layers;
            /// Inner width of the feed-forward blocks.
            pub const D_FF: usize = #d_ff;
            /// Checkpoint tensors this model knows and deliberately does not use.
            pub const IGNORED_TENSORS: &'static [&'static str] = &[#(#ignored),*];

            /// Loads the model from a safetensors file, checking every tensor's name and shape;
            /// every problem is listed in one error.
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
                let mut loader = #rt::WeightLoader::open(path)?;
                let model = Self::load(&mut loader);
                loader.finish()?;
                ::core::result::Result::Ok(model)
            }

            /// Takes every tensor from `loader` (which records, rather than stops at, each problem:
            /// call `loader.finish()` afterwards).
            pub fn load(loader: &mut #rt::WeightLoader) -> Self {
                for name in Self::IGNORED_TENSORS {
                    loader.ignore(name);
                }
                Self {
                    embeddings: #emb_ty::load(loader, #emb_prefix),
                    layers: (0..#n_layers).map(|i| #layer_ty::load(loader, &format!(#layer_prefix))).collect(),
                    #final_load
                    threads: #rt::Threads::sequential(),
                    workspaces: ::core::default::Default::default(),
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

            /// Last hidden states, one row per token (`batch.rows()` rows, sequence-major), written
            /// into `workspace`: after the first call at a batch shape, no allocation.
            pub fn forward_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#dm]> {
                self.run(batch, workspace).map(|(hidden, _)| hidden)
            }

            /// Sentence embeddings, one row per sequence: mean of the unpadded hidden states,
            /// L2-normalised (sentence-transformers' mean pooling + Normalize).
            pub fn embed_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#dm]> {
                self.run(batch, workspace).map(|(_, pooled)| pooled)
            }

            /// [`Self::forward_into`] with a workspace kept by the model; returns owned rows.
            pub fn forward(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#dm>> {
                self.workspaces.with(|ws| self.forward_into(batch, ws).map(<[_]>::to_vec))
            }

            /// [`Self::embed_into`] with a workspace kept by the model; returns owned rows.
            pub fn embed(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<#dm>> {
                self.workspaces.with(|ws| self.embed_into(batch, ws).map(<[_]>::to_vec))
            }

            /// Hidden states as a `[batch, seq, d_model]` array.
            pub fn forward_array(&self, batch: &#rt::Batch) -> #rt::Result<#rt::ndarray::Array3<f32>> {
                let rows = self.forward(batch)?;
                let flat: ::std::vec::Vec<f32> = rows.into_iter().flatten().collect();
                ::core::result::Result::Ok(
                    #rt::ndarray::Array3::from_shape_vec((batch.batch_size(), batch.seq_len(), #d), flat)
                        .expect("rows = batch * seq, each d_model wide"),
                )
            }

            /// Sentence embeddings as a `[batch, d_model]` array.
            pub fn embed_array(&self, batch: &#rt::Batch) -> #rt::Result<#rt::ndarray::Array2<f32>> {
                let rows = self.embed(batch)?;
                let flat: ::std::vec::Vec<f32> = rows.into_iter().flatten().collect();
                ::core::result::Result::Ok(
                    #rt::ndarray::Array2::from_shape_vec((batch.batch_size(), #d), flat)
                        .expect("one row per sequence, each d_model wide"),
                )
            }

            fn run<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<(&'w [#dm], &'w [#dm])> {
                batch.validate(Self::VOCAB_SIZE, Self::MAX_POSITIONS, #type_vocab)?;
                let rows = batch.rows();
                // Parenthesised sizes: clippy reads `a * b` elements that share one span as a
                // possibly missing comma.
                let [x, pooled, #(#scratch_names),*] =
                    workspace.carve([(rows * #d), (batch.batch_size() * #d), #((rows * #scratch_widths)),*]);
                let x = x.as_chunks_mut::<#d>().0;
                let s = &mut #scratch_ty {
                    #(#scratch_names: #scratch_names.as_chunks_mut::<#scratch_widths>().0,)*
                };
                self.embeddings.forward(x, batch);
                for layer in &self.layers {
                    layer.forward(x, batch, s, &self.threads);
                }
                #final_run
                let pooled = pooled.as_chunks_mut::<#d>().0;
                #rt::layers::mean_pool_normalize(x, batch, pooled);
                ::core::result::Result::Ok((x, pooled))
            }
        }
    }
}
