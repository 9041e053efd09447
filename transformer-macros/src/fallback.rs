//! What a failed `model!` still emits: the model type with the same methods and unreachable
//! bodies, so user code that names it reports only the real error, not a cascade of "cannot find
//! type" or "no method". (The compile error itself guarantees none of these bodies ever runs.)

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::{ModelInput, Value};

/// The model type a declaration would have given, with unreachable bodies: a Reformer's, an
/// encoder-decoder's or a single stack's API.
pub fn dummy(input: &ModelInput) -> TokenStream {
    let (attrs, vis, name) = (&input.attrs, &input.vis, &input.name);
    // A width the user wrote validly keeps its value, so `[f32; 384]` in their code still
    // type-checks; an invalid one becomes a const parameter their own annotations decide.
    let (d_param, d) = width(input, "d_model", 1 << 16, quote!(D));
    let (v_param, v) = width(input, "vocab_size", 10_000_000, quote!(V));
    let rt = quote!(::transformer::__private);
    let int = |key: &str| int_value(input, key).unwrap_or(1);
    let (vocab, max_pos, heads, layers, d_ff) =
        (int("vocab_size"), int("max_positions"), int("heads"), int("layers"), int("d_ff"));
    let d_model = int("d_model");
    let head_dim = d_model / heads.max(1);
    if crate::check::reformer::declared(input) || crate::compose::is_reformer(input) {
        return reformer(input);
    }
    let composed_seq2seq = input.functions.iter().any(|f| f.name == "encode" || f.name == "decode");
    if composed_seq2seq || input.entries.iter().any(|e| e.key == "encoder" || e.key == "decoder") {
        return seq2seq(input, (d_param, d), (v_param, v));
    }
    quote! {
        #(#attrs)*
        #vis struct #name {}

        #[allow(unused_variables, clippy::all)]
        impl #name {
            pub const VOCAB_SIZE: usize = #vocab;
            pub const MAX_POSITIONS: usize = #max_pos;
            pub const D_MODEL: usize = #d_model;
            pub const HEADS: usize = #heads;
            pub const HEAD_DIM: usize = #head_dim;
            pub const LAYERS: usize = #layers;
            pub const D_FF: usize = #d_ff;
            pub const CONFIG: &'static [#rt::config::Expect] = &[];
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub fn from_pretrained(dir: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub fn load(loader: &mut #rt::WeightLoader) -> Self { ::core::unreachable!() }
            pub fn with_threads(self, threads: #rt::Threads) -> Self { ::core::unreachable!() }
            pub fn threads(&self) -> &#rt::Threads { ::core::unreachable!() }
            pub fn forward_into<'w, #d_param>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #d]]> { ::core::unreachable!() }
            pub fn embed_into<'w, #d_param>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #d]]> { ::core::unreachable!() }
            pub fn forward<#d_param>(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #d]>> { ::core::unreachable!() }
            pub fn embed<#d_param>(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #d]>> { ::core::unreachable!() }
            pub fn embed_texts<#d_param>(&self, tokenizer: &impl #rt::text::TextTokenizer, texts: &[&str]) -> #rt::Result<::std::vec::Vec<[f32; #d]>> { ::core::unreachable!() }
            pub fn embed_texts_with<#d_param>(&self, tokenizer: &impl #rt::text::TextTokenizer, texts: &[&str], truncation: #rt::text::Truncation) -> #rt::Result<::std::vec::Vec<[f32; #d]>> { ::core::unreachable!() }
            pub fn generate_text(&self, tokenizer: &impl #rt::text::TextTokenizer, prompt: &str, options: &#rt::GenerateOptions) -> #rt::Result<::std::string::String> { ::core::unreachable!() }
            pub fn generate_padded(&self, ids: #rt::ndarray::ArrayView2<'_, u32>, mask: #rt::ndarray::ArrayView2<'_, u32>, options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> { ::core::unreachable!() }
            pub fn forward_array(&self, batch: &#rt::Batch) -> #rt::Result<#rt::ndarray::Array3<f32>> { ::core::unreachable!() }
            pub fn embed_array(&self, batch: &#rt::Batch) -> #rt::Result<#rt::ndarray::Array2<f32>> { ::core::unreachable!() }
            pub fn logits_into<'w, #v_param>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn logits<#v_param>(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #v]>> { ::core::unreachable!() }
            pub fn new_cache(&self, batch_size: usize) -> #rt::KvCache { ::core::unreachable!() }
            pub fn step_into<'w, #v_param>(&self, batch: &#rt::Batch, cache: &mut #rt::KvCache, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn generate(&self, prompts: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> { ::core::unreachable!() }
        }
    }
}

/// `(generic parameter, width)`: nothing and the literal when `key` holds a valid integer, else
/// `const P: usize` and `P`.
fn width(input: &ModelInput, key: &str, max: usize, param: TokenStream) -> (TokenStream, TokenStream) {
    match int_value(input, key).filter(|&n| n <= max) {
        Some(n) => (quote!(), quote!(#n)),
        None => (quote!(const #param: usize), param),
    }
}

/// The positive integer written for `key`, if any.
fn int_value(input: &ModelInput, key: &str) -> Option<usize> {
    input
        .entries
        .iter()
        .find(|e| e.key == key)
        .and_then(|e| match &e.value {
            Value::Int(l) => l.base10_parse::<usize>().ok(),
            _ => None,
        })
        .filter(|&n| n > 0)
}

/// The encoder-decoder API with unreachable bodies.
fn seq2seq(
    input: &ModelInput,
    (d_param, d): (TokenStream, TokenStream),
    (v_param, v): (TokenStream, TokenStream),
) -> TokenStream {
    let (attrs, vis, name) = (&input.attrs, &input.vis, &input.name);
    let rt = quote!(::transformer::__private);
    let conditioned = quote::format_ident!("{}Conditioned", name);
    let vocab = int_value(input, "vocab_size").unwrap_or(1);
    let max_pos = int_value(input, "max_positions").unwrap_or(1);
    quote! {
        #(#attrs)*
        #vis struct #name {}

        #[allow(unused_variables, clippy::all)]
        impl #name {
            pub const VOCAB_SIZE: usize = #vocab;
            pub const MAX_POSITIONS: usize = #max_pos;
            pub const DECODER_START: u32 = 0;
            pub const CONFIG: &'static [#rt::config::Expect] = &[];
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub fn from_pretrained(dir: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub fn load(loader: &mut #rt::WeightLoader) -> Self { ::core::unreachable!() }
            pub fn with_threads(self, threads: #rt::Threads) -> Self { ::core::unreachable!() }
            pub fn threads(&self) -> &#rt::Threads { ::core::unreachable!() }
            pub fn encode_into<'w, #d_param>(&self, sources: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #d]]> { ::core::unreachable!() }
            pub fn encode(&self, sources: &#rt::Batch) -> #rt::Result<#rt::EncoderMemory> { ::core::unreachable!() }
            pub fn encoder_hidden<'m, #d_param>(&self, memory: &'m #rt::EncoderMemory) -> &'m [[f32; #d]] { ::core::unreachable!() }
            pub fn logits_into<'w, #v_param>(&self, memory: &#rt::EncoderMemory, targets: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn logits<#v_param>(&self, memory: &#rt::EncoderMemory, targets: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #v]>> { ::core::unreachable!() }
            pub fn new_cache(&self, batch_size: usize) -> #rt::KvCache { ::core::unreachable!() }
            pub fn step_into<'w, #v_param>(&self, memory: &#rt::EncoderMemory, batch: &#rt::Batch, cache: &mut #rt::KvCache, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn conditioned<'m>(&'m self, memory: &'m #rt::EncoderMemory) -> #conditioned<'m> { ::core::unreachable!() }
            pub fn generate(&self, sources: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> { ::core::unreachable!() }
        }

        #vis struct #conditioned<'m>(&'m #name);
    }
}

/// A Reformer's API with unreachable bodies.
fn reformer(input: &ModelInput) -> TokenStream {
    let (attrs, vis, name) = (&input.attrs, &input.vis, &input.name);
    let (v_param, v) = width(input, "vocab_size", 10_000_000, quote!(V));
    let rt = quote!(::transformer::__private);
    let vocab = int_value(input, "vocab_size").unwrap_or(1);
    let max_pos = int_value(input, "max_positions").unwrap_or(1);
    quote! {
        #(#attrs)*
        #vis struct #name {}

        #[allow(unused_variables, clippy::all)]
        impl #name {
            pub const VOCAB_SIZE: usize = #vocab;
            pub const MAX_POSITIONS: usize = #max_pos;
            pub fn from_safetensors(model: impl ::core::convert::AsRef<::std::path::Path>, rotations: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub const CONFIG: &'static [#rt::config::Expect] = &[];
            pub fn from_pretrained(dir: impl ::core::convert::AsRef<::std::path::Path>, rotations: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub fn load(loader: &mut #rt::WeightLoader, rotations: &mut #rt::WeightLoader) -> Self { ::core::unreachable!() }
            pub fn with_threads(self, threads: #rt::Threads) -> Self { ::core::unreachable!() }
            pub fn threads(&self) -> &#rt::Threads { ::core::unreachable!() }
            pub fn logits_into<'w, #v_param>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn logits<#v_param>(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #v]>> { ::core::unreachable!() }
            pub fn generate(&self, prompts: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> { ::core::unreachable!() }
        }
    }
}
