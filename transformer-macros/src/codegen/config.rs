//! What a preset generates to read checkpoints as users have them: `CONFIG` (its
//! [`crate::hf_config::expectations`] as runtime values), the `from_pretrained(dir)` that checks
//! config.json against them before loading the weights, and the renaming that reads a file saved
//! with transformers 5's module names ([`crate::graph::renames`]).

use proc_macro2::TokenStream;
use quote::quote;

use super::rt;
use crate::graph::{self, Rename};
use crate::hf_config::{self, Value};
use crate::spec::Spec;

/// The expectations of a preset as a `&[Expect]` expression, or `None` when its family has no
/// config.json to check.
fn expectations(spec: &Spec) -> Option<TokenStream> {
    let keys = hf_config::expectations(spec)?;
    let rt = rt();
    let items = keys.iter().map(|k| {
        let (names, declared, value) = (k.keys, &k.declared, setting(&k.value));
        let default = match &k.default {
            Some(d) => {
                let d = setting(d);
                quote!(::core::option::Option::Some(#d))
            }
            None => quote!(::core::option::Option::None),
        };
        quote!(#rt::config::Expect { keys: &[#(#names),*], declared: #declared, value: #value, default: #default })
    });
    Some(quote!(&[#(#items),*]))
}

fn setting(value: &Value) -> TokenStream {
    let rt = rt();
    let s = quote!(#rt::config::Setting);
    match value {
        Value::Int(i) => {
            let i = *i as i64;
            quote!(#s::Int(#i))
        }
        Value::Float(x) => quote!(#s::Float(#x)),
        Value::Bool(b) => quote!(#s::Bool(#b)),
        Value::Str(v) => quote!(#s::Str(#v)),
        Value::OneOf(options) => quote!(#s::OneOf(&[#(#options),*])),
        Value::Strs(items) => quote!(#s::Strs(&[#(#items),*])),
        Value::Ints(items) => {
            let items = items.iter().map(|&i| i as i64);
            quote!(#s::Ints(&[#(#items),*]))
        }
        Value::Count(n) => quote!(#s::Count(#n)),
        Value::Null => quote!(#s::Null),
    }
}

/// `CONFIG` and `from_pretrained(dir, …)`: the config check (for a family that has one), then the
/// directory's weights through the model's `Self::load(&mut loader, …)`; `extra` adds a family's
/// further inputs (a Reformer's rotations file).
pub(super) fn from_pretrained(spec: &Spec, extra: &Extra) -> TokenStream {
    let rt = rt();
    let expects = expectations(spec);
    let (check, config_doc) = match &expects {
        Some(_) => (
            quote!(#rt::config::check_file(&dir.join("config.json"), Self::CONFIG)?;),
            "`config.json` is compared with this declaration first ([`Self::CONFIG`]), and every key that differs is listed in one error — including those that change the numerics without changing a shape (an epsilon, the activation, a tied head's scaling, rope theta); then ",
        ),
        None => (
            TokenStream::new(),
            "this declaration has no Hugging Face config class to compare `config.json` with (a composed model, or `weights: torch`), so only ",
        ),
    };
    let expects = expects.unwrap_or_else(|| quote!(&[]));
    let doc = format!(
        "Loads the model from a checkpoint directory as Hugging Face saves it: {config_doc}the weights, from \
         `model.safetensors` or the shards of `model.safetensors.index.json`, every tensor's name and \
         shape checked."
    );
    let Extra { params, open, finish, args } = extra;
    quote! {
        /// What this declaration says about its checkpoint's `config.json`, key by key (empty when
        /// the family has no config class).
        pub const CONFIG: &'static [#rt::config::Expect] = #expects;

        #[doc = #doc]
        pub fn from_pretrained(dir: impl ::core::convert::AsRef<::std::path::Path> #params) -> #rt::Result<Self> {
            let dir = dir.as_ref();
            #check
            let mut loader = #rt::WeightLoader::open_dir(dir)?;
            #open
            let model = Self::load(&mut loader #args);
            loader.finish()?;
            #finish
            ::core::result::Result::Ok(model)
        }
    }
}

/// Further inputs of a family's `load` besides the checkpoint (a Reformer's rotations file).
#[derive(Default)]
pub(super) struct Extra {
    /// `, name: type` parameters of `from_pretrained`.
    pub params: TokenStream,
    /// Statements opening them.
    pub open: TokenStream,
    /// Statements ending them after loading.
    pub finish: TokenStream,
    /// `, &mut name` arguments of `load`.
    pub args: TokenStream,
}

/// `loader.rename(…)` for a preset whose checkpoints come in two generations of names (nothing
/// for a composed model, which names its own tensors).
pub(super) fn renames(spec: &Spec) -> TokenStream {
    let rt = rt();
    let rules = if spec.dims.is_some() { &[][..] } else { graph::renames(spec.weights) };
    if rules.is_empty() {
        return TokenStream::new();
    }
    let rules = rules.iter().map(|rule| match *rule {
        Rename::Segments { theirs, ours } => {
            quote!(#rt::weights::Rename::Segments { theirs: #theirs, ours: #ours })
        }
        Rename::Prefer { theirs, ours } => {
            quote!(#rt::weights::Rename::Prefer { theirs: #theirs, ours: #ours })
        }
    });
    quote!(loader.rename(&[#(#rules),*]);)
}
