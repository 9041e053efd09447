//! One block as Rust: its struct (a field per weight, typed by its widths), `load` (a checkpoint
//! name per field) and its forward function(s), whose statements come from [`super::ops`].

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::ops::forward_body;
use super::{block_ident, rt, Mode};
use crate::graph::{AdditiveKind, Block, Field, FieldKind, Index, Layout, Op, Value};
use crate::spec::Spec;

/// The struct of one block, its `load` and its forward function(s).
pub(super) fn block(spec: &Spec, block: &Block, scratch_ty: &Ident) -> TokenStream {
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
    let params = forward_params(spec, block, scratch_ty, mode);
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

/// The parameters of a block's forward function, in a fixed order: the stream, the family's
/// inputs and outputs, then each thing an op reads (batch, positions, bias, memory, scratch, …),
/// each only when some op of the block reads it.
fn forward_params(spec: &Spec, block: &Block, scratch_ty: &Ident, mode: Mode) -> Vec<TokenStream> {
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
    params
}

/// A block's additive or location cross-attention: its kind and the memory's width.
pub(super) fn additive_cross(block: &Block) -> Option<(AdditiveKind, usize)> {
    block.fields.iter().find_map(|f| match f.kind {
        FieldKind::Additive { kind, memory, .. } => Some((kind, memory)),
        _ => None,
    })
}

/// A field's Rust type: its runtime layer, with its widths as const generics.
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

/// The expression that loads a field, by its kind and how the checkpoint stores it.
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
pub(super) fn read(block: &Block, v: Value) -> TokenStream {
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
pub(super) fn write(block: &Block, v: Value) -> TokenStream {
    if v.is_stream() {
        quote!(x)
    } else if Some(v) == block.output {
        quote!(out)
    } else {
        let n = format_ident!("{}", v.name);
        quote!(s.#n)
    }
}
