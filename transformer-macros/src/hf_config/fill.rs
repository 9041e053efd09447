//! A config.json as a preset's keys: what a declaration naming its config (`config: "…"`) leaves
//! out is read from the file. Each family's reading mirrors its expectations in the parent module;
//! after validation those are checked against the same file, so a reading that went wrong here
//! would be reported, not run.

use serde_json::Value as Json;

/// A declaration value read from config.json.
#[derive(Clone, Debug, PartialEq)]
pub enum Fill {
    Int(usize),
    Float(f64),
    Name(&'static str),
    /// `[8, global, 8]`: one entry per layer.
    List(Vec<Fill>),
    /// `{ layers: 2, attention: causal }`.
    Section(Vec<(&'static str, Fill)>),
}

/// The keys a preset of the family `weights` takes from `config`, each only when the file has
/// what it needs (a key it lacks stays missing, and validation says so). An error when the file
/// describes something the family cannot be (an activation the library does not have).
pub fn fill(weights: &str, config: &Json) -> Result<Vec<(&'static str, Fill)>, String> {
    let c = Config(config);
    match weights {
        "bert" => bert(c),
        "vit" => vit(c),
        "gpt2" => gpt2(c),
        "llama" => llama(c),
        "neox" => neox(c),
        "bloom" => bloom(c),
        "t5" => t5(c),
        "bart" => bart(c),
        "reformer" => reformer(c),
        other => Err(format!("`weights: {other}` has no Hugging Face config to read")),
    }
}

/// Reading typed values under any of a key's spellings (`null` counts as absent).
#[derive(Clone, Copy)]
struct Config<'c>(&'c Json);

impl Config<'_> {
    /// A dotted key reaches into objects (`rope_parameters.rope_theta`, transformers 5).
    fn get(&self, keys: &[&str]) -> Option<&Json> {
        keys.iter()
            .find_map(|k| k.split('.').try_fold(self.0, |v, part| v.get(part)).filter(|v| !v.is_null()))
    }

    fn int(&self, keys: &[&str]) -> Option<usize> {
        self.get(keys)?.as_u64().map(|v| v as usize)
    }

    fn float(&self, keys: &[&str]) -> Option<f64> {
        self.get(keys)?.as_f64()
    }

    fn bool(&self, keys: &[&str]) -> Option<bool> {
        self.get(keys)?.as_bool()
    }

    fn str(&self, keys: &[&str]) -> Option<&str> {
        self.get(keys)?.as_str()
    }

    fn ints(&self, key: &str) -> Option<Vec<usize>> {
        self.get(&[key])?.as_array()?.iter().map(|v| v.as_u64().map(|v| v as usize)).collect()
    }
}

/// Collects `key: value` pairs, skipping the values the file does not give.
#[derive(Default)]
struct Keys(Vec<(&'static str, Fill)>);

impl Keys {
    fn int(&mut self, key: &'static str, value: Option<usize>) -> &mut Self {
        if let Some(v) = value {
            self.0.push((key, Fill::Int(v)));
        }
        self
    }

    fn float(&mut self, key: &'static str, value: Option<f64>) -> &mut Self {
        if let Some(v) = value {
            self.0.push((key, Fill::Float(v)));
        }
        self
    }

    fn name(&mut self, key: &'static str, value: &'static str) -> &mut Self {
        self.0.push((key, Fill::Name(value)));
        self
    }

    fn done(&mut self) -> Result<Vec<(&'static str, Fill)>, String> {
        Ok(std::mem::take(&mut self.0))
    }
}

/// An ungated activation from Hugging Face's name for it (`default` when the file has none).
fn activation(c: Config, keys: &[&str], default: &str) -> Result<&'static str, String> {
    match c.str(keys).unwrap_or(default) {
        "gelu" => Ok("gelu_erf"),
        "gelu_new" | "gelu_pytorch_tanh" => Ok("gelu_tanh"),
        "relu" => Ok("relu"),
        other => Err(format!(
            "{} \"{other}\" is not an activation this library has (gelu, gelu_new, gelu_pytorch_tanh, relu)",
            keys[0]
        )),
    }
}

fn lm_head(c: Config, default: bool) -> &'static str {
    if c.bool(&["tie_word_embeddings"]).unwrap_or(default) {
        "tied"
    } else {
        "untied"
    }
}

fn bert(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    Keys::default()
        .int("vocab_size", c.int(&["vocab_size"]))
        .int("max_positions", c.int(&["max_position_embeddings"]))
        .int("type_vocab_size", c.int(&["type_vocab_size"]).or(Some(2)))
        .int("d_model", c.int(&["hidden_size"]))
        .int("heads", c.int(&["num_attention_heads"]))
        .int("layers", c.int(&["num_hidden_layers"]))
        .int("d_ff", c.int(&["intermediate_size"]))
        .name("activation", activation(c, &["hidden_act"], "gelu")?)
        .name("norm", "layer_norm")
        .float("norm_eps", c.float(&["layer_norm_eps"]).or(Some(1e-12)))
        .name("norm_placement", "post")
        .name("positions", "learned")
        .name("attention", "bidirectional")
        .done()
}

fn vit(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let labels = c.get(&["id2label"]).and_then(Json::as_object).map(|m| m.len());
    Keys::default()
        .int("image_size", c.int(&["image_size"]).or(Some(224)))
        .int("patch_size", c.int(&["patch_size"]).or(Some(16)))
        .int("channels", c.int(&["num_channels"]).or(Some(3)))
        .int("d_model", c.int(&["hidden_size"]))
        .int("heads", c.int(&["num_attention_heads"]))
        .int("layers", c.int(&["num_hidden_layers"]))
        .int("d_ff", c.int(&["intermediate_size"]))
        .name("activation", activation(c, &["hidden_act"], "gelu")?)
        .name("norm", "layer_norm")
        .float("norm_eps", c.float(&["layer_norm_eps"]).or(Some(1e-12)))
        .name("norm_placement", "pre")
        .name("positions", "learned")
        .name("attention", "bidirectional")
        .name("pooling", "cls")
        .int("labels", labels.or(Some(2)))
        .done()
}

fn gpt2(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let d = c.int(&["n_embd", "hidden_size"]);
    Keys::default()
        .int("vocab_size", c.int(&["vocab_size"]))
        .int("max_positions", c.int(&["n_positions", "max_position_embeddings"]))
        .int("d_model", d)
        .int("heads", c.int(&["n_head", "num_attention_heads"]))
        .int("layers", c.int(&["n_layer", "num_hidden_layers"]))
        .int("d_ff", c.int(&["n_inner"]).or(d.map(|d| 4 * d)))
        .name("activation", activation(c, &["activation_function"], "gelu_new")?)
        .name("norm", "layer_norm")
        .float("norm_eps", c.float(&["layer_norm_epsilon"]).or(Some(1e-5)))
        .name("norm_placement", "pre")
        .name("positions", "learned")
        .name("attention", "causal")
        .name("lm_head", lm_head(c, true))
        .done()
}

fn llama(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    match c.str(&["hidden_act"]).unwrap_or("silu") {
        "silu" | "swish" => {}
        other => {
            return Err(format!("hidden_act \"{other}\": a `weights: llama` feed-forward is SwiGLU (silu)"))
        }
    }
    let mut keys = Keys::default();
    keys.int("vocab_size", c.int(&["vocab_size"]))
        .int("max_positions", c.int(&["max_position_embeddings"]))
        .int("d_model", c.int(&["hidden_size"]))
        .int("heads", c.int(&["num_attention_heads"]))
        .int("kv_heads", c.int(&["num_key_value_heads"]))
        .int("layers", c.int(&["num_hidden_layers"]))
        .int("d_ff", c.int(&["intermediate_size"]))
        .name("activation", "swiglu")
        .name("norm", "rms_norm")
        .float("norm_eps", c.float(&["rms_norm_eps"]).or(Some(1e-6)))
        .name("norm_placement", "pre")
        .name("positions", "rope")
        .float("rope_theta", c.float(&["rope_theta", "rope_parameters.rope_theta"]).or(Some(10_000.0)))
        .name("attention", "causal")
        .name("lm_head", lm_head(c, false));
    let (d, heads) = (c.int(&["hidden_size"]), c.int(&["num_attention_heads"]));
    let head_dim = c.int(&["head_dim"]).or(d.zip(heads).map(|(d, h)| d / h.max(1)));
    if let (Some(hd), Some(d), Some(h)) = (head_dim, d, heads) {
        if hd * h != d {
            keys.int("head_dim", Some(hd));
        }
    }
    if let (Some(fraction), Some(hd)) =
        (c.float(&["partial_rotary_factor", "rope_parameters.partial_rotary_factor"]), head_dim)
    {
        keys.int("rotary_dims", Some((fraction * hd as f64).round() as usize));
    }
    if let Some(window) = c.int(&["sliding_window"]) {
        let layer_types = c.get(&["layer_types"]).and_then(Json::as_array);
        let value = match layer_types {
            Some(types) => Fill::List(
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Fill::Int(window),
                        _ => Fill::Name("global"),
                    })
                    .collect(),
            ),
            None => Fill::Int(window),
        };
        keys.0.push(("window", value));
    }
    keys.done()
}

fn neox(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let (d, heads) = (c.int(&["hidden_size"]), c.int(&["num_attention_heads"]));
    let fraction = c
        .float(&["partial_rotary_factor", "rotary_pct", "rope_parameters.partial_rotary_factor"])
        .unwrap_or(0.25);
    let rotary = d.zip(heads).map(|(d, h)| (fraction * (d / h.max(1)) as f64).round() as usize);
    let mut keys = Keys::default();
    keys.int("vocab_size", c.int(&["vocab_size"]))
        .int("max_positions", c.int(&["max_position_embeddings"]))
        .int("d_model", d)
        .int("heads", heads)
        .int("layers", c.int(&["num_hidden_layers"]))
        .int("d_ff", c.int(&["intermediate_size"]))
        .name("activation", activation(c, &["hidden_act"], "gelu")?)
        .name("norm", "layer_norm")
        .float("norm_eps", c.float(&["layer_norm_eps"]).or(Some(1e-5)))
        .name("norm_placement", "pre")
        .name("positions", "rope")
        .float(
            "rope_theta",
            c.float(&["rope_theta", "rotary_emb_base", "rope_parameters.rope_theta"]).or(Some(10_000.0)),
        )
        .int("rotary_dims", rotary)
        .name("attention", "causal")
        .name("lm_head", lm_head(c, false));
    if c.bool(&["use_parallel_residual"]).unwrap_or(true) {
        keys.name("residual", "parallel");
    }
    keys.done()
}

fn bloom(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let d = c.int(&["hidden_size", "n_embed"]);
    Keys::default()
        .int("vocab_size", c.int(&["vocab_size"]))
        .int("d_model", d)
        .int("heads", c.int(&["n_head", "num_attention_heads"]))
        .int("layers", c.int(&["n_layer", "num_hidden_layers"]))
        .int("d_ff", d.map(|d| 4 * d))
        .name("activation", "gelu_tanh")
        .name("norm", "layer_norm")
        .float("norm_eps", c.float(&["layer_norm_epsilon"]).or(Some(1e-5)))
        .name("norm_placement", "pre")
        .name("positions", "alibi")
        .name("attention", "causal")
        .name("lm_head", lm_head(c, true))
        .done()
}

/// The two stacks' sections of an encoder-decoder.
fn sections(keys: &mut Keys, encoder_layers: Option<usize>, decoder_layers: Option<usize>) {
    if let Some(layers) = encoder_layers {
        keys.0.push((
            "encoder",
            Fill::Section(vec![("layers", Fill::Int(layers)), ("attention", Fill::Name("bidirectional"))]),
        ));
    }
    if let Some(layers) = decoder_layers {
        keys.0.push((
            "decoder",
            Fill::Section(vec![
                ("layers", Fill::Int(layers)),
                ("attention", Fill::Name("causal")),
                ("cross_attention", Fill::Name("encoder")),
            ]),
        ));
    }
}

fn t5(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let activation = match c.str(&["feed_forward_proj"]).unwrap_or("relu") {
        "relu" => "relu",
        "gated-gelu" => "geglu_tanh",
        "gelu_new" => "gelu_tanh",
        "gelu" => "gelu_erf",
        other => {
            return Err(format!(
                "feed_forward_proj \"{other}\" is not a feed-forward this library has (relu, gated-gelu)"
            ))
        }
    };
    let (d, heads, d_kv) = (c.int(&["d_model"]), c.int(&["num_heads"]), c.int(&["d_kv"]).or(Some(64)));
    let layers = c.int(&["num_layers"]);
    let mut keys = Keys::default();
    keys.int("vocab_size", c.int(&["vocab_size"]))
        .int("d_model", d)
        .int("heads", heads)
        .int("d_ff", c.int(&["d_ff"]))
        .name("activation", activation)
        .name("norm", "rms_norm")
        .float("norm_eps", c.float(&["layer_norm_epsilon"]).or(Some(1e-6)))
        .name("norm_placement", "pre")
        .name("positions", "relative")
        .int("relative_buckets", c.int(&["relative_attention_num_buckets"]).or(Some(32)))
        .int("relative_max_distance", c.int(&["relative_attention_max_distance"]).or(Some(128)))
        .int("decoder_start", c.int(&["decoder_start_token_id"]).or(Some(0)));
    // transformers 5 says the tied head's rescale in `scale_decoder_outputs` (and always writes
    // `tie_word_embeddings: true`); transformers 4 in `tie_word_embeddings`.
    let tied = c.bool(&["scale_decoder_outputs", "tie_word_embeddings"]).unwrap_or(true);
    keys.name("lm_head", if tied { "tied" } else { "untied" });
    // `head_dim` only when it is not `d_model / heads` (the preset's rule for an explicit one).
    if let (Some(d), Some(h), Some(kv)) = (d, heads, d_kv) {
        if h * kv != d {
            keys.int("head_dim", Some(kv));
        }
    }
    sections(&mut keys, layers, c.int(&["num_decoder_layers"]).or(layers));
    keys.done()
}

fn bart(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let mut keys = Keys::default();
    keys.int("vocab_size", c.int(&["vocab_size"]))
        .int("max_positions", c.int(&["max_position_embeddings"]))
        .int("d_model", c.int(&["d_model"]))
        .int("heads", c.int(&["encoder_attention_heads"]))
        .int("d_ff", c.int(&["encoder_ffn_dim"]))
        .name("activation", activation(c, &["activation_function"], "gelu")?)
        .name("norm", "layer_norm")
        .float("norm_eps", Some(1e-5))
        .name("norm_placement", "post")
        .name("positions", "learned")
        .name(
            "embedding_scale",
            if c.bool(&["scale_embedding"]).unwrap_or(false) { "sqrt_d_model" } else { "none" },
        )
        .int("decoder_start", c.int(&["decoder_start_token_id"]).or(Some(2)))
        .name("lm_head", lm_head(c, true));
    sections(&mut keys, c.int(&["encoder_layers"]), c.int(&["decoder_layers"]));
    keys.done()
}

fn reformer(c: Config) -> Result<Vec<(&'static str, Fill)>, String> {
    let kinds = c.get(&["attn_layers"]).and_then(Json::as_array);
    let mut keys = Keys::default();
    keys.int("vocab_size", c.int(&["vocab_size"]))
        .int("d_model", c.int(&["hidden_size"]))
        .int("heads", c.int(&["num_attention_heads"]))
        .int("layers", kinds.map(Vec::len))
        .int("d_ff", c.int(&["feed_forward_size"]))
        .name("activation", activation(c, &["hidden_act"], "relu")?)
        .float("norm_eps", c.float(&["layer_norm_eps"]).or(Some(1e-12)))
        .name("attention", if c.bool(&["is_decoder"]).unwrap_or(false) { "causal" } else { "bidirectional" });
    let shape = c.ints("axial_pos_shape");
    keys.int("max_positions", shape.as_ref().map(|s| s.iter().product()));
    if let Some(kinds) = kinds {
        let kinds = kinds.iter().map(|k| match k.as_str() {
            Some("lsh") => Ok(Fill::Name("lsh")),
            Some("local") => Ok(Fill::Name("local")),
            _ => Err(format!("attn_layers entry {k} is not `lsh` or `local`")),
        });
        keys.0.push(("attn_layers", Fill::List(kinds.collect::<Result<_, _>>()?)));
    }
    let section = |fields: &[(&'static str, &str)]| {
        let entries: Option<Vec<(&'static str, Fill)>> =
            fields.iter().map(|&(name, key)| c.int(&[key]).map(|v| (name, Fill::Int(v)))).collect();
        entries.map(Fill::Section)
    };
    let uses = |kind: &str| kinds.is_some_and(|k| k.iter().any(|v| v.as_str() == Some(kind)));
    if uses("lsh") {
        let lsh = [
            ("chunk", "lsh_attn_chunk_length"),
            ("chunks_before", "lsh_num_chunks_before"),
            ("chunks_after", "lsh_num_chunks_after"),
            ("buckets", "num_buckets"),
            ("hashes", "num_hashes"),
        ];
        if let Some(fill) = section(&lsh) {
            keys.0.push(("lsh", fill));
        }
    }
    if uses("local") {
        let local = [
            ("chunk", "local_attn_chunk_length"),
            ("chunks_before", "local_num_chunks_before"),
            ("chunks_after", "local_num_chunks_after"),
        ];
        if let Some(fill) = section(&local) {
            keys.0.push(("local", fill));
        }
    }
    if let (Some(shape), Some(dims)) = (shape, c.ints("axial_pos_embds_dim")) {
        let list = |v: Vec<usize>| Fill::List(v.into_iter().map(Fill::Int).collect());
        keys.0.push(("axial_positions", Fill::Section(vec![("shape", list(shape)), ("dims", list(dims))])));
    }
    keys.done()
}
