//! What each family's Hugging Face config class says, both ways: a preset's declaration as one
//! expectation per config.json key ([`expectations`]: `hidden_size` = `d_model`, `layer_norm_eps`
//! = `norm_eps`, `tie_word_embeddings` = `lm_head: tied`, …, with transformers' default for keys a
//! save may omit), compared by `transformer_config::check` at load time (`from_pretrained`) and at
//! compile time (a declaration naming its config.json, [`crate::config_file`]); and a config.json
//! as the declaration's keys ([`fill`]), for the keys such a declaration leaves out. The keys that
//! change numerics without changing a shape are here too (epsilons, activations, rope theta and
//! rotary fraction, tied-head scaling, windows, residual arrangement): those are the mistakes the
//! weight loader cannot see.
//!
//! Composed models have no family config (their dims are their own names), and `weights: torch`
//! checkpoints come from `torch.save`, not `save_pretrained`: neither has expectations.

pub mod fill;

use crate::spec::{Activation, LmHead, Positions, ReformerAttention, Spec, WeightScheme};

/// A config value, as `transformer_config::Setting`.
#[derive(Clone, Debug)]
pub enum Value {
    Int(usize),
    Float(f64),
    Bool(bool),
    Str(&'static str),
    OneOf(&'static [&'static str]),
    Strs(Vec<&'static str>),
    Ints(Vec<usize>),
    Count(usize),
    Null,
}

/// One expectation: the key's spellings, the declaration's name for it, the value, the default.
pub struct Key {
    pub keys: &'static [&'static str],
    pub declared: String,
    pub value: Value,
    pub default: Option<Value>,
}

/// The expectations of a preset, or `None` when its family has no config.json to check.
pub fn expectations(spec: &Spec) -> Option<Vec<Key>> {
    if spec.dims.is_some() {
        return None;
    }
    Some(match spec.weights {
        WeightScheme::Bert => bert(spec),
        WeightScheme::Vit => vit(spec),
        WeightScheme::Gpt2 => gpt2(spec),
        WeightScheme::Llama => llama(spec),
        WeightScheme::NeoX => neox(spec),
        WeightScheme::Bloom => bloom(spec),
        WeightScheme::T5 => t5(spec),
        WeightScheme::Bart => bart(spec),
        WeightScheme::Reformer => reformer(spec),
        WeightScheme::Torch => return None,
    })
}

impl Key {
    /// As the shared comparison takes it (the strings live as long as the macro's process).
    pub fn expect(&self) -> transformer_config::Expect {
        transformer_config::Expect {
            keys: self.keys,
            declared: Box::leak(self.declared.clone().into_boxed_str()),
            value: self.value.setting(),
            default: self.default.as_ref().map(Value::setting),
        }
    }
}

impl Value {
    fn setting(&self) -> transformer_config::Setting {
        use transformer_config::Setting;
        match self {
            Value::Int(i) => Setting::Int(*i as i64),
            Value::Float(x) => Setting::Float(*x),
            Value::Bool(b) => Setting::Bool(*b),
            Value::Str(v) => Setting::Str(v),
            Value::OneOf(options) => Setting::OneOf(options),
            Value::Strs(items) => Setting::Strs(Box::leak(items.clone().into_boxed_slice())),
            Value::Ints(items) => Setting::Ints(Box::leak(
                items.iter().map(|&i| i as i64).collect::<Vec<_>>().into_boxed_slice(),
            )),
            Value::Count(n) => Setting::Count(*n),
            Value::Null => Setting::Null,
        }
    }
}

/// A key the file must state.
fn required(keys: &'static [&'static str], declared: impl Into<String>, value: Value) -> Key {
    Key { keys, declared: declared.into(), value, default: None }
}

/// A key transformers fills in with `default` when the file omits it.
fn defaulted(
    keys: &'static [&'static str],
    declared: impl Into<String>,
    value: Value,
    default: Value,
) -> Key {
    Key { keys, declared: declared.into(), value, default: Some(default) }
}

fn model_type(types: &'static [&'static str], scheme: &str) -> Key {
    required(&["model_type"], format!("weights: {scheme}"), Value::OneOf(types))
}

/// Hugging Face's `hidden_act` / `activation_function` spellings of an ungated activation (and
/// SwiGLU's `silu`).
fn act_names(activation: Activation) -> &'static [&'static str] {
    match activation {
        Activation::GeluErf => &["gelu"],
        Activation::GeluTanh => &["gelu_new", "gelu_pytorch_tanh"],
        Activation::Relu => &["relu"],
        Activation::SwiGlu => &["silu", "swish"],
        Activation::GeGluTanh => &["gelu_new", "gelu_pytorch_tanh"],
        Activation::GeGluErf => &["gelu"],
    }
}

fn activation_key(keys: &'static [&'static str], spec: &Spec, default: &'static str) -> Key {
    let declared = format!("activation: {}", activation_name(spec.activation));
    defaulted(keys, declared, Value::OneOf(act_names(spec.activation)), Value::Str(default))
}

fn activation_name(activation: Activation) -> &'static str {
    match activation {
        Activation::GeluErf => "gelu_erf",
        Activation::GeluTanh => "gelu_tanh",
        Activation::Relu => "relu",
        Activation::SwiGlu => "swiglu",
        Activation::GeGluTanh => "geglu_tanh",
        Activation::GeGluErf => "geglu_erf",
    }
}

fn eps(keys: &'static [&'static str], spec: &Spec, default: f64) -> Key {
    defaulted(keys, "norm_eps", Value::Float(spec.norm.eps), Value::Float(default))
}

fn tied(spec: &Spec, default: bool) -> Key {
    let tied = spec.lm_head == Some(LmHead::Tied);
    let declared = if tied { "lm_head: tied" } else { "lm_head: untied" };
    defaulted(&["tie_word_embeddings"], declared, Value::Bool(tied), Value::Bool(default))
}

fn bert(spec: &Spec) -> Vec<Key> {
    let mut keys = vec![
        model_type(&["bert"], "bert"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["hidden_size"], "d_model", Value::Int(spec.d_model)),
        required(&["num_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["num_hidden_layers"], "layers", Value::Int(spec.layers)),
        required(&["intermediate_size"], "d_ff", Value::Int(spec.d_ff)),
        required(&["max_position_embeddings"], "max_positions", Value::Int(spec.max_positions)),
        eps(&["layer_norm_eps"], spec, 1e-12),
        activation_key(&["hidden_act"], spec, "gelu"),
    ];
    if let Some(types) = spec.type_vocab_size {
        keys.push(defaulted(&["type_vocab_size"], "type_vocab_size", Value::Int(types), Value::Int(2)));
    }
    keys
}

fn vit(spec: &Spec) -> Vec<Key> {
    let mut keys = vec![
        model_type(&["vit"], "vit"),
        required(&["hidden_size"], "d_model", Value::Int(spec.d_model)),
        required(&["num_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["num_hidden_layers"], "layers", Value::Int(spec.layers)),
        required(&["intermediate_size"], "d_ff", Value::Int(spec.d_ff)),
        eps(&["layer_norm_eps"], spec, 1e-12),
        activation_key(&["hidden_act"], spec, "gelu"),
        defaulted(&["qkv_bias"], "weights: vit (biased Q, K, V)", Value::Bool(true), Value::Bool(true)),
    ];
    if let Some(image) = spec.image {
        keys.extend([
            defaulted(&["image_size"], "image_size", Value::Int(image.image_size), Value::Int(224)),
            defaulted(&["patch_size"], "patch_size", Value::Int(image.patch_size), Value::Int(16)),
            defaulted(&["num_channels"], "channels", Value::Int(image.channels), Value::Int(3)),
        ]);
    }
    if let Some(classifier) = spec.classifier {
        keys.push(defaulted(&["id2label"], "labels", Value::Count(classifier.labels), Value::Count(2)));
    }
    keys
}

fn gpt2(spec: &Spec) -> Vec<Key> {
    vec![
        model_type(&["gpt2"], "gpt2"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["n_embd", "hidden_size"], "d_model", Value::Int(spec.d_model)),
        required(&["n_head", "num_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["n_layer", "num_hidden_layers"], "layers", Value::Int(spec.layers)),
        defaulted(&["n_inner"], "d_ff", Value::Int(spec.d_ff), Value::Int(4 * spec.d_model)),
        required(
            &["n_positions", "max_position_embeddings"],
            "max_positions",
            Value::Int(spec.max_positions),
        ),
        eps(&["layer_norm_epsilon"], spec, 1e-5),
        activation_key(&["activation_function"], spec, "gelu_new"),
        tied(spec, true),
        defaulted(
            &["scale_attn_weights"],
            "weights: gpt2 (scores scaled)",
            Value::Bool(true),
            Value::Bool(true),
        ),
    ]
}

/// Rope theta and the rotary fraction (`rotary_dims / head_dim`), when the model rotates.
fn rope(
    spec: &Spec,
    theta_keys: &'static [&'static str],
    fraction_keys: &'static [&'static str],
    default_fraction: f64,
) -> Vec<Key> {
    let Positions::Rope { theta, rotary_dims } = spec.positions else { return vec![] };
    let mut keys = vec![defaulted(theta_keys, "rope_theta", Value::Float(theta), Value::Float(10_000.0))];
    let fraction = rotary_dims as f64 / spec.head_dim as f64;
    keys.push(defaulted(
        fraction_keys,
        "rotary_dims / head_dim",
        Value::Float(fraction),
        Value::Float(default_fraction),
    ));
    keys
}

fn llama(spec: &Spec) -> Vec<Key> {
    let mut keys = vec![
        model_type(&["llama", "mistral", "ministral"], "llama"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["hidden_size"], "d_model", Value::Int(spec.d_model)),
        required(&["num_attention_heads"], "heads", Value::Int(spec.heads)),
        defaulted(&["num_key_value_heads"], "kv_heads", Value::Int(spec.kv_heads), Value::Int(spec.heads)),
        defaulted(
            &["head_dim"],
            "d_model / heads",
            Value::Int(spec.head_dim),
            Value::Int(spec.d_model / spec.heads),
        ),
        required(&["num_hidden_layers"], "layers", Value::Int(spec.layers)),
        required(&["intermediate_size"], "d_ff", Value::Int(spec.d_ff)),
        required(&["max_position_embeddings"], "max_positions", Value::Int(spec.max_positions)),
        eps(&["rms_norm_eps"], spec, 1e-6),
        activation_key(&["hidden_act"], spec, "silu"),
        tied(spec, false),
    ];
    keys.extend(rope(
        spec,
        &["rope_theta", "rope_parameters.rope_theta"],
        &["partial_rotary_factor", "rope_parameters.partial_rotary_factor"],
        1.0,
    ));
    keys.extend(windows(spec));
    keys
}

/// Mistral's `sliding_window` (one window for every layer) and Ministral's `layer_types` (which
/// layers slide); `null` when every layer is global.
fn windows(spec: &Spec) -> Vec<Key> {
    let windowed: Vec<usize> = spec.windows.iter().flatten().copied().collect();
    let Some(&w) = windowed.first() else {
        return vec![required(&["sliding_window"], "window: none", Value::Null)];
    };
    let mut keys = vec![required(&["sliding_window"], "window", Value::Int(w))];
    if windowed.len() < spec.windows.len() {
        let types =
            spec.windows.iter().map(|w| if w.is_some() { "sliding_attention" } else { "full_attention" });
        keys.push(required(&["layer_types"], "window (per layer)", Value::Strs(types.collect())));
    }
    keys
}

fn neox(spec: &Spec) -> Vec<Key> {
    let mut keys = vec![
        model_type(&["gpt_neox"], "neox"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["hidden_size"], "d_model", Value::Int(spec.d_model)),
        required(&["num_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["num_hidden_layers"], "layers", Value::Int(spec.layers)),
        required(&["intermediate_size"], "d_ff", Value::Int(spec.d_ff)),
        required(&["max_position_embeddings"], "max_positions", Value::Int(spec.max_positions)),
        eps(&["layer_norm_eps"], spec, 1e-5),
        activation_key(&["hidden_act"], spec, "gelu"),
        defaulted(
            &["use_parallel_residual"],
            "residual: parallel",
            Value::Bool(spec.parallel),
            Value::Bool(true),
        ),
        defaulted(
            &["attention_bias"],
            "weights: neox (biased Q, K, V)",
            Value::Bool(true),
            Value::Bool(true),
        ),
        tied(spec, false),
    ];
    // GPTNeoXConfig's default rotary fraction is 0.25.
    keys.extend(rope(
        spec,
        &["rope_theta", "rotary_emb_base", "rope_parameters.rope_theta"],
        &["partial_rotary_factor", "rotary_pct", "rope_parameters.partial_rotary_factor"],
        0.25,
    ));
    keys
}

fn bloom(spec: &Spec) -> Vec<Key> {
    vec![
        model_type(&["bloom"], "bloom"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["hidden_size", "n_embed"], "d_model", Value::Int(spec.d_model)),
        required(&["n_head", "num_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["n_layer", "num_hidden_layers"], "layers", Value::Int(spec.layers)),
        eps(&["layer_norm_epsilon"], spec, 1e-5),
        defaulted(
            &["apply_residual_connection_post_layernorm"],
            "weights: bloom (residual before the norm)",
            Value::Bool(false),
            Value::Bool(false),
        ),
        tied(spec, true),
    ]
}

/// T5's `feed_forward_proj`.
fn t5_feed_forward(activation: Activation) -> &'static [&'static str] {
    match activation {
        Activation::GeGluTanh => &["gated-gelu"],
        Activation::GeGluErf => &["gated-gelu_python"],
        Activation::GeluTanh => &["gelu_new"],
        Activation::GeluErf => &["gelu"],
        _ => &["relu"],
    }
}

fn t5(spec: &Spec) -> Vec<Key> {
    let tied_head = spec.lm_head == Some(LmHead::Tied);
    let mut keys = vec![
        model_type(&["t5"], "t5"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["d_model"], "d_model", Value::Int(spec.d_model)),
        required(&["num_heads"], "heads", Value::Int(spec.heads)),
        defaulted(&["d_kv"], "head_dim", Value::Int(spec.head_dim), Value::Int(64)),
        required(&["num_layers"], "layers", Value::Int(spec.layers)),
        required(&["d_ff"], "d_ff", Value::Int(spec.d_ff)),
        eps(&["layer_norm_epsilon"], spec, 1e-6),
        defaulted(
            &["feed_forward_proj"],
            format!("activation: {}", activation_name(spec.activation)),
            Value::OneOf(t5_feed_forward(spec.activation)),
            Value::Str("relu"),
        ),
    ];
    if let Positions::Relative { buckets, max_distance } = spec.positions {
        keys.push(defaulted(
            &["relative_attention_num_buckets"],
            "positions: relative buckets",
            Value::Int(buckets),
            Value::Int(32),
        ));
        keys.push(defaulted(
            &["relative_attention_max_distance"],
            "positions: relative max_distance",
            Value::Int(max_distance),
            Value::Int(128),
        ));
    }
    if let Some(s2s) = &spec.seq2seq {
        keys.push(defaulted(
            &["num_decoder_layers"],
            "decoder layers",
            Value::Int(s2s.decoder.layers),
            Value::Int(spec.layers),
        ));
        keys.push(defaulted(
            &["decoder_start_token_id"],
            "decoder_start",
            Value::Int(s2s.decoder_start as usize),
            Value::Int(0),
        ));
        // One flag in transformers 4 (`tie_word_embeddings`: the head is the embeddings *and* the
        // decoder's states are scaled by 1/sqrt(d_model)); transformers 5 always writes
        // `tie_word_embeddings: true` and says the rescale in `scale_decoder_outputs` (the tying
        // is then the file's lack of `lm_head.weight`, which the weight loader checks).
        let declared = if tied_head {
            "lm_head: tied (states scaled by 1/sqrt(d_model))"
        } else {
            "lm_head: untied (no rescale)"
        };
        keys.push(defaulted(
            &["scale_decoder_outputs", "tie_word_embeddings"],
            declared,
            Value::Bool(tied_head),
            Value::Bool(true),
        ));
    }
    keys
}

fn bart(spec: &Spec) -> Vec<Key> {
    let mut keys = vec![
        model_type(&["bart"], "bart"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["d_model"], "d_model", Value::Int(spec.d_model)),
        required(&["encoder_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["encoder_layers"], "layers", Value::Int(spec.layers)),
        required(&["encoder_ffn_dim"], "d_ff", Value::Int(spec.d_ff)),
        required(&["max_position_embeddings"], "max_positions", Value::Int(spec.max_positions)),
        activation_key(&["activation_function"], spec, "gelu"),
        defaulted(
            &["scale_embedding"],
            "scale_embeddings",
            Value::Bool(spec.scale_embeddings),
            Value::Bool(false),
        ),
        defaulted(&["normalize_before"], "norm_placement: post", Value::Bool(false), Value::Bool(false)),
    ];
    if let Some(s2s) = &spec.seq2seq {
        let d = &s2s.decoder;
        keys.extend([
            required(&["decoder_attention_heads"], "decoder heads", Value::Int(d.heads)),
            required(&["decoder_layers"], "decoder layers", Value::Int(d.layers)),
            required(&["decoder_ffn_dim"], "decoder d_ff", Value::Int(d.d_ff)),
            defaulted(
                &["decoder_start_token_id"],
                "decoder_start",
                Value::Int(s2s.decoder_start as usize),
                Value::Int(2),
            ),
        ]);
    }
    keys
}

fn reformer(spec: &Spec) -> Vec<Key> {
    let Some(reversible) = &spec.reversible else { return vec![] };
    let Positions::Axial { shape, dims } = spec.positions else { return vec![] };
    let kinds = reversible.layers.iter().map(|k| match k {
        ReformerAttention::Lsh => "lsh",
        ReformerAttention::Local => "local",
    });
    let mut keys = vec![
        model_type(&["reformer"], "reformer"),
        required(&["vocab_size"], "vocab_size", Value::Int(spec.vocab_size)),
        required(&["hidden_size"], "d_model", Value::Int(spec.d_model)),
        required(&["num_attention_heads"], "heads", Value::Int(spec.heads)),
        required(&["attention_head_size"], "d_model / heads", Value::Int(spec.head_dim)),
        required(&["feed_forward_size"], "d_ff", Value::Int(spec.d_ff)),
        required(&["attn_layers"], "attn_layers", Value::Strs(kinds.collect())),
        required(&["axial_pos_shape"], "axial_positions.shape", Value::Ints(shape.to_vec())),
        required(&["axial_pos_embds_dim"], "axial_positions.dims", Value::Ints(dims.to_vec())),
        defaulted(&["axial_pos_embds"], "axial_positions", Value::Bool(true), Value::Bool(true)),
        defaulted(
            &["is_decoder"],
            "attention",
            Value::Bool(spec.attention == crate::spec::Attention::Causal),
            Value::Bool(false),
        ),
        eps(&["layer_norm_eps"], spec, 1e-12),
        activation_key(&["hidden_act"], spec, "relu"),
        tied(spec, false),
    ];
    if let Some(lsh) = reversible.lsh {
        keys.extend([
            required(&["lsh_attn_chunk_length"], "lsh.chunk", Value::Int(lsh.chunk)),
            required(&["lsh_num_chunks_before"], "lsh.chunks_before", Value::Int(lsh.chunks_before)),
            required(&["lsh_num_chunks_after"], "lsh.chunks_after", Value::Int(lsh.chunks_after)),
            required(&["num_buckets"], "lsh.buckets", Value::Int(lsh.buckets)),
            required(&["num_hashes"], "lsh.hashes", Value::Int(lsh.hashes)),
        ]);
    }
    if let Some(local) = reversible.local {
        keys.extend([
            required(&["local_attn_chunk_length"], "local.chunk", Value::Int(local.chunk)),
            required(&["local_num_chunks_before"], "local.chunks_before", Value::Int(local.chunks_before)),
            required(&["local_num_chunks_after"], "local.chunks_after", Value::Int(local.chunks_after)),
        ]);
    }
    keys
}
