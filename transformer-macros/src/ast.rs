//! The typed syntax of a `model!` invocation, before any validation:
//!
//! ```text
//! /// docs
//! pub struct Name {
//!     key: value,
//!     ...
//! }
//! ```
//!
//! Values stay loosely typed here (an integer, a float, a name, or something else) so that
//! validation can report every wrong key and value together instead of stopping at the first.
//!
//! A composed model (see [`crate::compose`]) follows the struct with its forward pass, or with an
//! encoder and a decoder pass for an encoder-decoder:
//!
//! ```text
//! #[weights(ignore = ["…"])]
//! fn forward(tokens) -> logits { statements }
//!
//! fn encode(tokens) -> memory { statements }
//! fn decode(tokens, memory) -> logits { statements }
//! ```
//!
//! whose bodies are kept as `syn` statements: every expression keeps its span for shape errors.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitFloat, LitInt, Token, Visibility};

/// The whole invocation.
#[derive(Clone)]
pub struct ModelInput {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub entries: Vec<Entry>,
    /// The passes of a composed model (`forward`, or `encode` and `decode`); presets have none.
    pub functions: Vec<Forward>,
}

/// `fn name(inputs) -> output { body }`: one pass of a composed model.
#[derive(Clone)]
pub struct Forward {
    pub attrs: Vec<Attribute>,
    pub name: Ident,
    pub inputs: Vec<Ident>,
    /// `-> hidden`; for a tuple, `outputs` spanned over its parentheses.
    pub output: Ident,
    /// `-> (states, embedding)`: each named output (empty for a single output).
    pub tuple: Vec<Ident>,
    pub body: syn::Block,
}

impl Parse for Forward {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        input.parse::<Token![fn]>()?;
        let name: Ident = input.parse()?;
        let args;
        syn::parenthesized!(args in input);
        let inputs = args.parse_terminated(Ident::parse, Token![,])?.into_iter().collect();
        input.parse::<Token![->]>()?;
        let (output, tuple) = if input.peek(syn::token::Paren) {
            let names;
            let parens = syn::parenthesized!(names in input);
            let tuple: Vec<Ident> = names.parse_terminated(Ident::parse, Token![,])?.into_iter().collect();
            if tuple.is_empty() {
                return Err(syn::Error::new(
                    parens.span.join(),
                    "expected the outputs' names, e.g. `-> (states, embedding)`",
                ));
            }
            (Ident::new("outputs", parens.span.join()), tuple)
        } else {
            (input.parse()?, Vec::new())
        };
        let body: syn::Block = input.parse()?;
        Ok(Forward { attrs, name, inputs, output, tuple, body })
    }
}

/// One `key: value` line.
#[derive(Clone)]
pub struct Entry {
    pub key: Ident,
    pub value: Value,
}

/// A value as written.
#[derive(Clone)]
pub enum Value {
    /// `384`, `30_522`
    Int(LitInt),
    /// `1e-12`, `0.5` (or a negated one: `-1e-5`, whose span covers the sign)
    Float { value: f64, span: Span, text: String },
    /// A negative integer, kept apart so "must be positive" can say so.
    NegInt { value: i128, span: Span },
    /// `gelu_erf`, `post`, `bert`
    Name(Ident),
    /// `{ layers: 6, attention: causal }`: the keys of one stack of an encoder-decoder model.
    Section { entries: Vec<Entry>, span: Span },
    /// `[8, global, 8, global]`: one value per layer.
    List { items: Vec<Value>, span: Span },
    /// Anything else (a string, a path, an expression): always a type error.
    Other(TokenStream),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Int(l) => l.span(),
            Value::Float { span, .. } | Value::NegInt { span, .. } => *span,
            Value::Name(i) => i.span(),
            Value::Section { span, .. } | Value::List { span, .. } => *span,
            Value::Other(t) => t.span(),
        }
    }

    /// How the value reads in an error message ("an integer", "the name `foo`", …).
    pub fn describe(&self) -> String {
        match self {
            Value::Int(l) => format!("the integer `{l}`"),
            Value::Float { text, .. } => format!("the number `{text}`"),
            Value::NegInt { value, .. } => format!("the integer `{value}`"),
            Value::Name(i) => format!("the name `{i}`"),
            Value::Section { .. } => "a `{ … }` section".to_string(),
            Value::List { .. } => "a `[ … ]` list".to_string(),
            Value::Other(t) => format!("`{t}`"),
        }
    }
}

impl Parse for ModelInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let body;
        syn::braced!(body in input);
        let entries = parse_entries(&body)?;
        let mut functions = Vec::new();
        while input.peek(Token![fn]) || input.peek(Token![#]) {
            functions.push(input.parse()?);
        }
        if !input.is_empty() {
            return Err(input.error(
                "unexpected tokens after the model: declare one model per `model!`, optionally followed by its `fn forward(…) -> … { … }` (or `fn encode` and `fn decode`)",
            ));
        }
        Ok(ModelInput { attrs, vis, name, entries, functions })
    }
}

/// `key: value, …` up to the end of a brace group (a trailing comma allowed).
fn parse_entries(body: ParseStream) -> syn::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    while !body.is_empty() {
        entries.push(body.parse()?);
        if body.is_empty() {
            break;
        }
        body.parse::<Token![,]>()?;
    }
    Ok(entries)
}

impl Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        input.parse::<Token![:]>()?;
        let value = input.parse()?;
        Ok(Entry { key, value })
    }
}

impl Parse for Value {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // A literal or name counts only when the entry ends right after it: `384 * 2` is an
        // expression, kept whole below so the error can quote it instead of "expected `,`".
        let (ends2, ends3) = (value_ends_after(input, 1), value_ends_after(input, 2));
        // The sign first: syn's `LitInt`/`LitFloat` would otherwise take `-12` as one literal, and
        // `-12` would fail as "invalid digit" instead of reaching "must be at least 1".
        if input.peek(Token![-]) && (input.peek2(LitInt) || input.peek2(LitFloat)) && ends3 {
            let minus: Token![-] = input.parse()?;
            // On stable `join` is unavailable: point at the sign, the token that makes it wrong.
            let span = |end: Span| minus.span.join(end).unwrap_or(minus.span);
            if input.peek(LitInt) {
                let lit: LitInt = input.parse()?;
                return Ok(Value::NegInt { value: -lit.base10_parse::<i128>()?, span: span(lit.span()) });
            }
            let lit: LitFloat = input.parse()?;
            return Ok(Value::Float {
                value: -lit.base10_parse::<f64>()?,
                span: span(lit.span()),
                text: format!("-{lit}"),
            });
        }
        if input.peek(LitInt) && ends2 {
            return Ok(Value::Int(input.parse()?));
        }
        if input.peek(LitFloat) && ends2 {
            let lit: LitFloat = input.parse()?;
            return Ok(Value::Float { value: lit.base10_parse()?, span: lit.span(), text: lit.to_string() });
        }
        if input.peek(syn::token::Brace) && ends2 {
            let body;
            let brace = syn::braced!(body in input);
            return Ok(Value::Section { entries: parse_entries(&body)?, span: brace.span.join() });
        }
        if input.peek(syn::token::Bracket) && ends2 {
            let body;
            let bracket = syn::bracketed!(body in input);
            let mut items = Vec::new();
            while !body.is_empty() {
                items.push(body.parse()?);
                if body.is_empty() {
                    break;
                }
                body.parse::<Token![,]>()?;
            }
            return Ok(Value::List { items, span: bracket.span.join() });
        }
        if input.peek(Ident) && ends2 {
            return Ok(Value::Name(input.call(syn::ext::IdentExt::parse_any)?));
        }
        // Anything else up to the next top-level comma (or the next `key:`), kept whole for the
        // error message.
        let mut tokens = TokenStream::new();
        while !value_ends_after(input, 0) {
            let tt: proc_macro2::TokenTree = input.parse()?;
            tt.to_tokens(&mut tokens);
        }
        if tokens.is_empty() {
            return Err(input.error("expected a value after `:`"));
        }
        Ok(Value::Other(tokens))
    }
}

/// Whether a value ends after its next `n` tokens: at a `,`, at the end of the braces, or at the
/// start of the next `key:` (a forgotten comma, which the caller reports as "expected `,`").
fn value_ends_after(input: ParseStream, n: usize) -> bool {
    let mut cursor = input.cursor();
    for _ in 0..n {
        match cursor.token_tree() {
            Some((_, next)) => cursor = next,
            None => return false,
        }
    }
    if cursor.eof() {
        return true;
    }
    if let Some((punct, _)) = cursor.punct() {
        return punct.as_char() == ',';
    }
    match cursor.ident().and_then(|(_, next)| next.punct()) {
        Some((colon, _)) => colon.as_char() == ':' && colon.spacing() == proc_macro2::Spacing::Alone,
        None => false,
    }
}
