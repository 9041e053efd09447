//! The trainer a `training: …` declaration asks for, generated from the same op graph as the model:
//! each block's ops become a [`plan`] of versioned steps, whose forward and backward [`block`]
//! writes, and the parameters get one flat layout fixed here — every tensor at a constant offset,
//! under its checkpoint name — that the optimizer, clipping and saving share.
//!
//! An op or a field without a training path is a compile error under the `training` value,
//! naming what is missing: gradients are never silently dropped.

mod block;
mod plan;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::LitStr;

use self::block::{BlockCode, FieldParams};
use self::plan::{Dropouts, Plan};
use super::{block_ident, config, rt};
use crate::graph;
use crate::graph::{Block, Field, FieldKind, Graph, Layout};
use crate::spec::{LmHead, Spec, WeightScheme};
use crate::training::{Objective, Training};

/// The standard deviation of a matrix or embedding trained from scratch (transformers'
/// `initializer_range` default for GPT-2, LLaMA and BERT).
const INIT_STD: f32 = 0.02;

/// The trainer of a single-stack model, or the compile error saying why there is none.
pub fn generate(spec: &Spec, graph: &Graph, training: &Training) -> TokenStream {
    match trainer(spec, graph, training) {
        Ok(code) => code,
        Err(message) => syn::Error::new(training.span, message).into_compile_error(),
    }
}

/// One block as the trainer lays it out: its plan, its fields' places, its specs' code.
struct Laid<'g> {
    block: &'g Block,
    plan: Plan,
    fields: Vec<(&'static str, FieldParams)>,
    /// Statements pushing the block's tensor specs (with `prefix` in scope).
    specs: Vec<TokenStream>,
    len: usize,
}

fn trainer(spec: &Spec, graph: &Graph, training: &Training) -> Result<TokenStream, String> {
    if !graph.other_layers.is_empty() {
        return Err("training: models whose layers differ in their fields have no trainer yet".into());
    }
    let masked_lm_head;
    let (head, tied): (Option<&Block>, bool) = match training.objective {
        Objective::CausalLm => {
            let head = graph.head.as_ref().filter(|_| spec.is_decoder() && graph.head_field == "lm_head");
            let head = head.ok_or(
                "`training: causal_lm` trains a decoder through its LM head (`attention: causal` with `lm_head`); a BERT encoder trains with `training: masked_lm`",
            )?;
            (Some(head), spec.lm_head == Some(LmHead::Tied))
        }
        Objective::MaskedLm => {
            if spec.is_decoder() || spec.weights != WeightScheme::Bert || graph.head.is_some() {
                return Err("`training: masked_lm` trains a BERT encoder (`weights: bert`, `attention: bidirectional`, no head) through BertForMaskedLM's head".into());
            }
            masked_lm_head = graph::masked_lm_head(spec);
            (Some(&masked_lm_head), true)
        }
        Objective::Contrastive => {
            if spec.is_decoder() || graph.head.is_some() {
                return Err("`training: contrastive` trains an encoder's sentence embeddings (`attention: bidirectional`, no head)".into());
            }
            (None, false)
        }
    };
    let mut offset = 0;
    let embeddings = lay(&graph.embeddings, &mut offset, None, Dropouts::Output)?;
    let layers_base = offset;
    let mut layer_offset = 0;
    let layer = lay(&graph.layer, &mut layer_offset, None, Dropouts::Residual)?;
    offset += layer.len * graph.layers;
    let final_norm =
        graph.final_norm.as_ref().map(|b| lay(b, &mut offset, None, Dropouts::None)).transpose()?;
    let word = embeddings
        .fields
        .iter()
        .find(|(n, _)| *n == "word_embeddings")
        .map(|(_, p)| FieldParams { tied: true, ..*p });
    let head = head
        .map(|head| {
            let tied_field = head
                .fields
                .iter()
                .find(|f| matches!(f.kind, FieldKind::Linear { output, .. } if output == spec.vocab_size));
            let tie = match (tied, tied_field, word) {
                (false, _, _) => None,
                (true, Some(f), Some(word)) => Some((f.name, word)),
                (true, _, _) => return Err("training: a tied head needs the token embeddings".to_string()),
            };
            lay(head, &mut offset, tie, Dropouts::None)
        })
        .transpose()?;
    let total = offset;
    let blocks = [Some(&embeddings), Some(&layer), final_norm.as_ref(), head.as_ref()];
    let codes: Vec<TokenStream> =
        blocks.iter().flatten().map(|l| block::block(&block_code(spec, l))).collect();
    let laid = Stack {
        embeddings: &embeddings,
        layer: &layer,
        layers_base,
        final_norm: final_norm.as_ref(),
        head: head.as_ref(),
        total,
    };
    let trainer = trainer_type(spec, graph, &laid, training.objective);
    Ok(quote! {
        #trainer
        #(#codes)*
    })
}

/// Every block of a single-stack trainer, laid out.
struct Stack<'l, 'g> {
    embeddings: &'l Laid<'g>,
    layer: &'l Laid<'g>,
    /// The first layer's offset; layer `i` starts at `layers_base + i · layer.len`.
    layers_base: usize,
    final_norm: Option<&'l Laid<'g>>,
    /// The LM head (none for sentence embeddings, which pool the stream instead).
    head: Option<&'l Laid<'g>>,
    total: usize,
}

fn block_code<'a>(spec: &Spec, laid: &'a Laid<'a>) -> BlockCode<'a> {
    let base = block_ident(spec, laid.block);
    BlockCode {
        block: laid.block,
        plan: &laid.plan,
        fields: &laid.fields,
        train_ty: format_ident!("{}Train", base),
        saved_ty: format_ident!("{}Saved", base),
        grads_ty: format_ident!("{}Grads", base),
        d: spec.d_model,
    }
}

/// Lays out `block`'s tensors from `*offset` (advanced past them); `tied`: this field's weight
/// is that place (the token embeddings) instead of a tensor of its own.
fn lay<'g>(
    block: &'g Block,
    offset: &mut usize,
    tied: Option<(&'static str, FieldParams)>,
    dropouts: Dropouts,
) -> Result<Laid<'g>, String> {
    let plan = plan::plan(block, dropouts).map_err(|m| format!("training: {m} (in `{}`)", block.suffix))?;
    let start = *offset;
    let mut fields = Vec::new();
    let mut specs = Vec::new();
    for f in &block.fields {
        let field_specs = match tied {
            Some((name, word)) if name == f.name => tied_field(f, word, *offset - start),
            _ => lay_field(f, *offset - start)?,
        };
        if let Some((params, field_specs)) = field_specs {
            *offset += field_len(&params);
            fields.push((f.name, params));
            specs.extend(field_specs);
        }
    }
    Ok(Laid { block, plan, fields, specs, len: *offset - start })
}

/// A head tied to the token embeddings: their place for the weight, and the bias beside it when
/// the head has one (BERT's `cls.predictions.bias`) laid out at `at`.
fn tied_field(f: &Field, word: FieldParams, at: usize) -> Option<(FieldParams, Vec<TokenStream>)> {
    let rt = rt();
    let t = quote!(#rt::train::params);
    match f.kind {
        FieldKind::Linear { output, layout: Layout::BiasBeside { bias }, .. } => {
            let spec = quote!(specs.push(#t::TensorSpec::new(
                #rt::weights::join(&prefix, #bias), &[#output], #t::Stored::AsIs, false, #t::Init::Zeros
            )););
            // The weight's length counts in the tied embeddings; only the bias is laid out here.
            Some((FieldParams { weight: word.weight, bias: Some((at, output)), tied: true }, vec![spec]))
        }
        _ => Some((FieldParams { bias: None, ..word }, vec![])),
    }
}

/// Values a field lays out in its block (a tied weight lives in the embeddings).
fn field_len(p: &FieldParams) -> usize {
    (if p.tied { 0 } else { p.weight.1 }) + p.bias.map_or(0, |b| b.1)
}

/// A field's place (relative to its block, from `at`) and the statements pushing its specs;
/// `None` for a field with nothing to train (rotary tables, sinusoidal positions).
fn lay_field(f: &Field, at: usize) -> Result<Option<(FieldParams, Vec<TokenStream>)>, String> {
    let rt = rt();
    let t = quote!(#rt::train::params);
    // Matrices and embeddings decay and start normal; vectors are biases (zeros) or norm
    // scales (ones, `init_ones`).
    let spec_init = |name: TokenStream, shape: &[usize], transposed: bool, init_ones: bool| {
        let stored = if transposed { quote!(#t::Stored::Transposed) } else { quote!(#t::Stored::AsIs) };
        let decay = shape.len() == 2;
        let init = match (decay, init_ones) {
            (true, _) => quote!(#t::Init::Normal(#INIT_STD)),
            (false, true) => quote!(#t::Init::Ones),
            (false, false) => quote!(#t::Init::Zeros),
        };
        quote!(specs.push(#t::TensorSpec::new(#name, &[#(#shape),*], #stored, #decay, #init));)
    };
    let spec =
        |name: TokenStream, shape: &[usize], transposed: bool| spec_init(name, shape, transposed, false);
    let name = |relative: &str, suffix: &str| {
        let relative = match (relative.is_empty(), suffix.is_empty()) {
            (_, true) => relative.to_string(),
            (true, false) => suffix.to_string(),
            (false, false) => format!("{relative}.{suffix}"),
        };
        quote!(#rt::weights::join(&prefix, #relative))
    };
    Ok(Some(match f.kind {
        FieldKind::Linear { input, output, bias, layout } => {
            let (parts, transposed): (Vec<usize>, bool) = match layout {
                Layout::Torch if !f.split.is_empty() => (f.split.clone(), false),
                Layout::Torch => (vec![output / f.weights.len(); f.weights.len()], false),
                Layout::Conv1d => (vec![output], true),
                other => {
                    return Err(format!(
                        "training: the checkpoint layout {other:?} of `{}` has no trainer yet",
                        f.name
                    ))
                }
            };
            let mut specs: Vec<TokenStream> = f
                .weights
                .iter()
                .zip(&parts)
                .map(|(w, &rows)| spec(name(w, "weight"), &[rows, input], transposed))
                .collect();
            if bias {
                specs.extend(
                    f.weights.iter().zip(&parts).map(|(w, &rows)| spec(name(w, "bias"), &[rows], false)),
                );
            }
            let weight = (at, output * input);
            let params =
                FieldParams { weight, bias: bias.then_some((at + output * input, output)), tied: false };
            (params, specs)
        }
        FieldKind::LayerNorm { width, .. } => {
            let specs = vec![
                spec_init(name(f.weights[0], "weight"), &[width], false, true),
                spec(name(f.weights[0], "bias"), &[width], false),
            ];
            (FieldParams { weight: (at, width), bias: Some((at + width, width)), tied: false }, specs)
        }
        FieldKind::RmsNorm { width, .. } => (
            FieldParams { weight: (at, width), bias: None, tied: false },
            vec![spec_init(name(f.weights[0], "weight"), &[width], false, true)],
        ),
        FieldKind::Embedding { rows, width, batched: false } => (
            FieldParams { weight: (at, rows * width), bias: None, tied: false },
            vec![spec(name(f.weights[0], "weight"), &[rows, width], false)],
        ),
        FieldKind::Rope { .. } | FieldKind::Sinusoidal { .. } => return Ok(None),
        FieldKind::Alibi { .. } => {
            return Err("training: ALiBi's attention bias has no backward yet (`positions: alibi`)".into())
        }
        FieldKind::RelativeBias { .. } => {
            return Err("training: relative position buckets have no backward yet (no gradient into the bias table; `positions: relative`)".into())
        }
        _ => return Err(format!("training: the field `{}` has no trainer yet", f.name)),
    }))
}

/// The statements building the parameter table: every block's specs under its prefix.
fn table(graph: &Graph, blocks: &[&Laid<'_>]) -> TokenStream {
    let rt = rt();
    let prefix_of = |b: &Block| {
        let p = b.prefix;
        if b.rooted {
            quote!(#rt::weights::join(root, #p))
        } else {
            quote!(::std::string::String::from(#p))
        }
    };
    let mut out = TokenStream::new();
    for laid in blocks {
        let specs = &laid.specs;
        if std::ptr::eq(laid.block, &graph.layer) {
            let layer_prefix = LitStr::new(graph.layer.prefix, Span::call_site());
            let n = graph.layers;
            out.extend(quote! {
                for i in 0..#n {
                    let prefix = #rt::weights::join(root, &format!(#layer_prefix));
                    #(#specs)*
                }
            });
        } else {
            let prefix = prefix_of(laid.block);
            out.extend(quote!({
                let prefix = #prefix;
                #(#specs)*
            }));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn trainer_type(spec: &Spec, graph: &Graph, laid: &Stack<'_, '_>, objective: Objective) -> TokenStream {
    let Stack { embeddings, layer, layers_base, final_norm, head, total } = *laid;
    let rt = rt();
    let (vis, name) = (&spec.vis, &spec.name);
    let trainer = format_ident!("{}Trainer", name);
    let d = spec.d_model;
    let n_layers = graph.layers;
    let layer_len = layer.len;
    let ty = |l: &Laid<'_>, suffix: &str| format_ident!("{}{}", block_ident(spec, l.block), suffix);
    let (emb_train, emb_saved) = (ty(embeddings, "Train"), ty(embeddings, "Saved"));
    let (layer_train, layer_saved) = (ty(layer, "Train"), ty(layer, "Saved"));
    let tail = match head {
        Some(head) => head_tail(spec, head, total, ty(head, "Train"), ty(head, "Saved")),
        None => pooled_tail(spec),
    };
    let Tail {
        fields: tail_fields,
        init: tail_init,
        resize: tail_resize,
        forward_loss,
        backward: tail_backward,
    } = tail;
    let blocks: Vec<&Laid<'_>> =
        [Some(embeddings), Some(layer), final_norm, head].into_iter().flatten().collect();
    let table = table(graph, &blocks);
    let renames = config::renames(spec);
    // BertForMaskedLM keeps the encoder under `bert.` and its head under `cls.`.
    let roots = match objective {
        Objective::CausalLm | Objective::Contrastive => graph.roots,
        Objective::MaskedLm => &["bert", ""],
    };
    let type_vocab = match spec.type_vocab_size {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let api = objective_api(objective);
    let architecture = architecture(spec, objective);
    // A model from scratch is named as its family's plainest save: GPT-2's `GPT2LMHeadModel`
    // (`transformer.`), BertForMaskedLM's `bert.`, otherwise the first root.
    let default_root = roots.first().copied().unwrap_or("");
    let (fn_def, fn_init, fn_resize, fn_forward, fn_backward) = match final_norm {
        Some(f) => {
            let (ft, fs) = (ty(f, "Train"), ty(f, "Saved"));
            let base = layers_base + layer_len * n_layers;
            (
                quote!(final_norm: #ft, final_norm_saved: #fs,),
                quote!(final_norm: #ft::new(), final_norm_saved: ::core::default::Default::default(),),
                quote!(self.final_norm_saved.resize(rows); self.final_norm.g.resize(batch);),
                quote!(self.final_norm.forward(&mut self.final_norm_saved, p, #base, &mut self.x, batch, &off, &self.threads);),
                quote!(self.final_norm.backward(&self.final_norm_saved, p, #base, g, &mut self.dx, &[], batch, &off, &self.threads);),
            )
        }
        None => Default::default(),
    };
    let task = match objective {
        Objective::CausalLm => "next-token prediction",
        Objective::MaskedLm => "masked language modelling (through `BertForMaskedLM`'s head)",
        Objective::Contrastive => {
            "sentence-embedding contrastive learning (mean pooling, L2 normalisation and \
             sentence-transformers' MultipleNegativesRankingLoss)"
        }
    };
    let doc = format!(
        "Trains [`{name}`] on {task}: the forward and backward of every block, generated from the \
         model's op graph, over {total} parameters in one flat buffer under their checkpoint names."
    );
    quote! {
        #[doc = #doc]
        #vis struct #trainer {
            table: #rt::train::params::ParamTable,
            params: ::std::vec::Vec<f32>,
            grads: ::std::vec::Vec<f32>,
            embeddings: #emb_train,
            embeddings_saved: #emb_saved,
            layer: #layer_train,
            layers_saved: ::std::vec::Vec<#layer_saved>,
            #fn_def
            #tail_fields
            x: ::std::vec::Vec<[f32; #d]>,
            dx: ::std::vec::Vec<[f32; #d]>,
            labels: ::std::vec::Vec<i64>,
            row_loss: ::std::vec::Vec<f32>,
            threads: #rt::Threads,
            step: u64,
            dropout: f32,
            dropout_seed: u64,
            accumulator: #rt::train::accumulate::Accumulator,
        }

        impl ::core::fmt::Debug for #trainer {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(stringify!(#trainer))
                    .field("parameters", &self.params.len())
                    .field("step", &self.step)
                    .finish_non_exhaustive()
            }
        }

        impl #trainer {
            /// Values in the flat parameter buffer.
            pub const PARAMETERS: usize = #total;

            /// The parameter table under the checkpoint's names, below `root`.
            pub fn parameter_table(root: &str) -> #rt::train::params::ParamTable {
                let mut specs = ::std::vec::Vec::new();
                #table
                #rt::train::params::ParamTable::new(specs)
            }

            /// Loads every trainable tensor from `loader` (problems are recorded there: call
            /// `loader.finish()`).
            pub fn load(loader: &mut #rt::WeightLoader) -> Self {
                #renames
                let root = #rt::weights::detect_root(loader, &[#(#roots),*]);
                for name in #name::IGNORED_TENSORS {
                    if name.contains("{i}") {
                        for i in 0..#n_layers {
                            loader.ignore(&#rt::weights::join(root, &name.replace("{i}", &i.to_string())));
                        }
                    } else {
                        loader.ignore(&#rt::weights::join(root, name));
                    }
                }
                let table = Self::parameter_table(root);
                debug_assert_eq!(table.len(), Self::PARAMETERS, "the table and the generated offsets agree");
                let params = table.load(loader);
                Self::with_params(table, params)
            }

            fn with_params(table: #rt::train::params::ParamTable, params: ::std::vec::Vec<f32>) -> Self {
                Self {
                    grads: ::std::vec![0.0; params.len()],
                    params,
                    table,
                    embeddings: #emb_train::new(),
                    embeddings_saved: ::core::default::Default::default(),
                    layer: #layer_train::new(),
                    layers_saved: (0..#n_layers).map(|_| ::core::default::Default::default()).collect(),
                    #fn_init
                    #tail_init
                    x: ::std::vec::Vec::new(),
                    dx: ::std::vec::Vec::new(),
                    labels: ::std::vec::Vec::new(),
                    row_loss: ::std::vec::Vec::new(),
                    threads: #rt::Threads::sequential(),
                    step: 0,
                    dropout: 0.0,
                    dropout_seed: 0,
                    accumulator: ::core::default::Default::default(),
                }
            }

            /// A model trained from scratch: every matrix and embedding drawn from N(0, 0.02²), norm
            /// scales ones, biases zeros (transformers' `_init_weights`), from a generator seeded
            /// with `seed`. Tensors are named as the family's head model saves them (GPT-2's
            /// `transformer.…`, LLaMA's `model.…`, BertForMaskedLM's `bert.…`).
            pub fn from_scratch(seed: u64) -> Self {
                let table = Self::parameter_table(#default_root);
                let params = table.init(seed);
                Self::with_params(table, params)
            }

            /// Loads a safetensors file, every tensor's name and shape checked.
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
                let mut loader = #rt::WeightLoader::open(path)?;
                let trainer = Self::load(&mut loader);
                loader.finish()?;
                ::core::result::Result::Ok(trainer)
            }

            /// Loads a checkpoint directory as the model's `from_pretrained` does, `config.json`
            /// checked against the declaration first.
            pub fn from_pretrained(dir: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<Self> {
                let dir = dir.as_ref();
                #rt::config::check_file(&dir.join("config.json"), #name::CONFIG)?;
                let mut loader = #rt::WeightLoader::open_dir(dir)?;
                let trainer = Self::load(&mut loader);
                loader.finish()?;
                ::core::result::Result::Ok(trainer)
            }

            /// Drops out, in training steps only, the embeddings' output and each sublayer's output
            /// before its residual add with probability `p` (GPT-2's `embd_pdrop` and
            /// `resid_pdrop`, BERT's `hidden_dropout_prob`), kept values scaled by `1/(1−p)`. The
            /// masks are drawn from `seed`, the step and the site, so a run is reproducible
            /// whatever the thread count. [`Self::evaluate`] never drops. `p` outside `[0, 1)` is
            /// an error naming it.
            pub fn with_dropout(mut self, p: f32, seed: u64) -> #rt::Result<Self> {
                self.dropout = #rt::train::dropout::check_probability(p)?;
                self.dropout_seed = seed;
                ::core::result::Result::Ok(self)
            }

            /// Uses `threads` for every later step.
            pub fn with_threads(mut self, threads: #rt::Threads) -> Self {
                self.threads = threads;
                self
            }

            /// Every tensor's name, shape and place in [`Self::params`] and [`Self::grads`].
            pub fn table(&self) -> &#rt::train::params::ParamTable {
                &self.table
            }

            /// All parameters, flat, in [`Self::table`]'s order.
            pub fn params(&self) -> &[f32] {
                &self.params
            }

            /// All parameters, mutably (the optimizer's view).
            pub fn params_mut(&mut self) -> &mut [f32] {
                &mut self.params
            }

            /// The gradients of the last [`Self::loss_and_grads`], laid out as [`Self::params`].
            pub fn grads(&self) -> &[f32] {
                &self.grads
            }

            /// One parameter tensor by its checkpoint name (in the trainer's layout: `[out, in]`).
            pub fn param(&self, name: &str) -> ::core::option::Option<&[f32]> {
                self.table.range_of(name).map(|r| &self.params[r])
            }

            /// One tensor's gradient by its checkpoint name.
            pub fn grad(&self, name: &str) -> ::core::option::Option<&[f32]> {
                self.table.range_of(name).map(|r| &self.grads[r])
            }

            /// Optimizer steps taken.
            pub fn steps(&self) -> u64 {
                self.step
            }

            /// An AdamW over this model's parameters: matrices and embeddings in the decay group,
            /// norms and biases not.
            pub fn optimizer(&self, config: #rt::train::optim::AdamWConfig) -> #rt::Result<#rt::train::optim::AdamW> {
                ::core::result::Result::Ok(#rt::train::optim::AdamW::new(config, &self.table.optimizer_specs())?)
            }

            /// Saves the parameters as safetensors under the checkpoint's names and layouts, so
            /// that Hugging Face transformers (and the model's `from_safetensors`) load them.
            pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<()> {
                self.table.save(&self.params, path.as_ref())
            }

            /// Saves a checkpoint directory as Hugging Face's `save_pretrained` writes one:
            /// `model.safetensors` ([`Self::save`]) and the `config.json` this declaration
            /// implies (with the transformers class in `architectures`), which the model's `from_pretrained` and
            /// transformers' both read. Creates `dir` if needed.
            pub fn save_pretrained(&self, dir: impl ::core::convert::AsRef<::std::path::Path>) -> #rt::Result<()> {
                let dir = dir.as_ref();
                let io = |source| #rt::Error::from(#rt::WeightError::Io { path: dir.to_path_buf(), source });
                ::std::fs::create_dir_all(dir).map_err(io)?;
                self.save(dir.join("model.safetensors"))?;
                let config = #rt::config::config_json(#name::CONFIG, #architecture);
                let text = ::std::format!("{:#}\n", config);
                ::std::fs::write(dir.join("config.json"), text).map_err(io)
            }

            /// Saves everything a run needs to continue: the [`Self::save_pretrained`] directory
            /// plus `optimizer.safetensors` (AdamW's moments, configuration and step count).
            /// [`Self::resume`] reads it back.
            pub fn save_checkpoint(
                &self,
                dir: impl ::core::convert::AsRef<::std::path::Path>,
                optimizer: &#rt::train::optim::AdamW,
            ) -> #rt::Result<()> {
                let dir = dir.as_ref();
                self.save_pretrained(dir)?;
                ::core::result::Result::Ok(optimizer.save(&dir.join("optimizer.safetensors"))?)
            }

            /// Continues a run [`Self::save_checkpoint`] saved: the weights (config.json checked as
            /// by `from_pretrained`), the optimizer with its moments and step count, and the step
            /// counter (so dropout draws the masks of the steps to come, not the first ones'). The
            /// thread count and dropout are not saved: set them again (`with_threads`,
            /// `with_dropout`). Then the steps that follow are, bit for bit, those the saved run
            /// would have taken.
            pub fn resume(
                dir: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> #rt::Result<(Self, #rt::train::optim::AdamW)> {
                let dir = dir.as_ref();
                let mut trainer = Self::from_pretrained(dir)?;
                let optimizer = #rt::train::optim::AdamW::load(&dir.join("optimizer.safetensors"), &trainer.table.optimizer_specs())?;
                trainer.step = optimizer.step_count();
                ::core::result::Result::Ok((trainer, optimizer))
            }

            /// Checks `batch` against the declaration and sizes every buffer for it.
            fn prepare(&mut self, batch: &#rt::Batch) -> #rt::Result<()> {
                batch.validate(#name::VOCAB_SIZE, #name::MAX_POSITIONS, #type_vocab)?;
                let rows = batch.rows();
                self.x.resize(rows, [0.0; #d]);
                self.dx.resize(rows, [0.0; #d]);
                self.labels.resize(rows, 0);
                self.row_loss.resize(rows, 0.0);
                self.embeddings_saved.resize(rows);
                self.embeddings.g.resize(batch);
                for saved in &mut self.layers_saved {
                    saved.resize(rows);
                }
                self.layer.g.resize(batch);
                #fn_resize
                #tail_resize
                ::core::result::Result::Ok(())
            }

            #api

            /// The forward and the loss over `self.labels`; when `train`, with dropout and the
            /// backward into `self.grads`.
            fn run(&mut self, batch: &#rt::Batch, train: bool) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                let off = #rt::train::dropout::BlockDropout::off();
                let dropout = if train {
                    // Micro-batches of one accumulated step draw different masks.
                    let micro = self.accumulator.micro_batches() as u64;
                    let seed = self.dropout_seed.wrapping_add(micro.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    #rt::train::dropout::BlockDropout { p: self.dropout, seed, step: self.step, block: 0 }
                } else {
                    off
                };
                if train {
                    self.grads.fill(0.0);
                }
                let p = &self.params[..];
                self.embeddings.forward(&mut self.embeddings_saved, p, 0, &mut self.x, batch, &dropout, &self.threads);
                for (i, saved) in self.layers_saved.iter_mut().enumerate() {
                    let dropout = dropout.of_block(1 + i as u64);
                    self.layer.forward(saved, p, #layers_base + i * #layer_len, &mut self.x, batch, &dropout, &self.threads);
                }
                #fn_forward
                #forward_loss
                if !loss.loss.is_finite() {
                    return ::core::result::Result::Err(#rt::Error::NonFiniteLoss { step: self.step + 1, loss: loss.loss });
                }
                if !train {
                    return ::core::result::Result::Ok(loss);
                }
                // Backward: the loss's gradient through the head (or the pooling), the final norm
                // and every layer in reverse, into the embeddings.
                let g = &mut self.grads[..];
                #tail_backward
                #fn_backward
                for (i, saved) in self.layers_saved.iter().enumerate().rev() {
                    let dropout = dropout.of_block(1 + i as u64);
                    self.layer.backward(saved, p, #layers_base + i * #layer_len, g, &mut self.dx, &[], batch, &dropout, &self.threads);
                }
                self.embeddings.backward(&self.embeddings_saved, p, 0, g, &mut self.dx, &[], batch, &dropout, &self.threads);
                ::core::result::Result::Ok(loss)
            }

            /// One training step over the micro-batches given to `accumulate` since the last one:
            /// their gradients combined into the gradient of the mean loss over all their labelled
            /// rows (as one pass over them all would give), then clipping and `optimizer`'s update
            /// as in `step`. The report's loss and `labelled` are the whole batch's.
            /// [`Error::NothingAccumulated`](#rt::Error::NothingAccumulated) when nothing was
            /// accumulated.
            pub fn step_accumulated(
                &mut self,
                optimizer: &mut #rt::train::optim::AdamW,
                lr: f64,
                max_grad_norm: ::core::option::Option<f32>,
            ) -> #rt::Result<#rt::train::StepReport> {
                let loss = self.accumulator.finish(&mut self.grads)?;
                self.update(loss, optimizer, lr, max_grad_norm)
            }

            /// Micro-batches accumulated since the last step.
            pub fn accumulated(&self) -> usize {
                self.accumulator.micro_batches()
            }

            /// Clipping and the optimizer's update after a loss and its gradients; a NaN or
            /// infinite gradient norm is an error and leaves the weights untouched.
            fn update(
                &mut self,
                loss: #rt::train::loss::CrossEntropy,
                optimizer: &mut #rt::train::optim::AdamW,
                lr: f64,
                max_grad_norm: ::core::option::Option<f32>,
            ) -> #rt::Result<#rt::train::StepReport> {
                let norm = #rt::train::optim::clip_grad_norm(&mut self.grads, max_grad_norm.unwrap_or(f32::INFINITY));
                let grad_norm = norm.finite()?;
                optimizer.step(&mut self.params, &self.grads, lr)?;
                self.step += 1;
                ::core::result::Result::Ok(#rt::train::StepReport { step: self.step, loss: loss.loss, labelled: loss.labelled, grad_norm, lr })
            }
        }
    }
}

/// The public loss and step methods of an objective: how its labels are made.
fn objective_api(objective: Objective) -> TokenStream {
    let rt = rt();
    let report = quote!(#rt::Result<#rt::train::StepReport>);
    let optimizer =
        quote!(optimizer: &mut #rt::train::optim::AdamW, lr: f64, max_grad_norm: ::core::option::Option<f32>);
    match objective {
        Objective::CausalLm => quote! {
            /// The mean next-token cross-entropy over `batch`'s real tokens (each position predicts
            /// the next real token of its sequence; padding and each sequence's last token are not
            /// labelled) and every parameter's gradient, in [`Self::grads`]. After the first call at
            /// a batch shape, nothing is allocated.
            pub fn loss_and_grads(&mut self, batch: &#rt::Batch) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                self.prepare(batch)?;
                #rt::train::loss::next_token_labels(batch.ids(), ::core::option::Option::Some(batch.mask()), batch.seq_len(), &mut self.labels)?;
                self.run(batch, true)
            }

            /// The loss of [`Self::loss_and_grads`] in evaluation mode: no dropout, no gradient
            /// (those of the last training call are kept).
            pub fn evaluate(&mut self, batch: &#rt::Batch) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                self.prepare(batch)?;
                #rt::train::loss::next_token_labels(batch.ids(), ::core::option::Option::Some(batch.mask()), batch.seq_len(), &mut self.labels)?;
                self.run(batch, false)
            }

            /// One training step: [`Self::loss_and_grads`], global-norm clipping to
            /// `max_grad_norm` (when given), then `optimizer`'s update at learning rate `lr`. A NaN
            /// or infinite loss or gradient norm is an error and leaves the weights untouched.
            pub fn step(&mut self, batch: &#rt::Batch, #optimizer) -> #report {
                let loss = self.loss_and_grads(batch)?;
                self.update(loss, optimizer, lr, max_grad_norm)
            }

            /// Gradient accumulation: [`Self::loss_and_grads`] on one micro-batch, its gradients added
            /// (weighted by its labelled rows) to those accumulated since the last
            /// [`Self::step_accumulated`], which then takes the step. Returns this micro-batch's
            /// loss.
            pub fn accumulate(&mut self, batch: &#rt::Batch) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                let loss = self.loss_and_grads(batch)?;
                self.accumulator.add(&self.grads, loss);
                ::core::result::Result::Ok(loss)
            }

            /// [`Self::loss_and_grads`] against the caller's labels instead of the next tokens:
            /// one per row of `batch`, the token that row should predict (already shifted), or
            /// `-100` where nothing is trained — Hugging Face's causal-LM `labels` after their
            /// shift. For tasks that score only some positions (an answer after a prompt).
            pub fn loss_and_grads_labelled(&mut self, batch: &#rt::Batch, labels: &[i64]) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                self.prepare(batch)?;
                if labels.len() != batch.rows() {
                    return ::core::result::Result::Err(#rt::Error::LabelCountMismatch { labels: labels.len(), rows: batch.rows() });
                }
                self.labels.copy_from_slice(labels);
                self.run(batch, true)
            }

            /// The loss of [`Self::loss_and_grads_labelled`] in evaluation mode: no dropout, no
            /// gradient.
            pub fn evaluate_labelled(&mut self, batch: &#rt::Batch, labels: &[i64]) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                self.prepare(batch)?;
                if labels.len() != batch.rows() {
                    return ::core::result::Result::Err(#rt::Error::LabelCountMismatch { labels: labels.len(), rows: batch.rows() });
                }
                self.labels.copy_from_slice(labels);
                self.run(batch, false)
            }

            /// One training step of [`Self::step`] on [`Self::loss_and_grads_labelled`].
            pub fn step_labelled(&mut self, batch: &#rt::Batch, labels: &[i64], #optimizer) -> #report {
                let loss = self.loss_and_grads_labelled(batch, labels)?;
                self.update(loss, optimizer, lr, max_grad_norm)
            }
        },
        Objective::MaskedLm => quote! {
            /// The mean cross-entropy of the masked-LM head over the labelled rows (`labels`: one
            /// per row of `batch`, the original token where the input was masked, `-100`
            /// elsewhere, as `BertForMaskedLM` takes them) and every parameter's gradient, in
            /// [`Self::grads`].
            pub fn loss_and_grads(&mut self, batch: &#rt::Batch, labels: &[i64]) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                self.prepare(batch)?;
                if labels.len() != batch.rows() {
                    return ::core::result::Result::Err(#rt::Error::LabelCountMismatch { labels: labels.len(), rows: batch.rows() });
                }
                self.labels.copy_from_slice(labels);
                self.run(batch, true)
            }

            /// The loss of [`Self::loss_and_grads`] in evaluation mode: no dropout, no gradient.
            pub fn evaluate(&mut self, batch: &#rt::Batch, labels: &[i64]) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                self.prepare(batch)?;
                if labels.len() != batch.rows() {
                    return ::core::result::Result::Err(#rt::Error::LabelCountMismatch { labels: labels.len(), rows: batch.rows() });
                }
                self.labels.copy_from_slice(labels);
                self.run(batch, false)
            }

            /// One training step: [`Self::loss_and_grads`], global-norm clipping to
            /// `max_grad_norm` (when given), then `optimizer`'s update at learning rate `lr`. A NaN
            /// or infinite loss or gradient norm is an error and leaves the weights untouched.
            pub fn step(&mut self, batch: &#rt::Batch, labels: &[i64], #optimizer) -> #report {
                let loss = self.loss_and_grads(batch, labels)?;
                self.update(loss, optimizer, lr, max_grad_norm)
            }

            /// Gradient accumulation: [`Self::loss_and_grads`] on one micro-batch, its gradients added
            /// (weighted by its labelled rows) to those accumulated since the last
            /// [`Self::step_accumulated`], which then takes the step. Returns this micro-batch's
            /// loss.
            pub fn accumulate(&mut self, batch: &#rt::Batch, labels: &[i64]) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                let loss = self.loss_and_grads(batch, labels)?;
                self.accumulator.add(&self.grads, loss);
                ::core::result::Result::Ok(loss)
            }
        },
        Objective::Contrastive => quote! {
            /// sentence-transformers' `MultipleNegativesRankingLoss` (scale 20, cosine
            /// similarity) over `batch`'s sentence embeddings: its first `anchors` sequences
            /// against the rest — each anchor's positive in the same order, then any hard
            /// negatives — every other candidate a negative for each anchor; and every
            /// parameter's gradient, in [`Self::grads`]. `labelled` in the result is `anchors`.
            pub fn loss_and_grads(&mut self, batch: &#rt::Batch, anchors: usize) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                let sequences = batch.batch_size();
                if anchors == 0 || 2 * anchors > sequences {
                    return ::core::result::Result::Err(#rt::Error::RankingCandidates { anchors, candidates: sequences.saturating_sub(anchors) });
                }
                self.prepare(batch)?;
                self.anchors = anchors;
                self.run(batch, true)
            }

            /// The loss of [`Self::loss_and_grads`] in evaluation mode: no dropout, no gradient.
            pub fn evaluate(&mut self, batch: &#rt::Batch, anchors: usize) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                let sequences = batch.batch_size();
                if anchors == 0 || 2 * anchors > sequences {
                    return ::core::result::Result::Err(#rt::Error::RankingCandidates { anchors, candidates: sequences.saturating_sub(anchors) });
                }
                self.prepare(batch)?;
                self.anchors = anchors;
                self.run(batch, false)
            }

            /// One training step: [`Self::loss_and_grads`], global-norm clipping to
            /// `max_grad_norm` (when given), then `optimizer`'s update at learning rate `lr`. A NaN
            /// or infinite loss or gradient norm is an error and leaves the weights untouched.
            pub fn step(&mut self, batch: &#rt::Batch, anchors: usize, #optimizer) -> #report {
                let loss = self.loss_and_grads(batch, anchors)?;
                self.update(loss, optimizer, lr, max_grad_norm)
            }

            /// Gradient accumulation: [`Self::loss_and_grads`] on one micro-batch, its gradients added
            /// (weighted by its labelled rows) to those accumulated since the last
            /// [`Self::step_accumulated`], which then takes the step. Returns this micro-batch's
            /// loss. (In-batch negatives stay within a micro-batch: accumulation sees fewer negatives
            /// per anchor than one pass over the whole batch would.)
            pub fn accumulate(&mut self, batch: &#rt::Batch, anchors: usize) -> #rt::Result<#rt::train::loss::CrossEntropy> {
                let loss = self.loss_and_grads(batch, anchors)?;
                self.accumulator.add(&self.grads, loss);
                ::core::result::Result::Ok(loss)
            }
        },
    }
}

/// What follows the stack: its fields, their init and sizing, the forward to the loss (binding
/// `loss`), and the backward into `self.dx`.
struct Tail {
    fields: TokenStream,
    init: TokenStream,
    resize: TokenStream,
    forward_loss: TokenStream,
    backward: TokenStream,
}

/// An LM head's logits, and the softmax cross-entropy over `self.labels`.
fn head_tail(spec: &Spec, head: &Laid<'_>, total: usize, train: syn::Ident, saved: syn::Ident) -> Tail {
    let rt = rt();
    let vocab = spec.vocab_size;
    let base = total - head.len;
    let logits =
        format_ident!("{}", head.plan.versions[head.plan.output.expect("an LM head writes logits")].name);
    Tail {
        fields: quote!(head: #train, head_saved: #saved,),
        init: quote!(head: #train::new(), head_saved: ::core::default::Default::default(),),
        resize: quote!(self.head_saved.resize(rows); self.head.g.resize(batch);),
        forward_loss: quote! {
            self.head.forward(&mut self.head_saved, p, #base, &mut self.x, batch, &off, &self.threads);
            let loss = #rt::train::loss::softmax_cross_entropy(
                self.head_saved.#logits.as_flattened_mut(),
                #vocab,
                &self.labels,
                #rt::train::loss::Reduction::Mean,
                &mut self.row_loss,
                &self.threads,
            )?;
        },
        // The logits buffer now holds the loss's gradient.
        backward: quote! {
            self.head.backward(&self.head_saved, p, #base, g, &mut self.dx, &self.head_saved.#logits, batch, &off, &self.threads);
        },
    }
}

/// Sentence embeddings — the mean of each sequence's real rows, L2-normalised, as the model's
/// `embed` computes them — and the ranking loss of the first `self.anchors` against the rest.
fn pooled_tail(spec: &Spec) -> Tail {
    let rt = rt();
    let d = spec.d_model;
    let t = quote!(#rt::train);
    let row = quote!(::std::vec::Vec<[f32; #d]>);
    Tail {
        fields: quote! {
            anchors: usize,
            pooled: #row,
            embedded: #row,
            d_embedded: #row,
            d_pooled: #row,
            ranking: ::std::vec::Vec<f64>,
        },
        init: quote! {
            anchors: 0,
            pooled: ::std::vec::Vec::new(),
            embedded: ::std::vec::Vec::new(),
            d_embedded: ::std::vec::Vec::new(),
            d_pooled: ::std::vec::Vec::new(),
            ranking: ::std::vec::Vec::new(),
        },
        resize: quote! {
            let sequences = batch.batch_size();
            for buffer in [&mut self.pooled, &mut self.embedded, &mut self.d_embedded, &mut self.d_pooled] {
                buffer.resize(sequences, [0.0; #d]);
            }
        },
        forward_loss: quote! {
            #rt::layers::pooling::pool(&self.x, batch, #rt::layers::pooling::Pooling::Mean, &mut self.pooled);
            self.embedded.copy_from_slice(&self.pooled);
            #rt::layers::pooling::normalize_rows(&mut self.embedded);
            let (anchors, candidates) = self.embedded.split_at(self.anchors);
            self.ranking.resize(#t::objective::ranking_scratch_len(anchors.len(), candidates.len()), 0.0);
            let (d_anchors, d_candidates) = self.d_embedded.split_at_mut(self.anchors);
            let value = #t::objective::multiple_negatives_ranking_loss(
                anchors,
                candidates,
                #t::objective::RANKING_SCALE,
                d_anchors,
                d_candidates,
                #t::Store::Overwrite,
                &mut self.ranking,
                &self.threads,
            )?;
            let loss = #t::loss::CrossEntropy { loss: value, labelled: self.anchors };
        },
        backward: quote! {
            #t::pooling::normalize_backward(&self.pooled, &self.d_embedded, &mut self.d_pooled, #t::Store::Overwrite);
            #t::pooling::pool_backward(&self.x, batch, #rt::layers::pooling::Pooling::Mean, &self.d_pooled, &mut self.dx, #t::Store::Overwrite);
        },
    }
}

/// The transformers class a trained checkpoint is saved for (its config's `architectures`).
fn architecture(spec: &Spec, objective: Objective) -> &'static str {
    match (objective, spec.weights) {
        (Objective::MaskedLm, _) => "BertForMaskedLM",
        (Objective::Contrastive, _) => "BertModel",
        (Objective::CausalLm, WeightScheme::Gpt2) => "GPT2LMHeadModel",
        (Objective::CausalLm, WeightScheme::Llama) => "LlamaForCausalLM",
        (Objective::CausalLm, WeightScheme::NeoX) => "GPTNeoXForCausalLM",
        (Objective::CausalLm, WeightScheme::Bloom) => "BloomForCausalLM",
        (Objective::CausalLm, _) => "PreTrainedModel",
    }
}
