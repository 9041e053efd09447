//! One block of a trainer as Rust, from its [`Plan`]: the struct of saved versions (one buffer per
//! version, one per layer), the gradient struct (one buffer per version, shared by the layers),
//! and the block's `forward` and `backward`, one statement per step — the backward the same steps
//! in reverse. Parameters are read from the flat buffer at offsets fixed here ([`FieldParams`]).

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::plan::{Plan, Step};
use crate::codegen::rt;
use crate::graph::{Block, FieldKind, Index};
use crate::spec::Activation;

/// Where a field's tensors sit in the flat parameter buffer, relative to the block's base; a tied
/// head's weight sits at a fixed offset instead (the token embeddings').
#[derive(Clone, Copy, Debug)]
pub struct FieldParams {
    pub weight: (usize, usize),
    pub bias: Option<(usize, usize)>,
    /// The weight's offset is absolute (a tied head).
    pub tied: bool,
}

fn relative((off, len): (usize, usize)) -> TokenStream {
    quote!(base + #off..base + #off + #len)
}

impl FieldParams {
    fn weight_range(&self) -> TokenStream {
        if self.tied {
            let (off, end) = (self.weight.0, self.weight.0 + self.weight.1);
            quote!(#off..#end)
        } else {
            relative(self.weight)
        }
    }

    fn bias_range(&self) -> Option<TokenStream> {
        self.bias.map(relative)
    }
}

/// Everything the block's code needs to know besides its plan.
pub struct BlockCode<'a> {
    pub block: &'a Block,
    pub plan: &'a Plan,
    pub fields: &'a [(&'static str, FieldParams)],
    pub train_ty: Ident,
    pub saved_ty: Ident,
    pub grads_ty: Ident,
    /// The stream's width.
    pub d: usize,
}

impl BlockCode<'_> {
    fn params(&self, field: &str) -> FieldParams {
        self.fields
            .iter()
            .find(|(n, _)| *n == field)
            .map(|(_, p)| *p)
            .expect("every weighted field has a layout")
    }

    fn kind(&self, field: &str) -> FieldKind {
        self.block.field(field).expect("ops name their block's fields").kind
    }

    fn saved(&self, v: usize) -> TokenStream {
        let n = format_ident!("{}", self.plan.versions[v].name);
        quote!(s.#n)
    }

    fn grad(&self, v: usize) -> TokenStream {
        if self.plan.versions[v].output {
            return quote!(d_out);
        }
        let n = format_ident!("{}", self.plan.versions[v].name);
        quote!(self.g.#n)
    }
}

/// The structs and methods of one block of the trainer.
pub fn block(code: &BlockCode<'_>) -> TokenStream {
    let rt = rt();
    let (train_ty, saved_ty, grads_ty) = (&code.train_ty, &code.saved_ty, &code.grads_ty);
    let plan = code.plan;
    let version_fields: Vec<TokenStream> = plan
        .versions
        .iter()
        .map(|v| {
            let (n, w) = (format_ident!("{}", v.name), v.width);
            quote!(#n: ::std::vec::Vec<[f32; #w]>,)
        })
        .collect();
    let version_resizes: Vec<TokenStream> = plan
        .versions
        .iter()
        .map(|v| {
            let (n, w) = (format_ident!("{}", v.name), v.width);
            quote!(self.#n.resize(rows, [0.0; #w]);)
        })
        .collect();
    let stats: Vec<Ident> = (0..plan.stats).map(|k| format_ident!("stats_{k}")).collect();
    let lse: Vec<Ident> = (0..plan.lse.len()).map(|k| format_ident!("lse_{k}")).collect();
    let lse_heads = &plan.lse;
    let masks: Vec<(Ident, usize)> = plan
        .steps
        .iter()
        .filter_map(|step| match *step {
            Step::Dropout { output, site, .. } => {
                Some((format_ident!("mask_{site}"), plan.versions[output].width))
            }
            _ => None,
        })
        .collect();
    let (mask_names, mask_widths): (Vec<&Ident>, Vec<usize>) = masks.iter().map(|(n, w)| (n, *w)).unzip();
    let fixed = fixed_fields(code.block);
    let fixed_defs = fixed.iter().map(|(n, ty, _)| quote!(#n: #ty,));
    let fixed_inits = fixed.iter().map(|(n, _, init)| quote!(#n: #init,));
    let attention_work = attention_work(code);
    let forward = forward(code);
    let backward = backward(code);
    let (d, out_w) = (code.d, code.block.output.map_or(0, |o| o.width));
    quote! {
        /// What one block's backward reads from its forward: every version it wrote.
        #[derive(Debug, Default)]
        #[allow(non_snake_case)]
        struct #saved_ty {
            #(#version_fields)*
            #(#stats: ::std::vec::Vec<#rt::train::norm::NormStats>,)*
            #(#lse: ::std::vec::Vec<f32>,)*
            #(#mask_names: ::std::vec::Vec<u64>,)*
        }

        impl #saved_ty {
            /// Sizes every buffer for `rows` rows (no allocation when the shape is unchanged).
            fn resize(&mut self, rows: usize) {
                #(#version_resizes)*
                #(self.#stats.resize(rows, ::core::default::Default::default());)*
                #(self.#lse.resize(rows * #lse_heads, 0.0);)*
                #(self.#mask_names.resize(#rt::train::dropout::mask_words(rows * #mask_widths), 0);)*
            }
        }

        /// One gradient buffer per version, shared by every layer of the block's type.
        #[derive(Debug, Default)]
        #[allow(non_snake_case)]
        struct #grads_ty {
            #(#version_fields)*
            attention_work: ::std::vec::Vec<f32>,
        }

        impl #grads_ty {
            fn resize(&mut self, batch: &#rt::Batch) {
                let rows = batch.rows();
                #(#version_resizes)*
                #attention_work
            }
        }

        /// A block's non-trainable tables and its gradient buffers.
        #[derive(Debug)]
        struct #train_ty {
            #(#fixed_defs)*
            g: #grads_ty,
        }

        impl #train_ty {
            fn new() -> Self {
                Self { #(#fixed_inits)* g: ::core::default::Default::default() }
            }

            #[allow(unused_variables, clippy::too_many_arguments)]
            fn forward(
                &self,
                s: &mut #saved_ty,
                p: &[f32],
                base: usize,
                x: &mut [[f32; #d]],
                batch: &#rt::Batch,
                dropout: &#rt::train::dropout::BlockDropout,
                threads: &#rt::Threads,
            ) {
                #forward
            }

            #[allow(unused_variables, clippy::too_many_arguments)]
            fn backward(
                &mut self,
                s: &#saved_ty,
                p: &[f32],
                base: usize,
                g: &mut [f32],
                dx: &mut [[f32; #d]],
                d_out: &[[f32; #out_w]],
                batch: &#rt::Batch,
                dropout: &#rt::train::dropout::BlockDropout,
                threads: &#rt::Threads,
            ) {
                #backward
            }
        }
    }
}

/// The block's non-trainable fields (rotary tables, sinusoidal positions): name, type, init.
fn fixed_fields(block: &Block) -> Vec<(Ident, TokenStream, TokenStream)> {
    let rt = rt();
    block
        .fields
        .iter()
        .filter_map(|f| {
            let n = format_ident!("{}", f.name);
            match f.kind {
                FieldKind::Rope { max_positions, head_dim, rotary_dims, theta } => Some((
                    n,
                    quote!(#rt::layers::rope::Rope),
                    quote!(#rt::layers::rope::Rope::new(#max_positions, #head_dim, #rotary_dims, #theta)),
                )),
                FieldKind::Sinusoidal { rows, width } => Some((
                    n,
                    quote!(#rt::layers::SinusoidalPositions<#width>),
                    quote!(#rt::layers::SinusoidalPositions::new(#rows)),
                )),
                _ => None,
            }
        })
        .collect()
}

/// The attention backward's work buffer, sized for the largest attention of the block.
fn attention_work(code: &BlockCode<'_>) -> TokenStream {
    let rt = rt();
    let sizes: Vec<TokenStream> = code
        .plan
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::Attention { head_dim, .. } => {
                let shape = attention_shape(step);
                Some(quote!(#rt::train::batch::self_attention_work_len(batch, &#shape, #head_dim)))
            }
            _ => None,
        })
        .collect();
    if sizes.is_empty() {
        return TokenStream::new();
    }
    quote!(self.attention_work.resize(0 #(.max(#sizes))*, 0.0);)
}

fn attention_shape(step: &Step) -> TokenStream {
    let rt = rt();
    let Step::Attention { heads, kv_heads, causal, window, scale, .. } = *step else {
        unreachable!("called on attention steps")
    };
    let window = match window {
        Some(w) => quote!(::core::option::Option::Some(#w)),
        None => quote!(::core::option::Option::None),
    };
    quote!(#rt::train::batch::SelfAttention { heads: #heads, kv_heads: #kv_heads, causal: #causal, window: #window, scale: #scale })
}

fn runtime_activation(act: Activation) -> TokenStream {
    let rt = rt();
    match act {
        Activation::GeluErf | Activation::GeGluErf => quote!(#rt::Activation::GeluErf),
        Activation::GeluTanh | Activation::GeGluTanh => quote!(#rt::Activation::GeluTanh),
        Activation::Relu => quote!(#rt::Activation::Relu),
        Activation::SwiGlu => quote!(#rt::Activation::Silu),
    }
}

fn index(index: Index, offset: usize) -> TokenStream {
    let idx = match index {
        Index::Token => quote!(batch.ids()[row] as usize),
        Index::Position => quote!(batch.position(row)),
        Index::TokenType => quote!(batch.type_id(row) as usize),
        Index::Slot => quote!(row % batch.seq_len()),
    };
    if offset > 0 {
        quote!(#idx + #offset)
    } else {
        idx
    }
}

/// The forward: the stream copied in, each step into its versions, the last stream version out.
fn forward(code: &BlockCode<'_>) -> TokenStream {
    let mut out = TokenStream::new();
    if let Some(v) = code.plan.input {
        let n = code.saved(v);
        out.extend(quote!(#n.copy_from_slice(x);));
    }
    for step in &code.plan.steps {
        out.extend(forward_step(code, step));
    }
    if let Some(v) = code.plan.last_stream {
        let n = code.saved(v);
        out.extend(quote!(x.copy_from_slice(&#n);));
    }
    out
}

fn forward_step(code: &BlockCode<'_>, step: &Step) -> TokenStream {
    let rt = rt();
    let t = quote!(#rt::train);
    match *step {
        Step::Linear { field, input, pre, output } => {
            let fp = code.params(field);
            let (w, b) = (fp.weight_range(), fp.bias_range());
            let bias = match b {
                Some(b) => quote!(::core::option::Option::Some(&p[#b])),
                None => quote!(::core::option::Option::None),
            };
            let (i, o) = (code.saved(input), code.saved(output));
            match pre {
                None => quote!(#t::linear::linear_train(&#i, &p[#w], #bias, &mut #o, threads);),
                Some((pre, act)) => {
                    let (pv, a) = (code.saved(pre), runtime_activation(act));
                    quote! {
                        #t::linear::linear_train(&#i, &p[#w], #bias, &mut #pv, threads);
                        #o.copy_from_slice(&#pv);
                        #a.apply_slice(#o.as_flattened_mut());
                    }
                }
            }
        }
        Step::Norm { field, input, output, stats } => norm_forward(code, field, input, output, stats),
        Step::AddNorm { field, stream, sublayer, sum, output, stats } => {
            let (a, b, sv) = (code.saved(stream), code.saved(sublayer), code.saved(sum));
            let norm = norm_forward(code, field, sum, output, stats);
            quote! {
                #t::batch::add_into(&#a, &#b, &mut #sv);
                #norm
            }
        }
        Step::Add { stream, sublayer, output } => {
            let (a, b, o) = (code.saved(stream), code.saved(sublayer), code.saved(output));
            quote!(#t::batch::add_into(&#a, &#b, &mut #o);)
        }
        Step::Attention { qkv, output, lse, head_dim, .. } => {
            let (q, o, shape) = (code.saved(qkv), code.saved(output), attention_shape(step));
            let (l, attention) = (format_ident!("lse_{lse}"), lse as u64);
            quote!(#t::batch::self_attention_train::<#head_dim>(#q.as_flattened(), batch, &#shape, dropout.attention(#attention), #o.as_flattened_mut(), &mut s.#l, threads);)
        }
        Step::Rope { field, input, output, heads, kv_heads } => {
            let (i, o, f) = (code.saved(input), code.saved(output), format_ident!("{}", field));
            quote! {
                #o.copy_from_slice(&#i);
                self.#f.apply(#o.as_flattened_mut(), batch, ::core::option::Option::None, #heads, #kv_heads);
            }
        }
        Step::Glu { input, output, act } => {
            let (i, o, a, f) = (
                code.saved(input),
                code.saved(output),
                runtime_activation(act),
                code.plan.versions[output].width,
            );
            quote!(#rt::kernels::activation::gated(#i.as_flattened(), #o.as_flattened_mut(), #f, #a);)
        }
        Step::Gather { field, index: ix, offset, input, output } => {
            let (o, idx) = (code.saved(output), index(ix, offset));
            let init = match input {
                Some(i) => {
                    let i = code.saved(i);
                    quote!(#o.copy_from_slice(&#i);)
                }
                None => quote!(#o.iter_mut().for_each(|r| r.fill(0.0));),
            };
            let add = match code.kind(field) {
                FieldKind::Embedding { .. } => {
                    let w = code.params(field).weight_range();
                    quote!(#t::embedding::add_rows(&p[#w], &mut #o, |row| #idx);)
                }
                _ => {
                    let f = format_ident!("{}", field);
                    quote! {
                        for (row, x) in #o.iter_mut().enumerate() {
                            self.#f.add_row(#idx, x);
                        }
                    }
                }
            };
            quote!(#init #add)
        }
        Step::Scale { input, output, factor } => {
            let (i, o) = (code.saved(input), code.saved(output));
            quote! {
                #o.copy_from_slice(&#i);
                #o.as_flattened_mut().iter_mut().for_each(|v| *v *= #factor);
            }
        }
        Step::Activation { input, output, act } => {
            let (i, o, a) = (code.saved(input), code.saved(output), runtime_activation(act));
            quote! {
                #o.copy_from_slice(&#i);
                #a.apply_slice(#o.as_flattened_mut());
            }
        }
        Step::Dropout { input, output, site } => {
            let (i, o, m, site) =
                (code.saved(input), code.saved(output), format_ident!("mask_{site}"), site as u64);
            quote! {
                #o.copy_from_slice(&#i);
                if dropout.is_on() {
                    #t::dropout::dropout_train(#o.as_flattened_mut(), dropout.p, dropout.stream(#site), &mut s.#m, threads)
                        .expect("the trainer checked the dropout probability");
                }
            }
        }
    }
}

fn norm_forward(code: &BlockCode<'_>, field: &str, input: usize, output: usize, stats: usize) -> TokenStream {
    let rt = rt();
    let t = quote!(#rt::train);
    let (i, o, st) = (code.saved(input), code.saved(output), format_ident!("stats_{stats}"));
    let fp = code.params(field);
    let w = fp.weight_range();
    match code.kind(field) {
        FieldKind::LayerNorm { eps, .. } => {
            let eps = eps as f32;
            let b = fp.bias_range().expect("a LayerNorm has a bias");
            quote!(#t::norm::layer_norm_train(&#i, &mut #o, #t::params::array(&p[#w]), #t::params::array(&p[#b]), #eps, &mut s.#st);)
        }
        FieldKind::RmsNorm { eps, .. } => {
            let eps = eps as f32;
            quote!(#t::norm::rms_norm_train(&#i, &mut #o, #t::params::array(&p[#w]), #eps, &mut s.#st);)
        }
        _ => unreachable!("norm ops read norm fields"),
    }
}

/// The backward: the stream's gradient copied in, the steps in reverse, the input stream's
/// gradient out. A version's gradient is written by its first contributor and added to by the rest.
fn backward(code: &BlockCode<'_>) -> TokenStream {
    let mut b = Backward { code, written: vec![false; code.plan.versions.len()], out: TokenStream::new() };
    if let Some(v) = code.plan.last_stream {
        let g = code.grad(v);
        b.out.extend(quote!(#g.copy_from_slice(dx);));
        b.written[v] = true;
    }
    for step in code.plan.steps.iter().rev() {
        b.step(step);
    }
    if let Some(v) = code.plan.input {
        if b.written[v] {
            let g = code.grad(v);
            b.out.extend(quote!(dx.copy_from_slice(&#g);));
        } else {
            b.out.extend(quote!(dx.iter_mut().for_each(|r| r.fill(0.0));));
        }
    }
    b.out
}

struct Backward<'c, 'a> {
    code: &'c BlockCode<'a>,
    written: Vec<bool>,
    out: TokenStream,
}

impl Backward<'_, '_> {
    /// How the next gradient into version `v` is stored.
    fn store(&mut self, v: usize) -> TokenStream {
        let rt = rt();
        let first = !std::mem::replace(&mut self.written[v], true);
        if first {
            quote!(#rt::train::Store::Overwrite)
        } else {
            quote!(#rt::train::Store::Accumulate)
        }
    }

    /// The gradient of a version a step produced, zeroed first when nothing wrote it (a value
    /// nothing later reads).
    fn upstream(&mut self, v: usize) -> TokenStream {
        let g = self.code.grad(v);
        if !self.written[v] && !self.code.plan.versions[v].output {
            self.out.extend(quote!(#g.iter_mut().for_each(|r| r.fill(0.0));));
            self.written[v] = true;
        }
        g
    }

    fn step(&mut self, step: &Step) {
        let rt = rt();
        let t = quote!(#rt::train);
        let code = self.code;
        let statement = match *step {
            Step::Linear { field, input, pre, output } => {
                let dy = self.upstream(output);
                let dy = match pre {
                    None => dy,
                    Some((pre, act)) => {
                        let (gp, sp, a) = (code.grad(pre), code.saved(pre), runtime_activation(act));
                        self.written[pre] = true;
                        self.out.extend(quote! {
                            #gp.copy_from_slice(&#dy);
                            #t::activation::activation_backward(#a, #sp.as_flattened(), #gp.as_flattened_mut());
                        });
                        gp
                    }
                };
                let (i, gi, store) = (code.saved(input), code.grad(input), self.store(input));
                let fp = code.params(field);
                let w = fp.weight_range();
                match fp.bias_range() {
                    Some(b) => quote! {{
                        let (d_weight, d_bias) = #t::params::two_mut(g, #w, #b);
                        #t::linear::linear_backward(&#i, &#dy, &p[#w], ::core::option::Option::Some((&mut #gi[..], #store)), d_weight, ::core::option::Option::Some(d_bias), threads);
                    }},
                    None => quote! {
                        #t::linear::linear_backward(&#i, &#dy, &p[#w], ::core::option::Option::Some((&mut #gi[..], #store)), &mut g[#w], ::core::option::Option::None, threads);
                    },
                }
            }
            Step::Norm { field, input, output, stats } => {
                let dy = self.upstream(output);
                self.norm(field, input, dy, stats)
            }
            Step::AddNorm { field, stream, sublayer, sum, output, stats } => {
                let dy = self.upstream(output);
                let norm = self.norm(field, sum, dy, stats);
                let gs = code.grad(sum);
                let (ga, sa) = (code.grad(stream), self.store(stream));
                let (gb, sb) = (code.grad(sublayer), self.store(sublayer));
                quote! {
                    #norm
                    #sa.put_slice(#ga.as_flattened_mut(), #gs.as_flattened());
                    #sb.put_slice(#gb.as_flattened_mut(), #gs.as_flattened());
                }
            }
            Step::Add { stream, sublayer, output } => {
                let dy = self.upstream(output);
                let (ga, sa) = (code.grad(stream), self.store(stream));
                let (gb, sb) = (code.grad(sublayer), self.store(sublayer));
                quote! {
                    #sa.put_slice(#ga.as_flattened_mut(), #dy.as_flattened());
                    #sb.put_slice(#gb.as_flattened_mut(), #dy.as_flattened());
                }
            }
            Step::Attention { qkv, output, lse, head_dim, .. } => {
                let dy = self.upstream(output);
                let (q, o, shape) = (code.saved(qkv), code.saved(output), attention_shape(step));
                let (gq, store, l) = (code.grad(qkv), self.store(qkv), format_ident!("lse_{lse}"));
                let attention = lse as u64;
                quote! {
                    #t::batch::self_attention_backward::<#head_dim>(
                        #q.as_flattened(), #o.as_flattened(), &s.#l, #dy.as_flattened(), batch, &#shape, dropout.attention(#attention),
                        #gq.as_flattened_mut(), #store, &mut self.g.attention_work, threads,
                    );
                }
            }
            Step::Rope { field, input, output, heads, kv_heads } => {
                let dy = self.upstream(output);
                let f = format_ident!("{}", field);
                let (gi, store) = (code.grad(input), self.store(input));
                quote! {
                    #t::batch::rope_backward(&self.#f, #dy.as_flattened_mut(), batch, #heads, #kv_heads);
                    #store.put_slice(#gi.as_flattened_mut(), #dy.as_flattened());
                }
            }
            Step::Glu { input, output, act } => {
                let dy = self.upstream(output);
                let (si, gi, a, f) = (
                    code.saved(input),
                    code.grad(input),
                    runtime_activation(act),
                    code.plan.versions[output].width,
                );
                // `gated_backward` writes its gradient: the gate/up projection's output must feed
                // only the gated unit, so that this is its first and only contribution.
                if std::mem::replace(&mut self.written[input], true) {
                    quote!(::core::compile_error!("internal: a gated unit's input is read by another op too; its gradient would be overwritten");)
                } else {
                    quote!(#t::activation::gated_backward(#a, #si.as_flattened(), #dy.as_flattened(), #gi.as_flattened_mut(), #f);)
                }
            }
            Step::Gather { field, index: ix, offset, input, output } => {
                let dy = self.upstream(output);
                let idx = index(ix, offset);
                let table = match code.kind(field) {
                    FieldKind::Embedding { .. } => {
                        let w = code.params(field).weight_range();
                        quote!(#t::embedding::gather_backward(&#dy, &mut g[#w], |row| ::core::option::Option::Some(#idx));)
                    }
                    _ => TokenStream::new(),
                };
                let pass = input.map(|i| {
                    let (gi, store) = (code.grad(i), self.store(i));
                    quote!(#store.put_slice(#gi.as_flattened_mut(), #dy.as_flattened());)
                });
                quote!(#table #pass)
            }
            Step::Scale { input, output, factor } => {
                let dy = self.upstream(output);
                let (gi, store) = (code.grad(input), self.store(input));
                quote!(#store.put_scaled(#gi.as_flattened_mut(), #dy.as_flattened(), #factor);)
            }
            Step::Dropout { input, output, site } => {
                let dy = self.upstream(output);
                let (gi, store, m) = (code.grad(input), self.store(input), format_ident!("mask_{site}"));
                quote! {
                    if dropout.is_on() {
                        #t::dropout::dropout_backward(#dy.as_flattened(), dropout.p, &s.#m, #gi.as_flattened_mut(), #store)
                            .expect("the trainer checked the dropout probability");
                    } else {
                        #store.put_slice(#gi.as_flattened_mut(), #dy.as_flattened());
                    }
                }
            }
            Step::Activation { input, output, act } => {
                let dy = self.upstream(output);
                let (si, gi, store, a) =
                    (code.saved(input), code.grad(input), self.store(input), runtime_activation(act));
                quote! {
                    #t::activation::activation_backward(#a, #si.as_flattened(), #dy.as_flattened_mut());
                    #store.put_slice(#gi.as_flattened_mut(), #dy.as_flattened());
                }
            }
        };
        self.out.extend(statement);
    }

    /// A norm's backward from `dy` into the gradient of `input`.
    fn norm(&mut self, field: &str, input: usize, dy: TokenStream, stats: usize) -> TokenStream {
        let rt = rt();
        let t = quote!(#rt::train);
        let code = self.code;
        let (i, gi, store, st) =
            (code.saved(input), code.grad(input), self.store(input), format_ident!("stats_{stats}"));
        let fp = code.params(field);
        let w = fp.weight_range();
        match code.kind(field) {
            FieldKind::LayerNorm { .. } => {
                let b = fp.bias_range().expect("a LayerNorm has a bias");
                quote! {{
                    let (d_gamma, d_beta) = #t::params::two_mut(g, #w, #b);
                    #t::norm::layer_norm_backward(&#i, &s.#st, #t::params::array(&p[#w]), &#dy, &mut #gi, #store, #t::params::array_mut(d_gamma), #t::params::array_mut(d_beta));
                }}
            }
            FieldKind::RmsNorm { .. } => quote! {
                #t::norm::rms_norm_backward(&#i, &s.#st, #t::params::array(&p[#w]), &#dy, &mut #gi, #store, #t::params::array_mut(&mut g[#w]));
            },
            _ => unreachable!("norm ops read norm fields"),
        }
    }
}
