//! The statements of a block's forward pass: one function per op kind, each writing the runtime
//! call (or loop) its op becomes; [`forward_body`] strings them together in the block's op order.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::block::{read, write};
use super::{activation, rt, Mode};
use crate::graph::{AdditiveKind, Block, Chunking, FieldKind, Index, Layouts, Op, Value, Window};
use crate::spec::{Activation, ImageInput, Sparse, SparsePattern};

/// A block's forward body: each op's statement in order, consecutive gathers sharing one loop over
/// the rows.
pub(super) fn forward_body(block: &Block, mode: Mode) -> TokenStream {
    let mut out = TokenStream::new();
    let mut gathers = Vec::new();
    for op in &block.ops {
        if let Op::Gather { field, index, accumulate, offset, .. } = *op {
            gathers.push(gather(block, field, index, accumulate, offset));
            continue;
        }
        out.extend(gather_rows(&mut gathers));
        out.extend(statement(block, op, mode));
    }
    out.extend(gather_rows(&mut gathers));
    out
}

/// The statement of one op other than a gather.
fn statement(block: &Block, op: &Op, mode: Mode) -> TokenStream {
    match *op {
        Op::Linear { field, input, output, act } => linear(block, field, input, output, act),
        Op::Attention { qkv, output, heads, kv_heads, head_dim, causal, window, sparse, bias, scaled } => {
            attention(qkv, output, heads, kv_heads, head_dim, causal, window, sparse, bias, scaled, mode)
        }
        Op::LshAttention { rotations, qkv, output, heads, head_dim, buckets, hashes, chunking, causal } => {
            lsh_attention(rotations, qkv, output, heads, head_dim, buckets, hashes, chunking, causal)
        }
        Op::LocalAttention { qkv, output, heads, head_dim, chunking, causal } => {
            local_attention(qkv, output, heads, head_dim, chunking, causal)
        }
        Op::CrossAttention { q, output, heads, head_dim, scaled, .. } => {
            cross_attention(q, output, heads, head_dim, scaled)
        }
        Op::AdditiveCross { field, input, scores, alignments, output } => {
            additive_cross(block, field, input, scores, alignments, output, mode)
        }
        Op::Scale { value, factor } => scale(block, value, factor),
        Op::Rope { field, qkv, heads, kv_heads } => rope(field, qkv, heads, kv_heads, mode),
        Op::Glu { input, output, act } => glu(input, output, act),
        Op::Add { stream, sublayer } => add(block, stream, sublayer),
        Op::AddNorm { field, stream, sublayer } => add_norm(block, field, stream, sublayer),
        Op::Norm { field, input, output } => norm(block, field, input, output),
        Op::Activation { value, act } => activation_op(block, value, act),
        Op::Gather { .. } => unreachable!("`forward_body` puts gathers in a row loop"),
        Op::Concat { inputs, output } => concat(block, inputs, output),
        Op::Slice { input, start, output } => slice(block, input, start, output),
        Op::Patches { image, patches: projection, class_token, positions } => {
            patches(image, projection, class_token, positions)
        }
    }
}

/// Consecutive gathers' statements as one loop over the rows (none when there are none), which
/// leaves `gathers` empty for the next run.
fn gather_rows(gathers: &mut Vec<TokenStream>) -> Option<TokenStream> {
    if gathers.is_empty() {
        return None;
    }
    let gathers = std::mem::take(gathers);
    Some(quote! {
        for (row, x) in x.iter_mut().enumerate() {
            #(#gathers)*
        }
    })
}

/// One row's table lookup, copied into or added to the stream row `x` (inside [`gather_rows`]'s
/// loop).
fn gather(block: &Block, field: &str, index: Index, accumulate: bool, offset: usize) -> TokenStream {
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
    let idx = if offset > 0 { quote!(#idx + #offset) } else { idx };
    if accumulate {
        quote!(self.#f.add_row(#idx, x);)
    } else {
        quote!(self.#f.copy_row(#idx, x);)
    }
}

fn linear(block: &Block, field: &str, input: Value, output: Value, act: Option<Activation>) -> TokenStream {
    let f = format_ident!("{}", field);
    let (i, o, a) = (read(block, input), write(block, output), activation(act));
    quote!(self.#f.forward(#i, #o, #a, threads);)
}

/// The factor on attention scores: `1/sqrt(head_dim)`, or 1 where the weights fold it in (T5).
fn score_scale(scaled: bool, head_dim: usize) -> f32 {
    if scaled {
        (1.0 / (head_dim as f64).sqrt()) as f32
    } else {
        1.0f32
    }
}

/// What every self-attention kernel call takes, whichever kernel the layout and mode pick.
struct AttentionCall {
    /// `[Q | K | V]` rows and the context they write, as flat slices.
    q: TokenStream,
    o: TokenStream,
    heads: usize,
    head_dim: usize,
    /// Heads, KV heads and window, for the kernels that take them.
    shape: TokenStream,
    bias: TokenStream,
    scale: f32,
    causal: bool,
    mode: Mode,
}

/// Self-attention: the plainest kernel that serves the op — one with only a head count when every
/// head has its own K/V, the window is global and there is no bias, `_with` otherwise, `_sparse`
/// under a block-sparse layout (per layer: a table of layouts, the dense kernel where none).
fn attention(
    qkv: Value,
    output: Value,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
    window: Window,
    sparse: Layouts,
    bias: bool,
    scaled: bool,
    mode: Mode,
) -> TokenStream {
    let rt = rt();
    let scale = score_scale(scaled, head_dim);
    let (q, o) = (format_ident!("{}", qkv.name), format_ident!("{}", output.name));
    let (q, o) = (quote!(s.#q.as_flattened()), quote!(s.#o.as_flattened_mut()));
    let plain = kv_heads == heads && window == Window::Global && !bias;
    let window = attention_window(window);
    let bias =
        if bias { quote!(::core::option::Option::Some(bias)) } else { quote!(::core::option::Option::None) };
    let shape = quote!(#rt::layers::attention::AttentionShape { heads: #heads, kv_heads: #kv_heads, window: #window });
    let call = AttentionCall { q, o, heads, head_dim, shape, bias, scale, causal, mode };
    match sparse {
        Layouts::Dense => dense_attention(&call, plain),
        Layouts::Fixed(layout) => sparse_attention(&call, sparse_layout(layout)),
        Layouts::PerLayer(layouts) => per_layer_attention(&call, layouts),
    }
}

/// The window argument: none, a constant, or the layer's entry of a constant table.
fn attention_window(window: Window) -> TokenStream {
    let some = |w: usize| quote!(::core::option::Option::Some(#w));
    let none = quote!(::core::option::Option::None);
    match window {
        Window::Global => none,
        Window::Fixed(w) => some(w),
        Window::PerLayer(windows) => {
            let (n, entries) = (windows.len(), windows.iter().map(|w| w.map_or(none.clone(), some)));
            quote!({
                const WINDOWS: [::core::option::Option<usize>; #n] = [#(#entries),*];
                WINDOWS[layer]
            })
        }
    }
}

/// A dense kernel call; `plain`: the one taking only a head count (no grouped K/V, window or bias).
fn dense_attention(call: &AttentionCall, plain: bool) -> TokenStream {
    let rt = rt();
    let AttentionCall { q, o, heads, head_dim, shape, bias, scale, causal, mode } = call;
    match (causal, mode, plain) {
        (false, _, true) => {
            quote!(#rt::layers::self_attention::<#head_dim>(#q, batch, #heads, #scale, #o, threads);)
        }
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
    }
}

/// A block-sparse kernel call under `layout` (an expression of type `BlockSparse`).
fn sparse_attention(call: &AttentionCall, layout: TokenStream) -> TokenStream {
    let rt = rt();
    let AttentionCall { q, o, head_dim, shape, bias, scale, causal, mode, .. } = call;
    match (causal, mode) {
        (false, _) => quote!(
            #rt::layers::attention::self_attention_sparse::<#head_dim>(#q, batch, #shape, #layout, #bias, #scale, #o, threads);
        ),
        (true, Mode::Full) => quote!(
            #rt::layers::attention::causal_self_attention_sparse::<#head_dim>(#q, batch, #shape, #layout, #bias, #scale, #o, threads);
        ),
        (true, Mode::Cached) => quote!(
            #rt::layers::attention::cached_causal_attention_sparse::<#head_dim>(#q, batch, cache, layer, #shape, #layout, #bias, #scale, #o, threads);
        ),
    }
}

/// The layer's entry of a constant table of layouts: its layout's kernel, or the dense one.
fn per_layer_attention(call: &AttentionCall, layouts: &[Option<Sparse>]) -> TokenStream {
    let rt = rt();
    let n = layouts.len();
    let entries = layouts.iter().map(|l| match l {
        Some(l) => {
            let l = sparse_layout(*l);
            quote!(::core::option::Option::Some(#l))
        }
        None => quote!(::core::option::Option::None),
    });
    let (sparse, dense) = (sparse_attention(call, quote!(layout)), dense_attention(call, false));
    quote!({
        const LAYOUTS: [::core::option::Option<#rt::layers::BlockSparse>; #n] = [#(#entries),*];
        match LAYOUTS[layer] {
            ::core::option::Option::Some(layout) => { #sparse }
            ::core::option::Option::None => { #dense }
        }
    })
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

fn lsh_attention(
    rotations: &str,
    qkv: Value,
    output: Value,
    heads: usize,
    head_dim: usize,
    buckets: usize,
    hashes: usize,
    chunking: Chunking,
    causal: bool,
) -> TokenStream {
    let rt = rt();
    let (r, q, o) =
        (format_ident!("{}", rotations), format_ident!("{}", qkv.name), format_ident!("{}", output.name));
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

fn local_attention(
    qkv: Value,
    output: Value,
    heads: usize,
    head_dim: usize,
    chunking: Chunking,
    causal: bool,
) -> TokenStream {
    let rt = rt();
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

/// Multi-head cross-attention over the memory's keys and values, projected once per source.
fn cross_attention(q: Value, output: Value, heads: usize, head_dim: usize, scaled: bool) -> TokenStream {
    let rt = rt();
    let scale = score_scale(scaled, head_dim);
    let (q, o) = (format_ident!("{}", q.name), format_ident!("{}", output.name));
    quote!(#rt::layers::attention::cross_attention::<#head_dim>(
        s.#q.as_flattened(), batch, memory_kv, memory, #heads, #scale, s.#o.as_flattened_mut(), threads
    );)
}

/// Additive or location cross-attention over the raw memory rows; the location-sensitive kind
/// carries its alignments from step to step (`forward_continued` in cached steps).
fn additive_cross(
    block: &Block,
    field: &str,
    input: Value,
    scores: Value,
    alignments: Value,
    output: Value,
    mode: Mode,
) -> TokenStream {
    let rt = rt();
    let f = format_ident!("{}", field);
    let (i, sc, al, o) =
        (read(block, input), write(block, scores), write(block, alignments), write(block, output));
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

fn scale(block: &Block, value: Value, factor: f64) -> TokenStream {
    let (v, f) = (write(block, value), factor as f32);
    quote! {
        for v in #v.as_flattened_mut() {
            *v *= #f;
        }
    }
}

/// Rotary positions on Q and K in place; a cached step's positions continue each cache.
fn rope(field: &str, qkv: Value, heads: usize, kv_heads: usize, mode: Mode) -> TokenStream {
    let (f, q) = (format_ident!("{}", field), format_ident!("{}", qkv.name));
    let starts = match mode {
        Mode::Full => quote!(::core::option::Option::None),
        Mode::Cached => quote!(::core::option::Option::Some(cache.lens())),
    };
    quote!(self.#f.apply(s.#q.as_flattened_mut(), batch, #starts, #heads, #kv_heads);)
}

/// A gated unit: the gate's activation (SiLU for SwiGLU) times the up half.
fn glu(input: Value, output: Value, act: Activation) -> TokenStream {
    let rt = rt();
    let (i, o, f) = (format_ident!("{}", input.name), format_ident!("{}", output.name), output.width);
    let gate = match act {
        Activation::GeGluTanh => quote!(#rt::Activation::GeluTanh),
        Activation::GeGluErf => quote!(#rt::Activation::GeluErf),
        _ => quote!(#rt::Activation::Silu),
    };
    quote!(#rt::kernels::activation::gated(s.#i.as_flattened(), s.#o.as_flattened_mut(), #f, #gate);)
}

fn add(block: &Block, stream: Value, sublayer: Value) -> TokenStream {
    let rt = rt();
    let (x, sub) = (write(block, stream), read(block, sublayer));
    quote!(#rt::layers::residual_add(#x, #sub);)
}

fn add_norm(block: &Block, field: &str, stream: Value, sublayer: Value) -> TokenStream {
    let (f, x, sub) = (format_ident!("{}", field), write(block, stream), read(block, sublayer));
    quote!(self.#f.forward_residual(#x, #sub);)
}

/// A norm in place, or from one value into another.
fn norm(block: &Block, field: &str, input: Value, output: Value) -> TokenStream {
    let f = format_ident!("{}", field);
    if input == output {
        let x = write(block, output);
        quote!(self.#f.forward(#x);)
    } else {
        let (i, o) = (read(block, input), write(block, output));
        quote!(self.#f.forward_into(#i, #o);)
    }
}

/// An activation [`crate::graph::fuse`] could not fold into a GEMM epilogue.
fn activation_op(block: &Block, value: Value, act: Activation) -> TokenStream {
    let (v, a) = (write(block, value), activation(Some(act)));
    quote!(#a.apply_slice(#v.as_flattened_mut());)
}

/// Each row of `output` copied together from the inputs' rows, side by side.
fn concat(block: &Block, inputs: &[Value], output: Value) -> TokenStream {
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

fn slice(block: &Block, input: Value, start: usize, output: Value) -> TokenStream {
    let (i, o, end) = (read(block, input), write(block, output), start + output.width);
    quote! {
        for (row, from) in #o.iter_mut().zip((#i).iter()) {
            row.copy_from_slice(&from[#start..#end]);
        }
    }
}

/// Images into the stream: unfold each into patches, project them in one GEMM, then per image
/// place the class token (if any) and the projected patches, and add the positions.
fn patches(image: ImageInput, projection: &str, class_token: Option<&str>, positions: &str) -> TokenStream {
    let rt = rt();
    let (c, side, p, n) = (image.channels, image.image_size, image.patch_size, image.patches());
    let (patches, positions) = (format_ident!("{}", projection), format_ident!("{}", positions));
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
