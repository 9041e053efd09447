//! The single-stack presets' checkpoint names, one table per weight scheme.

use super::Layout;
use crate::spec::WeightScheme;

/// A checkpoint naming scheme: where each field's tensors live, relative to its block's prefix.
pub(super) struct Names {
    pub(super) roots: &'static [&'static str],
    pub(super) layout: Layout,
    /// Whether the layers' linears have biases.
    pub(super) bias: bool,
    pub(super) embeddings: &'static str,
    pub(super) word_embeddings: &'static str,
    pub(super) position_embeddings: &'static str,
    pub(super) token_type_embeddings: &'static str,
    pub(super) embeddings_norm: Option<&'static str>,
    pub(super) layer: &'static str,
    /// One name per fused part: three separate projections, or one already fused.
    pub(super) qkv: &'static [&'static str],
    pub(super) attention_output: &'static str,
    pub(super) attention_norm: &'static str,
    /// One name, or gate then up for gated feed-forwards.
    pub(super) intermediate: &'static [&'static str],
    pub(super) output: &'static str,
    pub(super) output_norm: &'static str,
    pub(super) final_norm: &'static str,
    /// Relative to the embeddings block.
    pub(super) tied_head: &'static str,
    /// Outside any root: Hugging Face keeps `lm_head` beside `transformer`.
    pub(super) untied_head: &'static str,
    pub(super) patch_embeddings: &'static str,
    pub(super) class_token: &'static str,
    /// Outside any root.
    pub(super) classifier: &'static str,
    pub(super) ignored: &'static [&'static str],
}

impl Names {
    /// The names of `scheme`. One arm per scheme, each a complete table, so a scheme's names read
    /// together and against the checkpoint they describe; the function is long because the data is.
    pub(super) fn of(scheme: WeightScheme) -> Self {
        match scheme {
            WeightScheme::Reformer => {
                unreachable!("a Reformer lowers through `graph::reformer`, which names its own")
            }
            // Hugging Face `BertModel` (and the encoder inside sentence-transformers models).
            WeightScheme::Bert => Names {
                roots: &[""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "embeddings",
                word_embeddings: "word_embeddings",
                position_embeddings: "position_embeddings",
                token_type_embeddings: "token_type_embeddings",
                embeddings_norm: Some("LayerNorm"),
                layer: "encoder.layer.{i}",
                qkv: &["attention.self.query", "attention.self.key", "attention.self.value"],
                attention_output: "attention.output.dense",
                attention_norm: "attention.output.LayerNorm",
                intermediate: &["intermediate.dense"],
                output: "output.dense",
                output_norm: "output.LayerNorm",
                final_norm: "encoder.LayerNorm",
                tied_head: "word_embeddings",
                untied_head: "cls.predictions.decoder",
                patch_embeddings: "",
                class_token: "",
                classifier: "classifier",
                // A registered buffer, and BertPooler (CLS → dense → tanh), which sentence
                // embeddings do not use.
                ignored: &["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"],
            },
            // Hugging Face `GPT2LMHeadModel` (`transformer.` root) or `GPT2Model` (no root).
            WeightScheme::Gpt2 => Names {
                roots: &["transformer", ""],
                layout: Layout::Conv1d,
                bias: true,
                embeddings: "",
                word_embeddings: "wte",
                position_embeddings: "wpe",
                token_type_embeddings: "wtte",
                embeddings_norm: None,
                layer: "h.{i}",
                qkv: &["attn.c_attn"],
                attention_output: "attn.c_proj",
                attention_norm: "ln_1",
                intermediate: &["mlp.c_fc"],
                output: "mlp.c_proj",
                output_norm: "ln_2",
                final_norm: "ln_f",
                tied_head: "wte",
                untied_head: "lm_head",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                // Causal-mask buffers that older transformers versions saved with the weights.
                ignored: &["h.{i}.attn.bias", "h.{i}.attn.masked_bias"],
            },
            // Hugging Face `ViTForImageClassification`.
            WeightScheme::Vit => Names {
                roots: &[""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "vit.embeddings",
                word_embeddings: "",
                position_embeddings: "position_embeddings",
                token_type_embeddings: "",
                embeddings_norm: None,
                layer: "vit.encoder.layer.{i}",
                qkv: &["attention.attention.query", "attention.attention.key", "attention.attention.value"],
                attention_output: "attention.output.dense",
                attention_norm: "layernorm_before",
                intermediate: &["intermediate.dense"],
                output: "output.dense",
                output_norm: "layernorm_after",
                final_norm: "vit.layernorm",
                tied_head: "",
                untied_head: "",
                patch_embeddings: "patch_embeddings.projection",
                class_token: "cls_token",
                classifier: "classifier",
                ignored: &[],
            },
            WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch => {
                unreachable!("encoder-decoder formats lower through `graph::seq2seq`")
            }
            // Hugging Face `GPTNeoXForCausalLM` (`gpt_neox.` root; `embed_out` beside it).
            WeightScheme::NeoX => Names {
                roots: &["gpt_neox", ""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "",
                word_embeddings: "embed_in",
                position_embeddings: "",
                token_type_embeddings: "",
                embeddings_norm: None,
                layer: "layers.{i}",
                qkv: &["attention.query_key_value"],
                attention_output: "attention.dense",
                attention_norm: "input_layernorm",
                intermediate: &["mlp.dense_h_to_4h"],
                output: "mlp.dense_4h_to_h",
                output_norm: "post_attention_layernorm",
                final_norm: "final_layer_norm",
                tied_head: "embed_in",
                untied_head: "embed_out",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                // Buffers some transformers versions saved with the weights.
                ignored: &[
                    "layers.{i}.attention.bias",
                    "layers.{i}.attention.masked_bias",
                    "layers.{i}.attention.rotary_emb.inv_freq",
                ],
            },
            // Hugging Face `BloomForCausalLM` (`transformer.` root) or `BloomModel` (no root).
            WeightScheme::Bloom => Names {
                roots: &["transformer", ""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "",
                word_embeddings: "word_embeddings",
                position_embeddings: "",
                token_type_embeddings: "",
                embeddings_norm: Some("word_embeddings_layernorm"),
                layer: "h.{i}",
                qkv: &["self_attention.query_key_value"],
                attention_output: "self_attention.dense",
                attention_norm: "input_layernorm",
                intermediate: &["mlp.dense_h_to_4h"],
                output: "mlp.dense_4h_to_h",
                output_norm: "post_attention_layernorm",
                final_norm: "ln_f",
                tied_head: "word_embeddings",
                untied_head: "lm_head",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                ignored: &[],
            },
            // Hugging Face `LlamaForCausalLM` and `MistralForCausalLM` (same names).
            WeightScheme::Llama => Names {
                roots: &[""],
                layout: Layout::Torch,
                bias: false,
                embeddings: "model",
                word_embeddings: "embed_tokens",
                position_embeddings: "",
                token_type_embeddings: "",
                embeddings_norm: None,
                layer: "model.layers.{i}",
                qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                attention_output: "self_attn.o_proj",
                attention_norm: "input_layernorm",
                intermediate: &["mlp.gate_proj", "mlp.up_proj"],
                output: "mlp.down_proj",
                output_norm: "post_attention_layernorm",
                final_norm: "model.norm",
                tied_head: "embed_tokens",
                untied_head: "lm_head",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                // Rotary frequencies that some transformers versions saved with the weights.
                ignored: &["model.layers.{i}.self_attn.rotary_emb.inv_freq"],
            },
        }
    }
}

/// How a checkpoint saved with another generation of module names is read (the runtime's
/// `weights::Rename`, applied to the file's names before loading).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rename {
    /// Dot-separated segments `theirs` read as `ours`.
    Segments { theirs: &'static str, ours: &'static str },
    /// The tensor `theirs`, when present, read as `ours` (the file's own `ours` a leftover).
    Prefer { theirs: &'static str, ours: &'static str },
}

/// transformers 5's names for a scheme's tensors, read as the names the tables here give (see
/// `scripts/reference/naming-5x.md`: a file is one generation or the other as a whole).
pub fn renames(scheme: WeightScheme) -> &'static [Rename] {
    const fn seg(theirs: &'static str, ours: &'static str) -> Rename {
        Rename::Segments { theirs, ours }
    }
    // `vit.layers.{i}.attention.q_proj` … `mlp.fc2` (`save_original_format=False`, or a state
    // dict saved directly).
    const VIT: &[Rename] = &[
        seg("attention.q_proj", "attention.attention.query"),
        seg("attention.k_proj", "attention.attention.key"),
        seg("attention.v_proj", "attention.attention.value"),
        seg("attention.o_proj", "attention.output.dense"),
        seg("mlp.fc1", "intermediate.dense"),
        seg("mlp.fc2", "output.dense"),
        seg("layers", "encoder.layer"),
    ];
    // `GPTNeoXForCausalLM`'s head: `embed_out` became `lm_head`.
    const NEOX: &[Rename] = &[seg("lm_head", "embed_out")];
    // transformers 5 adds `lm_head.decoder.bias` (the bias its head adds) and keeps an unused
    // `lm_head.bias`.
    const REFORMER: &[Rename] = &[Rename::Prefer { theirs: "lm_head.decoder.bias", ours: "lm_head.bias" }];
    match scheme {
        WeightScheme::Vit => VIT,
        WeightScheme::NeoX => NEOX,
        WeightScheme::Reformer => REFORMER,
        _ => &[],
    }
}
