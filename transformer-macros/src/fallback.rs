//! What a failed `model!` still emits: the model type with the same methods and unreachable
//! bodies, so user code that names it reports only the real error, not a cascade of "cannot find
//! type". (The compile error itself guarantees none of these bodies ever runs.)

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::{ModelInput, Value};

pub fn dummy(input: &ModelInput) -> TokenStream {
    let (attrs, vis, name) = (&input.attrs, &input.vis, &input.name);
    // Keep the user's width if it parses, so `[f32; 384]` in their code still type-checks.
    let d: usize = input
        .entries
        .iter()
        .find(|e| e.key == "d_model")
        .and_then(|e| match &e.value {
            Value::Int(l) => l.base10_parse().ok(),
            _ => None,
        })
        .filter(|&d| d > 0 && d <= 1 << 16)
        .unwrap_or(1);
    let v: usize = input
        .entries
        .iter()
        .find(|e| e.key == "vocab_size")
        .and_then(|e| match &e.value {
            Value::Int(l) => l.base10_parse().ok(),
            _ => None,
        })
        .filter(|&v| v > 0 && v <= 10_000_000)
        .unwrap_or(1);
    let rt = quote!(::transformer::__private);
    quote! {
        #(#attrs)*
        #vis struct #name {}

        #[allow(unused_variables, clippy::all)]
        impl #name {
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> { ::core::unreachable!() }
            pub fn load(loader: &mut #rt::WeightLoader) -> Self { ::core::unreachable!() }
            pub fn with_threads(self, threads: #rt::Threads) -> Self { ::core::unreachable!() }
            pub fn forward_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #d]]> { ::core::unreachable!() }
            pub fn embed_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #d]]> { ::core::unreachable!() }
            pub fn forward(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #d]>> { ::core::unreachable!() }
            pub fn embed(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #d]>> { ::core::unreachable!() }
            pub fn logits_into<'w>(&self, batch: &#rt::Batch, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn logits(&self, batch: &#rt::Batch) -> #rt::Result<::std::vec::Vec<[f32; #v]>> { ::core::unreachable!() }
            pub fn new_cache(&self, batch_size: usize) -> #rt::KvCache { ::core::unreachable!() }
            pub fn step_into<'w>(&self, batch: &#rt::Batch, cache: &mut #rt::KvCache, workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [[f32; #v]]> { ::core::unreachable!() }
            pub fn generate(&self, prompts: &[&[u32]], options: &#rt::GenerateOptions) -> #rt::Result<::std::vec::Vec<::std::vec::Vec<u32>>> { ::core::unreachable!() }
        }
    }
}
