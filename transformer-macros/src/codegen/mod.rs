//! Rust from the validated spec and its op graph: a struct per block with named fields, a scratch
//! struct naming every workspace buffer, and a model type whose API carries the static widths in
//! its types. [`block`] writes each block's struct and forward functions (their statements, one
//! per op, in [`ops`]); [`encoder`] and [`decoder`] write the family-specific methods.

mod block;
mod config;
mod decoder;
mod encoder;
mod ops;
mod outputs;
mod reformer;
mod seq2seq;
mod train;
mod vision;

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};
use syn::LitStr;

use self::block::{additive_cross, block};
use crate::graph::{self, Block, FieldKind, Graph, Value};
use crate::model::{Lowered, Model};
use crate::spec::{Activation, Output, Spec};

/// Path of the runtime as generated code sees it (through the facade's hidden re-export).
fn rt() -> TokenStream {
    quote!(::transformer::__private)
}

/// Rust for a validated, lowered model: the family's API over blocks written from the graph.
pub fn generate(model: &Model) -> TokenStream {
    let code = generate_model(model);
    let Some(training) = &model.training else { return code };
    let trainer = match &model.graph {
        Lowered::Stack { graph, outputs: None } if model.spec.reversible.is_none() => {
            train::generate(&model.spec, graph, training)
        }
        _ => syn::Error::new(
            training.span,
            "training: encoder-decoders, Reformers and composed models with named outputs have no trainer yet",
        )
        .into_compile_error(),
    };
    quote!(#code #trainer)
}

fn generate_model(model: &Model) -> TokenStream {
    let spec = &model.spec;
    match &model.graph {
        Lowered::Seq2Seq(graph) => match &spec.seq2seq {
            Some(s2s) => seq2seq::generate(spec, s2s, graph),
            None => syn::Error::new(spec.name.span(), "internal: an encoder-decoder without its decoder")
                .into_compile_error(),
        },
        Lowered::Stack { graph, .. } if spec.reversible.is_some() => reformer::generate(spec, graph),
        // A composed encoder written `-> (states, embedding, …)`: the API returns those outputs.
        Lowered::Stack { graph, outputs } => generate_family(spec, graph, outputs.as_deref()),
    }
}

fn generate_family(spec: &Spec, graph: &Graph, outputs: Option<&[Output]>) -> TokenStream {
    if let Err(e) = graph::check_widths(graph.blocks(), spec.d_model_span) {
        return e.into_compile_error();
    }
    let name = &spec.name;
    let scratch_ty = format_ident!("{}Scratch", name);
    let blocks = graph.blocks().map(|b| block(spec, b, &scratch_ty));
    let scratch_values = scratch_union(graph.blocks());
    let scratch_def = scratch_struct(spec, &scratch_ty, &scratch_values);
    let model_struct = model_struct(spec, graph);
    let common = common_methods(spec, graph);
    let family = if let Some(outputs) = outputs {
        outputs::methods(spec, graph, &scratch_ty, &scratch_values, outputs)
    } else if spec.image.is_some() {
        vision::methods(spec, graph, &scratch_ty, &scratch_values)
    } else if spec.is_decoder() {
        decoder::methods(spec, graph, &scratch_ty, &scratch_values)
    } else {
        encoder::methods(spec, graph, &scratch_ty, &scratch_values)
    };
    quote! {
        #model_struct
        impl #name {
            #common
        }
        #family
        #(#blocks)*
        #scratch_def
        const _: () = {
            // Models are shared across threads: one loaded model serves many callers.
            fn assert_send_sync<T: ::core::marker::Send + ::core::marker::Sync>() {}
            fn check() {
                assert_send_sync::<#name>();
            }
        };
    }
}

/// When a stack's layers take a position bias (T5's relative buckets, ALiBi), the statement that
/// borrows it from the stack's embeddings block `self.#owner`, and the argument passing it.
fn stack_bias(embeddings: &Block, owner: TokenStream) -> Option<(TokenStream, TokenStream)> {
    let field = embeddings
        .fields
        .iter()
        .find(|f| matches!(f.kind, FieldKind::RelativeBias { .. } | FieldKind::Alibi { .. }))?;
    let name = format_ident!("{}", field.name);
    Some((quote!(let bias = self.#owner.#name.bias();), quote!(bias,)))
}

/// Every block's scratch values, each name once (a composed model's blocks may share buffers).
fn scratch_union<'g>(blocks: impl Iterator<Item = &'g Block>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in blocks.flat_map(Block::scratch) {
        if !out.iter().any(|o| o.name == v.name) {
            out.push(v);
        }
    }
    out
}

/// The head of the loop over the layers for a full forward pass, and the layer index argument
/// when the layers vary by index.
fn layer_loop(layer: &Block) -> (TokenStream, Option<TokenStream>) {
    if layer.per_layer() {
        (quote!((i, layer) in self.layers.iter().enumerate()), Some(quote!(i,)))
    } else {
        (quote!(layer in &self.layers), None)
    }
}

/// A block's generated type: the model's name, then the block's suffix (`MiniLmLayer`).
fn block_ident(spec: &Spec, block: &Block) -> Ident {
    format_ident!("{}{}", spec.name, block.suffix)
}

/// How a block's attention runs: over the whole batch, or as one step continuing a KV cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Cached,
}

/// The runtime activation a GEMM epilogue applies (`None`: identity).
fn activation(act: Option<Activation>) -> TokenStream {
    let rt = rt();
    match act {
        None => quote!(#rt::Activation::Identity),
        Some(Activation::GeluErf) => quote!(#rt::Activation::GeluErf),
        Some(Activation::GeluTanh) => quote!(#rt::Activation::GeluTanh),
        Some(Activation::Relu) => quote!(#rt::Activation::Relu),
        Some(Activation::SwiGlu | Activation::GeGluTanh | Activation::GeGluErf) => {
            unreachable!("gated activations lower to `Op::Glu`, never to an epilogue")
        }
    }
}

/// The workspace buffers a layer needs, each a named field.
fn scratch_struct(spec: &Spec, ident: &Ident, values: &[Value]) -> TokenStream {
    let vis = &spec.vis;
    let fields = values.iter().map(|v| {
        let (n, w) = (format_ident!("{}", v.name), v.width);
        let doc = format!("`[rows, {w}]`");
        quote!(#[doc = #doc] pub #n: &'a mut [[f32; #w]],)
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

/// `let [x, …extra, qkv, …] = workspace.carve(…)` and the scratch struct over the carved buffers.
/// `extra` are `(name, size expression)` buffers the family needs besides the stream.
fn carve(spec: &Spec, scratch_ty: &Ident, scratch: &[Value], extra: &[(Ident, TokenStream)]) -> TokenStream {
    carve_width(spec.d_model, scratch_ty, scratch, extra)
}

/// [`carve`] for a stream of width `d` (an encoder-decoder's decoder may differ from its encoder).
fn carve_width(
    d: usize,
    scratch_ty: &Ident,
    scratch: &[Value],
    extra: &[(Ident, TokenStream)],
) -> TokenStream {
    let names: Vec<Ident> = scratch.iter().map(|v| format_ident!("{}", v.name)).collect();
    let widths: Vec<usize> = scratch.iter().map(|v| v.width).collect();
    let (extra_names, extra_sizes): (Vec<&Ident>, Vec<&TokenStream>) =
        extra.iter().map(|(n, s)| (n, s)).unzip();
    quote! {
        let rows = batch.rows();
        // Parenthesised sizes: clippy reads `a * b` elements that share one span as a possibly
        // missing comma.
        let [x, #(#extra_names,)* #(#names),*] =
            workspace.carve([(rows * #d), #((#extra_sizes),)* #((rows * #widths)),*]);
        let x = x.as_chunks_mut::<#d>().0;
        let s = &mut #scratch_ty {
            #(#names: #names.as_chunks_mut::<#widths>().0,)*
        };
    }
}

/// The model struct: one field per block, the layers as one repeated type.
fn model_struct(spec: &Spec, graph: &Graph) -> TokenStream {
    let rt = rt();
    let (attrs, vis, name) = (&spec.attrs, &spec.vis, &spec.name);
    let emb_ty = block_ident(spec, &graph.embeddings);
    let layer_ty = block_ident(spec, &graph.layer);
    let layers_doc = match graph.layers {
        1 => format!("The layer, loaded from `{}`.", graph.layer.prefix),
        n => format!("The {n} layers: one type, loaded from `{}`.", graph.layer.prefix),
    };
    let final_norm = graph.final_norm.as_ref().map(|b| {
        let ty = block_ident(spec, b);
        quote!(#[doc = "The norm after the last layer."] pub final_norm: #ty,)
    });
    let head = graph.head.as_ref().map(|b| {
        let (ty, field, doc) = (block_ident(spec, b), format_ident!("{}", graph.head_field), &b.doc);
        quote!(#[doc = #doc] pub #field: #ty,)
    });
    quote! {
        #(#attrs)*
        #[derive(Debug)]
        #vis struct #name {
            /// Input embeddings.
            pub embeddings: #emb_ty,
            #[doc = #layers_doc]
            pub layers: ::std::vec::Vec<#layer_ty>,
            #final_norm
            #head
            threads: #rt::Threads,
            workspaces: #rt::workspace::WorkspacePool,
        }
    }
}

/// The dims as associated consts: the standard ones, and a composed model's own (upper-cased).
fn dim_consts(spec: &Spec) -> Vec<TokenStream> {
    let d = spec.d_model;
    let (vocab, max_pos, heads, head_dim, layers, d_ff) =
        (spec.vocab_size, spec.max_positions, spec.heads, spec.head_dim(), spec.layers, spec.d_ff);
    let standard = [
        ("VOCAB_SIZE", vocab, "Vocabulary size: token ids are `0..VOCAB_SIZE`."),
        ("MAX_POSITIONS", max_pos, "Longest sequence the position table covers."),
        ("D_MODEL", d, "Width of every hidden state."),
        ("HEADS", heads, "Attention heads per layer."),
        ("HEAD_DIM", head_dim, "Width of one head: `D_MODEL / HEADS`."),
        ("LAYERS", layers, "Number of layers."),
        ("D_FF", d_ff, "Inner width of the feed-forward blocks."),
    ];
    // A composed model's own dims are consts too (under their names, upper-cased); a standard
    // const it declares itself is not repeated (validation made the values agree).
    let declared: Vec<(String, usize, String)> = spec
        .dims
        .iter()
        .flatten()
        .map(|(name, value)| (name.to_string().to_uppercase(), *value, format!("The declared dim `{name}`.")))
        // An image model's API defines these itself (the composed pass made them agree).
        .filter(|(n, _, _)| {
            spec.image.is_none()
                || !["IMAGE_SIZE", "PATCH_SIZE", "CHANNELS", "PATCHES", "LABELS"].contains(&n.as_str())
        })
        .collect();
    standard
        .iter()
        .filter(|(n, v, _)| !declared.iter().any(|(d, _, _)| d == n) && (spec.dims.is_none() || *v > 0))
        .map(|&(n, v, doc)| (n.to_string(), v, doc.to_string()))
        .chain(declared.iter().cloned())
        .map(|(n, v, doc)| {
            let n = format_ident!("{}", n);
            quote!(#[doc = #doc] pub const #n: usize = #v;)
        })
        .collect()
}

/// `with_threads` / `threads`: every family's model keeps the threads its forward passes use.
fn threads_methods() -> TokenStream {
    let rt = rt();
    quote! {
        /// Uses `threads` for every later forward pass.
        pub fn with_threads(mut self, threads: #rt::Threads) -> Self {
            self.threads = threads;
            self
        }

        /// The threads forward passes use.
        pub fn threads(&self) -> &#rt::Threads {
            &self.threads
        }
    }
}

/// Dims as consts, loading, threads: the same for every family.
fn common_methods(spec: &Spec, graph: &Graph) -> TokenStream {
    let rt = rt();
    let declares = |name: &str| spec.dims.iter().flatten().any(|(n, _)| n == name);
    let type_const = spec.type_vocab_size.filter(|_| !declares("type_vocab_size")).map(|t| {
        quote! {
            /// Token-type (segment) vocabulary size.
            pub const TYPE_VOCAB_SIZE: usize = #t;
        }
    });
    let roots = graph.roots;
    let ignored = &graph.ignored;
    let block_load = |b: &Block| {
        let (ty, prefix) = (block_ident(spec, b), b.prefix);
        if b.rooted {
            quote!(#ty::load(loader, &#rt::weights::join(root, #prefix)))
        } else {
            quote!(#ty::load(loader, #prefix))
        }
    };
    let embeddings = block_load(&graph.embeddings);
    let layer_ty = block_ident(spec, &graph.layer);
    let layer_prefix = LitStr::new(graph.layer.prefix, Span::call_site());
    let final_norm = graph.final_norm.as_ref().map(|b| {
        let load = block_load(b);
        quote!(final_norm: #load,)
    });
    let head = graph.head.as_ref().map(|b| {
        let (load, field) = (block_load(b), format_ident!("{}", graph.head_field));
        quote!(#field: #load,)
    });
    let n_layers = graph.layers;
    let (consts, threads) = (dim_consts(spec), threads_methods());
    let (renames, from_pretrained) =
        (config::renames(spec), config::from_pretrained(spec, &config::Extra::default()));
    quote! {
        #(#consts)*
        #type_const
        /// Checkpoint tensors this model knows and deliberately does not use (`{i}`: each layer).
        pub const IGNORED_TENSORS: &'static [&'static str] = &[#(#ignored),*];

        /// Loads the model from a safetensors file, checking every tensor's name and shape;
        /// every problem is listed in one error.
        pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
            let mut loader = #rt::WeightLoader::open(path)?;
            let model = Self::load(&mut loader);
            loader.finish()?;
            ::core::result::Result::Ok(model)
        }

        #from_pretrained

        /// Takes every tensor from `loader` (which records, rather than stops at, each problem:
        /// call `loader.finish()` afterwards).
        pub fn load(loader: &mut #rt::WeightLoader) -> Self {
            #renames
            let root = #rt::weights::detect_root(loader, &[#(#roots),*]);
            for name in Self::IGNORED_TENSORS {
                if name.contains("{i}") {
                    for i in 0..#n_layers {
                        loader.ignore(&#rt::weights::join(root, &name.replace("{i}", &i.to_string())));
                    }
                } else {
                    loader.ignore(&#rt::weights::join(root, name));
                }
            }
            Self {
                embeddings: #embeddings,
                layers: (0..#n_layers)
                    .map(|i| #layer_ty::load(loader, &#rt::weights::join(root, &format!(#layer_prefix))))
                    .collect(),
                #final_norm
                #head
                threads: #rt::Threads::sequential(),
                workspaces: ::core::default::Default::default(),
            }
        }

        #threads
    }
}
