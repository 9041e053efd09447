//! Text in, text out: a tokenizer turns texts into one padded [`Batch`] and generated ids back into
//! text, so a model's `embed_texts` / `generate_text` take strings.
//!
//! A text longer than the model takes is an error by default ([`Error::TextTooLong`](crate::Error::TextTooLong), naming its
//! length and the limit); cutting it is an explicit choice ([`Truncation::Cut`], which keeps the
//! special tokens and drops content from the end, as Hugging Face's right truncation does). The
//! checkpoint's own padding and truncation settings (all-MiniLM-L6-v2's tokenizer.json pads and
//! cuts to 128) are turned off when [`Tokenizer`] loads it: the batch pads itself, and nothing is
//! cut silently.
//!
//! [`TextTokenizer`] is what generated code calls; [`Tokenizer`] (feature `tokenizers`, on by
//! default in `transformer`) implements it over Hugging Face's `tokenizers` crate, and any other
//! tokenizer can implement it too.

use crate::{Batch, Result};

/// What to do with a text longer than the model's positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Truncation {
    /// [`Error::TextTooLong`](crate::Error::TextTooLong), naming the text, its length and the limit (the default).
    #[default]
    Refuse,
    /// Keep the special tokens and as much of the text's start as fits.
    Cut,
}

/// One text as token ids (special tokens included) and their token types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// Turns text into token ids and back.
pub trait TextTokenizer {
    /// `text` with the model's special tokens (BERT's `[CLS] … [SEP]`; none for GPT-2). When that
    /// is longer than `max_tokens`: an [`Error::TextTooLong`](crate::Error::TextTooLong) naming `index` under
    /// [`Truncation::Refuse`], the specials and the start of the text that fits under
    /// [`Truncation::Cut`].
    fn encode(&self, text: &str, index: usize, max_tokens: usize, truncation: Truncation) -> Result<Encoded>;

    /// The text of `ids`, special tokens skipped.
    fn decode(&self, ids: &[u32]) -> Result<String>;
}

/// Encodes `texts` and pads them into one batch (token types included).
pub fn batch(
    tokenizer: &impl TextTokenizer,
    texts: &[&str],
    max_tokens: usize,
    truncation: Truncation,
) -> Result<Batch> {
    let encoded = texts
        .iter()
        .enumerate()
        .map(|(i, text)| tokenizer.encode(text, i, max_tokens, truncation))
        .collect::<Result<Vec<Encoded>>>()?;
    let ids: Vec<&[u32]> = encoded.iter().map(|e| e.ids.as_slice()).collect();
    let types: Vec<&[u32]> = encoded.iter().map(|e| e.type_ids.as_slice()).collect();
    Batch::from_sequences(&ids)?.with_token_types(&types)
}

#[cfg(feature = "tokenizers")]
pub use hf::Tokenizer;

#[cfg(feature = "tokenizers")]
mod hf {
    use std::path::Path;

    use tokenizers::{PostProcessor, TruncationDirection};

    use super::{Encoded, TextTokenizer, Truncation};
    use crate::{Error, Result};

    /// A Hugging Face `tokenizer.json`, with its padding and truncation turned off (see the
    /// module documentation).
    #[derive(Clone, Debug)]
    pub struct Tokenizer {
        inner: tokenizers::Tokenizer,
    }

    impl Tokenizer {
        /// Reads `tokenizer.json`.
        pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
            let path = path.as_ref();
            let inner = tokenizers::Tokenizer::from_file(path)
                .map_err(|e| Error::Tokenizer { reason: format!("cannot read {}: {e}", path.display()) })?;
            Ok(Self::new(inner))
        }

        /// Wraps a tokenizer already built, turning its padding and truncation off.
        pub fn new(mut inner: tokenizers::Tokenizer) -> Self {
            inner.with_padding(None);
            // Turning truncation off cannot fail (only invalid truncation parameters can).
            let _ = inner.with_truncation(None);
            Tokenizer { inner }
        }

        /// The wrapped tokenizer.
        pub fn inner(&self) -> &tokenizers::Tokenizer {
            &self.inner
        }
    }

    fn error(e: impl std::fmt::Display) -> Error {
        Error::Tokenizer { reason: e.to_string() }
    }

    impl TextTokenizer for Tokenizer {
        fn encode(
            &self,
            text: &str,
            index: usize,
            max_tokens: usize,
            truncation: Truncation,
        ) -> Result<Encoded> {
            let mut encoding = self.inner.encode(text, false).map_err(error)?;
            let specials = self.inner.get_post_processor().map_or(0, |p| p.added_tokens(false));
            let tokens = encoding.len() + specials;
            if tokens > max_tokens {
                match truncation {
                    Truncation::Refuse => {
                        return Err(Error::TextTooLong { text: index, tokens, max: max_tokens })
                    }
                    Truncation::Cut if max_tokens <= specials => {
                        return Err(Error::TextTooLong { text: index, tokens: specials, max: max_tokens })
                    }
                    Truncation::Cut => {
                        encoding.truncate(max_tokens - specials, 0, TruncationDirection::Right)
                    }
                }
            }
            let encoding = self.inner.post_process(encoding, None, true).map_err(error)?;
            Ok(Encoded { ids: encoding.get_ids().to_vec(), type_ids: encoding.get_type_ids().to_vec() })
        }

        fn decode(&self, ids: &[u32]) -> Result<String> {
            self.inner.decode(ids, true).map_err(error)
        }
    }
}
