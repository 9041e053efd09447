//! Composed models: the user writes the forward pass, the macro infers every tensor's shape.
//!
//! ```text
//! transformer::model! {
//!     pub struct Tiny {
//!         vocab_size: 256, max_positions: 64, d_model: 64, heads: 4,
//!         head_dim: d_model / heads,         // derived dims, checked whole
//!         d_ff: 4 * d_model, layers: 4,
//!     }
//!
//!     fn forward(tokens) -> logits {
//!         #[weights = "embed_tokens"]
//!         let x = embedding(tokens, vocab_size, d_model);
//!         #[weights = "layers.{layer}"]
//!         for layer in 0..layers {
//!             let h = layer_norm(x, eps = 1e-5);
//!             …
//!             x = x + attention_out + ffn_out;
//!         }
//!         …
//!         linear(x, vocab_size, bias = false)
//!     }
//! }
//! ```
//!
//! Phases, mirroring the presets': [`dims`] evaluates the struct's entries as named dims;
//! [`program`] interprets the body into sections of nodes with inferred widths (every mismatch an
//! error under its expression); [`lower`] turns them into the presets' [`crate::graph::Graph`]
//! (fusion, buffers), so codegen — and the generated API — is the same.

mod constant;
mod lower;
mod program;

use syn::spanned::Spanned;
use syn::Ident;

use crate::ast::{Forward, ModelInput, Value};
use crate::ctxt::Ctxt;
use crate::graph::Graph;
use crate::spec::{Activation, Attention, Norm, NormKind, Placement, Positions, Spec, WeightScheme};
use constant::Const;
use lower::Family;

/// Validates and lowers a composed model.
pub fn expand(input: &ModelInput, forward: &Forward) -> Result<(Spec, Graph), syn::Error> {
    let mut cx = Ctxt::new();
    let dims = dims(&mut cx, input);
    if forward.name != "forward" {
        cx.error(
            forward.name.span(),
            format!("the composed pass is `fn forward`, found `fn {}`", forward.name),
        );
    }
    let family = match forward.output.to_string().as_str() {
        "logits" => Some(Family::Decoder),
        "hidden" => Some(Family::Encoder),
        other => {
            cx.error(
                forward.output.span(),
                format!("unknown output `{other}`: `-> logits` (a causal language model) or `-> hidden` (per-token states and pooled embeddings)"),
            );
            None
        }
    };
    let program = program::interpret(&mut cx, &dims, forward);
    let dim = |name: &str| dims.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let lowered = match (program, family) {
        (Some(p), Some(f)) => lower::lower(&mut cx, &p, f, dim("max_positions"), forward.output.span()),
        _ => None,
    };
    cx.check()?;
    let Some(l) = lowered else {
        return Err(syn::Error::new(forward.output.span(), "the composed model could not be lowered"));
    };
    let family = family.unwrap_or(Family::Encoder);
    let span_of =
        |name: &str| dims.iter().find(|(n, _)| n == name).map_or(forward.output.span(), |(n, _)| n.span());
    let (heads, kv_heads, head_dim) = l.attention;
    // The standard consts come from the graph; a declared dim of the same name must agree.
    let mut cx = Ctxt::new();
    let derived = [
        ("vocab_size", Some(l.vocab_size)),
        ("max_positions", l.max_positions),
        ("type_vocab_size", l.type_vocab_size),
        ("d_model", Some(l.d_model)),
        ("heads", Some(heads)),
        ("head_dim", Some(head_dim)),
        ("layers", Some(l.graph.layers)),
    ];
    for (name, value) in derived {
        if let (Some(declared), Some(value)) = (dim(name), value) {
            if declared != value {
                cx.error(
                    span_of(name),
                    format!("`{name}` is declared {declared} but the forward pass makes it {value}; `Self::{}` must be one value", name.to_uppercase()),
                );
            }
        }
    }
    cx.check()?;
    let spec = Spec {
        attrs: input.attrs.clone(),
        vis: input.vis.clone(),
        name: input.name.clone(),
        vocab_size: l.vocab_size,
        max_positions: l.max_positions.unwrap_or(0),
        type_vocab_size: l.type_vocab_size,
        image: None,
        d_model: l.d_model,
        heads,
        head_dim,
        kv_heads,
        windows: Vec::new(),
        sparse: None,
        layers: l.graph.layers,
        d_ff: dim("d_ff").unwrap_or(0),
        // Read only by the presets' lowering, which a composed model does not use.
        activation: Activation::GeluErf,
        norm: Norm { kind: NormKind::LayerNorm, eps: 1e-5, placement: Placement::Pre },
        positions: Positions::Learned,
        attention: if family == Family::Decoder { Attention::Causal } else { Attention::Bidirectional },
        weights: WeightScheme::Bert,
        lm_head: None,
        classifier: None,
        d_model_span: span_of("d_model"),
        vocab_span: span_of("vocab_size"),
        scale_embeddings: false,
        parallel: false,
        seq2seq: None,
        dims: Some(dims),
    };
    Ok((spec, l.graph))
}

/// The struct's entries as named dims, in order; each may use the ones before it.
fn dims(cx: &mut Ctxt, input: &ModelInput) -> Vec<(Ident, usize)> {
    let mut out: Vec<(Ident, usize)> = Vec::new();
    for entry in &input.entries {
        if out.iter().any(|(n, _)| *n == entry.key) {
            cx.error(entry.key.span(), format!("`{}` is declared twice", entry.key));
            continue;
        }
        let expr: syn::Expr = match &entry.value {
            Value::Int(l) => syn::Expr::Lit(syn::ExprLit { attrs: vec![], lit: syn::Lit::Int(l.clone()) }),
            Value::Name(n) => syn::parse_quote!(#n),
            Value::Other(tokens) => match syn::parse2(tokens.clone()) {
                Ok(e) => e,
                Err(e) => {
                    cx.error(e.span(), format!("a dim is an integer expression: {e}"));
                    continue;
                }
            },
            other => {
                cx.error(
                    other.span(),
                    format!(
                        "a dim is a whole number ≥ 1 (or an expression of the dims above), found {}",
                        other.describe()
                    ),
                );
                continue;
            }
        };
        let lookup = |name: &str| out.iter().find(|(n, _)| n == name).map(|(_, v)| Const::Int(*v as i128));
        match constant::eval(&expr, &lookup) {
            Ok(Const::Int(n)) if (1..=(1 << 40)).contains(&n) => out.push((entry.key.clone(), n as usize)),
            Ok(other) => cx.error(
                expr.span(),
                format!("`{}` must be a whole number ≥ 1, found {}", entry.key, other.describe()),
            ),
            Err(e) => cx.error(e.span(), e),
        }
    }
    out
}
