//! Rust from the validated spec and its op graph: a struct per block with named fields, a scratch
//! struct naming every workspace buffer, and a model type whose API carries the static widths in
//! its types. [`encoder`] and [`decoder`] write the family-specific methods.

mod config;
mod decoder;
mod encoder;
mod outputs;
mod reformer;
mod seq2seq;
mod vision;

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};
use syn::LitStr;

use crate::graph::{
    self, AdditiveKind, Block, Chunking, Field, FieldKind, Graph, Index, Layout, Layouts, Op, Value, Window,
};
use crate::model::{Lowered, Model};
use crate::spec::{Activation, Output, Sparse, SparsePattern, Spec};

/// Path of the runtime as generated code sees it (through the facade's hidden re-export).
fn rt() -> TokenStream {
    quote!(::transformer::__private)
}

/// Rust for a validated, lowered model: the family's API over blocks written from the graph.
pub fn generate(model: &Model) -> TokenStream {
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

fn block_ident(spec: &Spec, block: &Block) -> Ident {
    format_ident!("{}{}", spec.name, block.suffix)
}

/// How a block's attention runs: over the whole batch, or as one step continuing a KV cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Cached,
}

/// The struct of one block, its `load` and its forward function(s).
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
    // LSH rotations come from a second file.
    let rotations = block
        .fields
        .iter()
        .any(|f| matches!(f.kind, FieldKind::Rotations { .. }))
        .then(|| quote!(rotations: &mut #rt::WeightLoader,));
    let has_attention = block.ops.iter().any(|op| matches!(op, Op::Attention { .. }));
    let causal = block.ops.iter().any(|op| matches!(op, Op::Attention { causal: true, .. }));
    let full = forward_fn(spec, block, scratch_ty, Mode::Full);
    let cached = (has_attention && causal).then(|| forward_fn(spec, block, scratch_ty, Mode::Cached));
    quote! {
        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #ident {
            #(#field_defs)*
        }

        impl #ident {
            /// Loads this block's tensors under `prefix`.
            pub fn load(loader: &mut #rt::WeightLoader, #rotations prefix: &str) -> Self {
                Self { #(#field_loads)* }
            }

            #full
            #cached
        }
    }
}

/// `forward` (or `forward_cached`) of a block, with only the parameters its ops use.
fn forward_fn(spec: &Spec, block: &Block, scratch_ty: &Ident, mode: Mode) -> TokenStream {
    let rt = rt();
    // The stream's width is the block's own (an encoder-decoder's stacks may differ).
    let d = block.ops.iter().flat_map(Op::values).find(Value::is_stream).map_or(spec.d_model, |v| v.width);
    let writes_stream = block.ops.iter().any(Op::writes_stream);
    let reads_stream = block.ops.iter().flat_map(Op::values).any(|v| v.is_stream())
        || block.ops.iter().any(|op| matches!(op, Op::Gather { .. } | Op::Patches { .. }));
    let chunked =
        block.ops.iter().any(|op| matches!(op, Op::LshAttention { .. } | Op::LocalAttention { .. }));
    let gathers_positions =
        block.ops.iter().any(|op| matches!(op, Op::Gather { index: Index::Position, .. }));
    let uses_batch = block.ops.iter().any(|op| {
        matches!(
            op,
            Op::Gather { .. }
                | Op::Attention { .. }
                | Op::LshAttention { .. }
                | Op::LocalAttention { .. }
                | Op::Rope { .. }
                | Op::CrossAttention { .. }
                | Op::AdditiveCross { .. }
        )
    });
    let uses_threads = block.ops.iter().any(|op| {
        matches!(
            op,
            Op::Linear { .. }
                | Op::Attention { .. }
                | Op::LshAttention { .. }
                | Op::LocalAttention { .. }
                | Op::Patches { .. }
                | Op::CrossAttention { .. }
                | Op::AdditiveCross { .. }
        )
    });
    let biased = block.ops.iter().any(|op| matches!(op, Op::Attention { bias: true, .. }));
    let crosses = block.ops.iter().any(|op| matches!(op, Op::CrossAttention { .. }));
    // A block that only reads scratch (the Reformer's head reads both streams' normalised
    // concatenation) takes no stream.
    let mut params = match (writes_stream, reads_stream) {
        (true, _) => vec![quote!(x: &mut [[f32; #d]])],
        (false, true) => vec![quote!(x: &[[f32; #d]])],
        (false, false) => vec![],
    };
    if let Some(Op::Patches { image, .. }) = block.ops.iter().find(|op| matches!(op, Op::Patches { .. })) {
        let (side, c, pw) = (image.image_size, image.channels, image.patch_width());
        params.push(quote!(images: &[&[[[f32; #side]; #side]; #c]]));
        params.push(quote!(unfolded: &mut [[f32; #pw]]));
        params.push(quote!(projected: &mut [[f32; #d]]));
    }
    if let Some(out) = block.output {
        let w = out.width;
        params.push(quote!(out: &mut [[f32; #w]]));
    }
    if uses_batch {
        params.push(quote!(batch: &#rt::Batch));
    }
    if gathers_positions && block.cached {
        params.push(quote!(starts: ::core::option::Option<&[usize]>));
    }
    if biased {
        params.push(quote!(bias: #rt::kernels::attention::PositionBias<'_>));
    }
    if crosses {
        params.push(quote!(memory_kv: &[f32], memory: &#rt::Batch));
    }
    if let Some((kind, m)) = additive_cross(block) {
        params.push(quote!(memory_rows: &[[f32; #m]], memory_keys: &[f32], memory: &#rt::Batch));
        if matches!(kind, AdditiveKind::LocationSensitive { .. }) {
            params.push(quote!(alignment: &mut #rt::layers::additive::AlignmentState));
        }
    }
    if !block.scratch().is_empty() {
        params.push(quote!(s: &mut #scratch_ty<'_>));
    }
    if chunked {
        params.push(quote!(chunked: &mut #rt::layers::lsh::LshWorkspace));
    }
    match mode {
        Mode::Cached => params.push(quote!(cache: &mut #rt::KvCache, layer: usize)),
        Mode::Full if block.per_layer() => params.push(quote!(layer: usize)),
        Mode::Full => {}
    }
    if uses_threads {
        params.push(quote!(threads: &#rt::Threads));
    }
    let body = forward_body(block, mode);
    let (name, doc) = match mode {
        Mode::Full => (format_ident!("forward"), "Runs the block over the whole batch."),
        Mode::Cached => (
            format_ident!("forward_cached"),
            "Runs the block on new tokens continuing each cached sequence; appends their keys and values for `layer`.",
        ),
    };
    quote! {
        #[doc = #doc]
        pub fn #name(&self, #(#params),*) {
            #body
        }
    }
}

/// A block's additive or location cross-attention: its kind and the memory's width.
pub(crate) fn additive_cross(block: &Block) -> Option<(AdditiveKind, usize)> {
    block.fields.iter().find_map(|f| match f.kind {
        FieldKind::Additive { kind, memory, .. } => Some((kind, memory)),
        _ => None,
    })
}

fn field_type(f: &Field) -> TokenStream {
    let rt = rt();
    match f.kind {
        FieldKind::Additive { kind, query, memory } => match kind {
            AdditiveKind::Bahdanau { attention } => {
                quote!(#rt::layers::additive::Bahdanau<#query, #memory, #attention>)
            }
            AdditiveKind::Location { max_source } => {
                quote!(#rt::layers::additive::LuongLocation<#query, #memory, #max_source>)
            }
            AdditiveKind::LocationSensitive { attention, filters, .. } => {
                quote!(#rt::layers::additive::LocationSensitive<#query, #memory, #attention, #filters>)
            }
        },
        FieldKind::Linear { input, output, .. } => quote!(#rt::layers::Linear<#input, #output>),
        FieldKind::LayerNorm { width, .. } => quote!(#rt::layers::LayerNorm<#width>),
        FieldKind::RmsNorm { width, .. } => quote!(#rt::layers::norm::RmsNorm<#width>),
        FieldKind::Rope { .. } => quote!(#rt::layers::rope::Rope),
        FieldKind::Embedding { width, .. } => quote!(#rt::layers::Embedding<#width>),
        FieldKind::Sinusoidal { width, .. } => quote!(#rt::layers::SinusoidalPositions<#width>),
        FieldKind::RelativeBias { .. } => quote!(#rt::layers::position_bias::RelativeBias),
        FieldKind::Alibi { .. } => quote!(#rt::layers::position_bias::Alibi),
        FieldKind::Axial { width, .. } => quote!(#rt::layers::lsh::AxialPositions<#width>),
        FieldKind::Rotations { .. } => quote!(::std::vec::Vec<f32>),
    }
}

/// The checkpoint name `prefix.relative` (or either alone when the other is empty).
fn tensor_name(relative: &str) -> TokenStream {
    let rt = rt();
    quote!(#rt::weights::join(prefix, #relative))
}

fn field_load(f: &Field) -> TokenStream {
    let rt = rt();
    match f.kind {
        FieldKind::Additive { kind, .. } => {
            let name = tensor_name(f.weights[0]);
            match kind {
                AdditiveKind::Bahdanau { .. } => {
                    quote!(#rt::layers::additive::Bahdanau::load(loader, &#name))
                }
                AdditiveKind::Location { .. } => {
                    quote!(#rt::layers::additive::LuongLocation::load(loader, &#name))
                }
                AdditiveKind::LocationSensitive { kernel, .. } => {
                    quote!(#rt::layers::additive::LocationSensitive::load(
                        loader, &#name, #rt::layers::additive::AlignmentChannels::PreviousAndCumulative, #kernel
                    ))
                }
            }
        }
        FieldKind::Linear { bias, layout: Layout::Torch, .. } if f.weights.len() == 1 => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Linear::load(loader, &#name, #bias))
        }
        FieldKind::Linear { bias, layout: Layout::Torch, .. } if !f.split.is_empty() => {
            let names = f.weights.iter().map(|w| tensor_name(w));
            let sizes = &f.split;
            quote!(#rt::layers::Linear::load_concat(loader, &[#((#names.as_str(), #sizes)),*], #bias))
        }
        FieldKind::Linear { bias, layout: Layout::Torch, .. } => {
            let names = f.weights.iter().map(|w| tensor_name(w));
            quote!(#rt::layers::Linear::load_fused(loader, &[#(#names.as_str()),*], #bias))
        }
        FieldKind::Linear { bias, layout: Layout::Conv2d { channels, patch }, .. } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Linear::load_conv2d(loader, &#name, #channels, #patch, #bias))
        }
        FieldKind::Linear { bias, layout: Layout::Conv1d, .. } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Linear::load_conv1d(loader, &#name, #bias))
        }
        FieldKind::LayerNorm { eps, .. } => {
            let name = tensor_name(f.weights[0]);
            let eps = eps as f32;
            quote!(#rt::layers::LayerNorm::load(loader, &#name, #eps))
        }
        FieldKind::RmsNorm { eps, .. } => {
            let name = tensor_name(f.weights[0]);
            let eps = eps as f32;
            quote!(#rt::layers::norm::RmsNorm::load(loader, &#name, #eps))
        }
        FieldKind::Rope { max_positions, head_dim, rotary_dims, theta } => {
            quote!(#rt::layers::rope::Rope::new(#max_positions, #head_dim, #rotary_dims, #theta))
        }
        FieldKind::Embedding { rows, width, batched: true } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Embedding::load_shaped(loader, &#name, #rows, &[1, #rows, #width]))
        }
        FieldKind::Embedding { rows, .. } => {
            let name = tensor_name(&format!("{}.weight", f.weights[0]));
            quote!(#rt::layers::Embedding::load(loader, &#name, #rows))
        }
        FieldKind::Sinusoidal { rows, .. } => quote!(#rt::layers::SinusoidalPositions::new(#rows)),
        FieldKind::RelativeBias { heads, buckets, max_distance, bidirectional, max_positions } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::position_bias::RelativeBias::load(
                loader, &#name, #heads, #buckets, #max_distance, #bidirectional, #max_positions
            ))
        }
        FieldKind::Alibi { heads, max_positions, bidirectional: false } => {
            quote!(#rt::layers::position_bias::Alibi::new(#heads, #max_positions))
        }
        FieldKind::Alibi { heads, max_positions, bidirectional: true } => {
            quote!(#rt::layers::position_bias::Alibi::symmetric(#heads, #max_positions))
        }
        FieldKind::Linear { bias, layout: Layout::HeadInterleaved { heads }, .. } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Linear::load_head_interleaved(loader, &#name, #heads, #bias))
        }
        FieldKind::Linear { bias, layout: Layout::InProj { total, first }, .. } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::Linear::load_in_proj(loader, &#name, #total, #first, #bias))
        }
        FieldKind::Linear { layout: Layout::BiasAt { bias }, .. } => {
            let (name, bias) = (tensor_name(f.weights[0]), tensor_name(bias));
            quote!(#rt::layers::Linear::load_bias_at(loader, &#name, &#bias))
        }
        FieldKind::Linear { layout: Layout::BiasBeside { bias }, .. } => {
            let (name, bias) = (tensor_name(f.weights[0]), tensor_name(bias));
            quote!(#rt::layers::Linear::load_with_bias(loader, &#name, &#bias))
        }
        FieldKind::Axial { shape: [s0, s1], dims: [d0, d1], .. } => {
            let name = tensor_name(f.weights[0]);
            quote!(#rt::layers::lsh::AxialPositions::load(loader, &#name, [#s0, #s1], [#d0, #d1]))
        }
        FieldKind::Rotations { heads, head_dim, hashes, buckets } => {
            let (name, half) = (tensor_name(f.weights[0]), buckets / 2);
            quote!(rotations.take(&#name, &[#heads, #head_dim, #hashes, #half]))
        }
    }
}

/// A value read by an op of `block`.
fn read(block: &Block, v: Value) -> TokenStream {
    if v.is_stream() {
        quote!(x)
    } else if Some(v) == block.output {
        quote!(&*out)
    } else {
        let n = format_ident!("{}", v.name);
        quote!(&*s.#n)
    }
}

/// A value written by an op of `block`.
fn write(block: &Block, v: Value) -> TokenStream {
    if v.is_stream() {
        quote!(x)
    } else if Some(v) == block.output {
        quote!(out)
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
        Some(Activation::SwiGlu | Activation::GeGluTanh | Activation::GeGluErf) => {
            unreachable!("gated activations lower to `Op::Glu`, never to an epilogue")
        }
    }
}

/// A block-sparse layout as a constant the compiler builds (the macro validated its sizes, so the
/// `None` arm is never taken).
fn sparse_layout(sparse: Sparse) -> TokenStream {
    let rt = rt();
    let (block, stride) = (sparse.block, sparse.stride);
    let layout = match sparse.pattern {
        SparsePattern::Strided => quote!(#rt::layers::BlockSparse::strided(#block, #stride)),
        SparsePattern::Fixed { summary } => {
            quote!(#rt::layers::BlockSparse::fixed(#block, #stride, #summary))
        }
    };
    quote!({
        const LAYOUT: #rt::layers::BlockSparse = match #layout {
            ::core::option::Option::Some(layout) => layout,
            ::core::option::Option::None => panic!("block-sparse layout checked by model!"),
        };
        LAYOUT
    })
}

fn forward_body(block: &Block, mode: Mode) -> TokenStream {
    let rt = rt();
    let mut out = TokenStream::new();
    let mut gathers = Vec::new();
    let flush = |gathers: &mut Vec<TokenStream>, out: &mut TokenStream| {
        if !gathers.is_empty() {
            out.extend(quote! {
                for (row, x) in x.iter_mut().enumerate() {
                    #(#gathers)*
                }
            });
            gathers.clear();
        }
    };
    for op in &block.ops {
        if let Op::Gather { field, index, accumulate, offset, .. } = op {
            let f = format_ident!("{}", field);
            let idx = match index {
                Index::Token => quote!(batch.ids()[row] as usize),
                Index::Position if block.cached => {
                    // A cached step continues each sequence where its cache ends.
                    quote!(batch.position(row) + starts.map_or(0, |s| s[row / batch.seq_len()]))
                }
                Index::Position => quote!(batch.position(row)),
                Index::TokenType => quote!(batch.type_id(row) as usize),
                Index::Slot => quote!(row % batch.seq_len()),
            };
            // Tables that keep rows before position 0 (BART's offset of 2).
            let idx = if *offset > 0 { quote!(#idx + #offset) } else { idx };
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
                let f = format_ident!("{}", field);
                let (i, o, a) = (read(block, input), write(block, output), activation(act));
                quote!(self.#f.forward(#i, #o, #a, threads);)
            }
            Op::Attention { qkv, output, heads, kv_heads, head_dim, causal, window, sparse, bias, scaled } => {
                let scale = if scaled { (1.0 / (head_dim as f64).sqrt()) as f32 } else { 1.0f32 };
                let (q, o) = (format_ident!("{}", qkv.name), format_ident!("{}", output.name));
                let (q, o) = (quote!(s.#q.as_flattened()), quote!(s.#o.as_flattened_mut()));
                let plain = kv_heads == heads && window == Window::Global && !bias;
                let some = |w: usize| quote!(::core::option::Option::Some(#w));
                let none = quote!(::core::option::Option::None);
                let window = match window {
                    Window::Global => none,
                    Window::Fixed(w) => some(w),
                    Window::PerLayer(windows) => {
                        let (n, entries) = (windows.len(), windows.iter().map(|w| w.map_or(none.clone(), some)));
                        quote!({
                            const WINDOWS: [::core::option::Option<usize>; #n] = [#(#entries),*];
                            WINDOWS[layer]
                        })
                    }
                };
                let bias = if bias {
                    quote!(::core::option::Option::Some(bias))
                } else {
                    quote!(::core::option::Option::None)
                };
                let shape = quote!(#rt::layers::attention::AttentionShape { heads: #heads, kv_heads: #kv_heads, window: #window });
                let sparse_call = |layout: TokenStream| match (causal, mode) {
                    (false, _) => quote!(
                        #rt::layers::attention::self_attention_sparse::<#head_dim>(#q, batch, #shape, #layout, #bias, #scale, #o, threads);
                    ),
                    (true, Mode::Full) => quote!(
                        #rt::layers::attention::causal_self_attention_sparse::<#head_dim>(#q, batch, #shape, #layout, #bias, #scale, #o, threads);
                    ),
                    (true, Mode::Cached) => quote!(
                        #rt::layers::attention::cached_causal_attention_sparse::<#head_dim>(#q, batch, cache, layer, #shape, #layout, #bias, #scale, #o, threads);
                    ),
                };
                let dense_call = |plain: bool| match (causal, mode, plain) {
                    (false, _, true) => quote!(#rt::layers::self_attention::<#head_dim>(#q, batch, #heads, #scale, #o, threads);),
                    (false, _, false) => quote!(
                        #rt::layers::attention::self_attention_with::<#head_dim>(#q, batch, #shape, #bias, #scale, #o, threads);
                    ),
                    (true, Mode::Full, true) => {
                        quote!(#rt::layers::causal_self_attention::<#head_dim>(#q, batch, #heads, #scale, #o, threads);)
                    }
                    (true, Mode::Cached, true) => quote!(
                        #rt::layers::cached_causal_attention::<#head_dim>(#q, batch, cache, layer, #heads, #scale, #o, threads);
                    ),
                    (true, Mode::Full, false) => quote!(
                        #rt::layers::attention::causal_self_attention_with::<#head_dim>(#q, batch, #shape, #bias, #scale, #o, threads);
                    ),
                    (true, Mode::Cached, false) => quote!(
                        #rt::layers::attention::cached_causal_attention_with::<#head_dim>(#q, batch, cache, layer, #shape, #bias, #scale, #o, threads);
                    ),
                };
                match sparse {
                    Layouts::Dense => dense_call(plain),
                    Layouts::Fixed(layout) => sparse_call(sparse_layout(layout)),
                    Layouts::PerLayer(layouts) => {
                        // The layer's entry of a constant table: its layout's kernel, or the dense one.
                        let n = layouts.len();
                        let entries = layouts.iter().map(|l| match l {
                            Some(l) => {
                                let l = sparse_layout(*l);
                                quote!(::core::option::Option::Some(#l))
                            }
                            None => quote!(::core::option::Option::None),
                        });
                        let (sparse, dense) = (sparse_call(quote!(layout)), dense_call(false));
                        quote!({
                            const LAYOUTS: [::core::option::Option<#rt::layers::BlockSparse>; #n] = [#(#entries),*];
                            match LAYOUTS[layer] {
                                ::core::option::Option::Some(layout) => { #sparse }
                                ::core::option::Option::None => { #dense }
                            }
                        })
                    }
                }
            }
            Op::LshAttention { rotations, qkv, output, heads, head_dim, buckets, hashes, chunking, causal } => {
                let (r, q, o) = (format_ident!("{}", rotations), format_ident!("{}", qkv.name), format_ident!("{}", output.name));
                let Chunking { chunk, before, after } = chunking;
                quote! {
                    #rt::layers::lsh::lsh_self_attention_in::<#head_dim>(
                        s.#q.as_flattened(),
                        batch,
                        #rt::layers::lsh::LshShape {
                            heads: #heads, hashes: #hashes, buckets: #buckets, chunk: #chunk,
                            chunks_before: #before, chunks_after: #after, causal: #causal,
                        },
                        &self.#r,
                        s.#o.as_flattened_mut(),
                        threads,
                        chunked,
                    );
                }
            }
            Op::LocalAttention { qkv, output, heads, head_dim, chunking, causal } => {
                let (q, o) = (format_ident!("{}", qkv.name), format_ident!("{}", output.name));
                let Chunking { chunk, before, after } = chunking;
                quote! {
                    #rt::layers::lsh::local_self_attention_in::<#head_dim>(
                        s.#q.as_flattened(),
                        batch,
                        #rt::layers::lsh::LocalShape {
                            heads: #heads, chunk: #chunk, chunks_before: #before, chunks_after: #after, causal: #causal,
                        },
                        s.#o.as_flattened_mut(),
                        threads,
                        chunked,
                    );
                }
            }
            Op::CrossAttention { q, output, heads, head_dim, scaled, .. } => {
                let scale = if scaled { (1.0 / (head_dim as f64).sqrt()) as f32 } else { 1.0f32 };
                let (q, o) = (format_ident!("{}", q.name), format_ident!("{}", output.name));
                quote!(#rt::layers::attention::cross_attention::<#head_dim>(
                    s.#q.as_flattened(), batch, memory_kv, memory, #heads, #scale, s.#o.as_flattened_mut(), threads
                );)
            }
            Op::AdditiveCross { field, input, scores, alignments, output } => {
                let f = format_ident!("{}", field);
                let (i, sc, al, o) = (read(block, input), write(block, scores), write(block, alignments), write(block, output));
                let args = quote!(batch, rows);
                let call = match block.field(field).map(|f| f.kind) {
                    Some(FieldKind::Additive { kind: AdditiveKind::Location { .. }, .. }) => {
                        quote!(self.#f.forward(#i, #args, #sc, alignments, #o, threads);)
                    }
                    Some(FieldKind::Additive { kind: AdditiveKind::LocationSensitive { attention, .. }, .. }) => {
                        let method = match mode {
                            Mode::Full => quote!(forward),
                            Mode::Cached => quote!(forward_continued),
                        };
                        quote!(self.#f.#method(#i, #args, memory_keys.as_chunks::<#attention>().0, alignment, #sc, alignments, #o, threads);)
                    }
                    Some(FieldKind::Additive { kind: AdditiveKind::Bahdanau { attention }, .. }) => {
                        quote!(self.#f.forward(#i, #args, memory_keys.as_chunks::<#attention>().0, #sc, alignments, #o, threads);)
                    }
                    _ => unreachable!("check_widths ensured `{field}` is an additive attention"),
                };
                quote! {
                    {
                        let rows = #rt::layers::additive::Memory::new(memory_rows, memory);
                        let alignments = &mut #al.as_flattened_mut()[..batch.rows() * memory.seq_len()];
                        #call
                    }
                }
            }
            Op::Scale { value, factor } => {
                let (v, f) = (write(block, value), factor as f32);
                quote! {
                    for v in #v.as_flattened_mut() {
                        *v *= #f;
                    }
                }
            }
            Op::Rope { field, qkv, heads, kv_heads } => {
                let (f, q) = (format_ident!("{}", field), format_ident!("{}", qkv.name));
                let starts = match mode {
                    Mode::Full => quote!(::core::option::Option::None),
                    Mode::Cached => quote!(::core::option::Option::Some(cache.lens())),
                };
                quote!(self.#f.apply(s.#q.as_flattened_mut(), batch, #starts, #heads, #kv_heads);)
            }
            Op::Glu { input, output, act } => {
                let (i, o, f) = (format_ident!("{}", input.name), format_ident!("{}", output.name), output.width);
                let gate = match act {
                    Activation::GeGluTanh => quote!(#rt::Activation::GeluTanh),
                    Activation::GeGluErf => quote!(#rt::Activation::GeluErf),
                    _ => quote!(#rt::Activation::Silu),
                };
                quote!(#rt::kernels::activation::gated(s.#i.as_flattened(), s.#o.as_flattened_mut(), #f, #gate);)
            }
            Op::Add { stream, sublayer } => {
                let (x, sub) = (write(block, stream), read(block, sublayer));
                quote!(#rt::layers::residual_add(#x, #sub);)
            }
            Op::AddNorm { field, stream, sublayer } => {
                let (f, x, sub) = (format_ident!("{}", field), write(block, stream), read(block, sublayer));
                quote!(self.#f.forward_residual(#x, #sub);)
            }
            Op::Norm { field, input, output } if input == output => {
                let (f, x) = (format_ident!("{}", field), write(block, output));
                quote!(self.#f.forward(#x);)
            }
            Op::Norm { field, input, output } => {
                let f = format_ident!("{}", field);
                let (i, o) = (read(block, input), write(block, output));
                quote!(self.#f.forward_into(#i, #o);)
            }
            Op::Activation { value, act } => {
                let (v, a) = (write(block, value), activation(Some(act)));
                quote!(#a.apply_slice(#v.as_flattened_mut());)
            }
            Op::Gather { .. } => unreachable!("gathers are handled above"),
            Op::Concat { inputs, output } => {
                let o = write(block, output);
                let mut at = 0;
                let copies = inputs.iter().map(|v| {
                    let (i, from, to) = (read(block, *v), at, at + v.width);
                    at = to;
                    quote!(row[#from..#to].copy_from_slice(&(#i)[r]);)
                });
                let copies: Vec<TokenStream> = copies.collect();
                quote! {
                    for (r, row) in #o.iter_mut().enumerate() {
                        #(#copies)*
                    }
                }
            }
            Op::Slice { input, start, output } => {
                let (i, o, end) = (read(block, input), write(block, output), start + output.width);
                quote! {
                    for (row, from) in #o.iter_mut().zip((#i).iter()) {
                        row.copy_from_slice(&from[#start..#end]);
                    }
                }
            }
            Op::Patches { image, patches, class_token, positions } => {
                let (c, side, p, n) = (image.channels, image.image_size, image.patch_size, image.patches());
                let (patches, positions) = (format_ident!("{}", patches), format_ident!("{}", positions));
                let place = match class_token {
                    Some(cls) => {
                        let cls = format_ident!("{}", cls);
                        quote! {
                            self.#cls.copy_row(0, &mut rows[0]);
                            rows[1..].copy_from_slice(projected);
                        }
                    }
                    None => quote!(rows.copy_from_slice(projected);),
                };
                quote! {
                    for (image, unfolded) in images.iter().zip(unfolded.chunks_mut(#n)) {
                        #rt::vision::unfold_patches::<#c, #side, #side, #p>(image, unfolded.as_flattened_mut());
                    }
                    self.#patches.forward(unfolded, projected, #rt::Activation::Identity, threads);
                    let seq = x.len() / images.len();
                    for (rows, projected) in x.chunks_mut(seq).zip(projected.chunks(#n)) {
                        #place
                        for (position, row) in rows.iter_mut().enumerate() {
                            self.#positions.add_row(position, row);
                        }
                    }
                }
            }
        });
    }
    flush(&mut gathers, &mut out);
    out
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

/// Dims as consts, loading, threads: the same for every family.
fn common_methods(spec: &Spec, graph: &Graph) -> TokenStream {
    let rt = rt();
    let d = spec.d_model;
    let (vocab, max_pos, heads, head_dim, layers, d_ff) =
        (spec.vocab_size, spec.max_positions, spec.heads, spec.head_dim(), spec.layers, spec.d_ff);
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
    let consts = standard
        .iter()
        .filter(|(n, v, _)| !declared.iter().any(|(d, _, _)| d == n) && (spec.dims.is_none() || *v > 0))
        .map(|&(n, v, doc)| (n.to_string(), v, doc.to_string()))
        .chain(declared.iter().cloned())
        .map(|(n, v, doc)| {
            let n = format_ident!("{}", n);
            quote!(#[doc = #doc] pub const #n: usize = #v;)
        });
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

        /// Takes every tensor from `loader` (which records, rather than stops at, each problem:
        /// call `loader.finish()` afterwards).
        pub fn load(loader: &mut #rt::WeightLoader) -> Self {
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
