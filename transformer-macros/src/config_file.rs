//! A preset that names its checkpoint's config.json — `config: "models/minilm/config.json"`, a
//! path relative to the crate's `Cargo.toml` — is read at compile time: every key the declaration
//! leaves out is taken from the file (`weights` from its `model_type`), and once the declaration is
//! valid the whole of it is checked against the file with the same rules `from_pretrained` uses at
//! load time. A value the declaration contradicts, or a key of the file the library cannot run, is
//! an error under the path; so is a value read from the file that validation rejects. The model is
//! still a statically shaped type: the check moves from run time to compile time.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Ident, LitInt, LitStr};

use crate::ast::{Entry, ModelInput, Value};
use crate::hf_config::{self, fill::Fill};
use crate::spec::Spec;

/// The key naming the file.
const KEY: &str = "config";

/// A config.json a declaration named, as read.
pub struct ConfigFile {
    path: LitStr,
    /// The path cargo sees (for `include_bytes!`, so editing the file rebuilds the crate).
    full: String,
    json: serde_json::Value,
}

/// The declaration with the file's keys added (and `config` removed), and the file; `None` when
/// the declaration names no config.
pub fn read(input: &ModelInput) -> Result<Option<(ModelInput, ConfigFile)>, syn::Error> {
    let Some(entry) = input.entries.iter().find(|e| e.key == KEY) else { return Ok(None) };
    let path = literal(entry)?;
    let file = open(&path)?;
    let error = |message: String| syn::Error::new(path.span(), format!("{}: {message}", path.value()));
    let weights = match input.entries.iter().find(|e| e.key == "weights").map(|e| &e.value) {
        Some(Value::Name(name)) => name.to_string(),
        _ => family(&file.json).map_err(error)?.to_string(),
    };
    let filled = hf_config::fill::fill(&weights, &file.json).map_err(error)?;
    let mut declared = input.clone();
    declared.entries.retain(|e| e.key != KEY);
    let span = path.span();
    if !declared.entries.iter().any(|e| e.key == "weights") {
        declared.entries.push(entry_of("weights", &Fill::Name(leak(weights)), span));
    }
    for (key, value) in &filled {
        if !declared.entries.iter().any(|e| e.key == key) {
            declared.entries.push(entry_of(key, value, span));
        }
    }
    Ok(Some((declared, file)))
}

/// The validated declaration against the file: every difference, one error under the path.
pub fn check(spec: &Spec, file: &ConfigFile) -> Result<(), syn::Error> {
    let Some(keys) = hf_config::expectations(spec) else {
        return Err(syn::Error::new(
            file.path.span(),
            "a composed model or `weights: torch` has no Hugging Face config to check",
        ));
    };
    let expects: Vec<transformer_config::Expect> = keys.iter().map(hf_config::Key::expect).collect();
    let mismatches = transformer_config::check(&file.json, &expects);
    if mismatches.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = mismatches.iter().map(|m| format!("\n  - {m}")).collect();
    Err(syn::Error::new(
        file.path.span(),
        format!("{} does not describe this model:{}", file.path.value(), lines.concat()),
    ))
}

/// `include_bytes!` of the file, so that cargo rebuilds the crate when it changes.
pub fn track(file: &ConfigFile) -> TokenStream {
    let full = &file.full;
    quote!(
        const _: &[u8] = ::core::include_bytes!(#full);
    )
}

fn literal(entry: &Entry) -> Result<LitStr, syn::Error> {
    match &entry.value {
        Value::Other(tokens) => syn::parse2::<LitStr>(tokens.clone()).map_err(|_| {
            syn::Error::new(
                entry.value.span(),
                "`config` names a config.json: a string, e.g. `config: \"model/config.json\"`",
            )
        }),
        other => Err(syn::Error::new(
            other.span(),
            format!(
                "`config` names a config.json: a string, e.g. `config: \"model/config.json\"`, not {}",
                other.describe()
            ),
        )),
    }
}

fn open(path: &LitStr) -> Result<ConfigFile, syn::Error> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let full = std::path::Path::new(&dir).join(path.value());
    let error = |message: String| syn::Error::new(path.span(), message);
    let text = std::fs::read_to_string(&full).map_err(|e| {
        error(format!("cannot read {} (relative to the crate's Cargo.toml): {e}", full.display()))
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| error(format!("{} is not JSON: {e}", full.display())))?;
    if !json.is_object() {
        return Err(error(format!("{} is not a JSON object", full.display())));
    }
    Ok(ConfigFile { path: path.clone(), full: full.to_string_lossy().into_owned(), json })
}

/// The preset a config's `model_type` belongs to.
fn family(json: &serde_json::Value) -> Result<&'static str, String> {
    match json.get("model_type").and_then(serde_json::Value::as_str) {
        Some("bert") => Ok("bert"),
        Some("vit") => Ok("vit"),
        Some("gpt2") => Ok("gpt2"),
        Some("llama" | "mistral" | "ministral") => Ok("llama"),
        Some("gpt_neox") => Ok("neox"),
        Some("bloom") => Ok("bloom"),
        Some("t5") => Ok("t5"),
        Some("bart") => Ok("bart"),
        Some("reformer") => Ok("reformer"),
        Some(other) => Err(format!("model_type \"{other}\" is not a family this library has: declare `weights` and the keys yourself")),
        None => Err("the config has no `model_type`: declare `weights`".into()),
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A declaration entry for `key: value`, spanned at the path.
fn entry_of(key: &str, value: &Fill, span: Span) -> Entry {
    Entry { key: Ident::new(key, span), value: value_of(value, span) }
}

fn value_of(fill: &Fill, span: Span) -> Value {
    match fill {
        Fill::Int(n) => Value::Int(LitInt::new(&n.to_string(), span)),
        Fill::Float(x) => Value::Float { value: *x, span, text: format!("{x:?}") },
        Fill::Name(name) => Value::Name(Ident::new(name, span)),
        Fill::List(items) => Value::List { items: items.iter().map(|i| value_of(i, span)).collect(), span },
        Fill::Section(entries) => {
            Value::Section { entries: entries.iter().map(|(k, v)| entry_of(k, v, span)).collect(), span }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::validate_and_lower;

    /// The errors of expanding `declaration` (the test runs in `transformer-macros/`, so fixture
    /// paths start with `../`).
    fn errors(declaration: &str) -> Vec<String> {
        let input: crate::ast::ModelInput = syn::parse_str(declaration).expect("the declaration parses");
        match validate_and_lower(&input) {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    const TINY: &str = "../tests/fixtures/gpt2/tiny/config.json";

    #[test]
    fn a_config_alone_declares_the_model() {
        assert_eq!(errors(&format!("pub struct M {{ config: \"{TINY}\" }}")), Vec::<String>::new());
    }

    #[test]
    fn every_contradiction_is_listed_under_the_path() {
        let found = errors(&format!(
            "pub struct M {{ config: \"{TINY}\", d_model: 32, heads: 2, norm_eps: 1e-6, activation: gelu_erf }}"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        let message = &found[0];
        for line in [
            "does not describe this model:",
            "n_embd 64 ≠ d_model 32",
            "n_head 4 ≠ heads 2",
            "layer_norm_epsilon 1e-5 ≠ norm_eps 1e-6",
            "activation_function \"gelu_new\" ≠ activation: gelu_erf \"gelu\"",
        ] {
            assert!(message.contains(line), "{line:?} in {message}");
        }
    }

    #[test]
    fn a_tied_head_against_an_untied_config_is_refused() {
        let mistral = "../tests/fixtures/llama/mistral/config.json";
        let found = errors(&format!("pub struct M {{ config: \"{mistral}\", lm_head: tied }}"));
        assert!(found[0].contains("tie_word_embeddings false ≠ lm_head: tied true"), "{found:?}");
    }

    #[test]
    fn a_tied_declaration_of_an_unscaled_t5_is_refused() {
        let t5 = "../tests/fixtures/seq2seq/t5_tied_unscaled_v5/config.json";
        let found = errors(&format!("pub struct M {{ config: \"{t5}\", max_positions: 64, lm_head: tied }}"));
        assert!(found[0].contains("scale_decoder_outputs false ≠ lm_head: tied"), "{found:?}");
    }

    #[test]
    fn a_missing_file_or_a_foreign_model_type_is_an_error_naming_it() {
        let found = errors("pub struct M { config: \"no/such/config.json\" }");
        assert!(found[0].contains("cannot read") && found[0].contains("no/such/config.json"), "{found:?}");
        let found = errors("pub struct M { config: 384 }");
        assert!(found[0].contains("a string"), "{found:?}");
        let paper = "../tests/fixtures/alternating/config.json";
        let found = errors(&format!("pub struct M {{ config: \"{paper}\" }}"));
        assert!(found[0].contains("no `model_type`"), "{found:?}");
    }

    #[test]
    fn a_key_the_library_cannot_run_is_refused() {
        let dir = std::env::temp_dir().join(format!("transformer-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(TINY).unwrap();
        let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
        config["scale_attn_by_inverse_layer_idx"] = serde_json::Value::Bool(true);
        let path = dir.join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let found = errors(&format!("pub struct M {{ config: \"{}\" }}", path.display()));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(found[0].contains("scale_attn_by_inverse_layer_idx true ≠ unread"), "{found:?}");
    }
}
