//! Masked-LM inputs and labels, BERT's rule: choose a fraction (15 %) of the positions that are
//! neither special tokens nor padding; of those, replace 80 % by the mask token, 10 % by a random
//! id and keep 10 %; the labels are the original ids at the chosen positions and
//! [`IGNORE_INDEX`] everywhere else.
//!
//! Two ways of choosing, after the two references:
//!
//! * [`Selection::Independent`]: each eligible position independently with the probability, as
//!   transformers' `DataCollatorForLanguageModeling` draws it (`torch.bernoulli` over the
//!   special-tokens mask). The count varies from sequence to sequence.
//! * [`Selection::PerSequence`]: exactly `max(1, round(probability × eligible))` positions of each
//!   sequence with an eligible position, uniformly (google-research/bert's
//!   `create_pretraining_data.py`, which rounds over all tokens and caps the count at
//!   `max_predictions_per_seq`; here it is over the eligible ones and uncapped).
//!
//! The replacement of each chosen position is one uniform draw `u`: `u < mask` → the mask token,
//! `u < mask + random` → an id uniform over the whole vocabulary (both references draw from every
//! id, so it may be a special token or the original), else kept. Every draw comes from a
//! [`Stream`] at the position's index, so the result is a function of the stream alone: pass the
//! epoch or step in it to mask a sentence differently each time it is seen (RoBERTa's dynamic
//! masking).

use crate::train::loss::IGNORE_INDEX;
use crate::train::rng::Stream;
use crate::{Error, Result};

/// How the positions to predict are chosen (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Each eligible position with the probability (transformers' collator).
    Independent,
    /// `max(1, round(probability × eligible))` positions per sequence (original BERT).
    PerSequence,
}

/// Masked-LM settings. [`MaskedLm::bert`] gives BERT's proportions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskedLm<'a> {
    /// The id written at the positions chosen to be masked (`[MASK]`).
    pub mask_token: u32,
    /// The vocabulary size: random replacements are drawn from `0..vocab`.
    pub vocab: usize,
    /// Ids never chosen (`[CLS]`, `[SEP]`, `[PAD]`, …), as a tokenizer's special-tokens mask.
    pub special: &'a [u32],
    /// The fraction of eligible positions chosen (0.15).
    pub probability: f64,
    /// Of the chosen positions, the fraction replaced by `mask_token` (0.8).
    pub mask_fraction: f64,
    /// Of the chosen positions, the fraction replaced by a random id (0.1); the rest keep theirs.
    pub random_fraction: f64,
    /// How the positions are chosen.
    pub selection: Selection,
}

impl<'a> MaskedLm<'a> {
    /// BERT's settings: 15 % chosen, 80 % of them masked, 10 % random, 10 % kept, each position
    /// independently (transformers' collator).
    pub fn bert(mask_token: u32, vocab: usize, special: &'a [u32]) -> Self {
        MaskedLm {
            mask_token,
            vocab,
            special,
            probability: 0.15,
            mask_fraction: 0.8,
            random_fraction: 0.1,
            selection: Selection::Independent,
        }
    }

    /// Every setting in range, else [`Error::BadTrainOption`] naming the first that is not.
    fn validate(&self) -> Result<()> {
        let bad = |option, value: f64, expected| Err(Error::BadTrainOption { option, value, expected });
        let unit = |p: f64| (0.0..=1.0).contains(&p);
        if !unit(self.probability) {
            return bad("the masking probability", self.probability, "a value in [0, 1]");
        }
        if !unit(self.mask_fraction) {
            return bad("the mask fraction", self.mask_fraction, "a value in [0, 1]");
        }
        if !unit(self.random_fraction) || self.mask_fraction + self.random_fraction > 1.0 {
            return bad("the random fraction", self.random_fraction, "a value in [0, 1 - mask fraction]");
        }
        if self.vocab == 0 || self.vocab as u64 > 1 << 32 {
            return bad("the vocabulary size", self.vocab as f64, "a size in 1..=2^32");
        }
        if self.mask_token as usize >= self.vocab {
            return bad("the mask token id", f64::from(self.mask_token), "an id below the vocabulary size");
        }
        Ok(())
    }
}

/// What [`mask_tokens`] did, summed over the batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Masked {
    /// Positions neither special nor padding.
    pub eligible: usize,
    /// Positions chosen (labelled).
    pub chosen: usize,
    /// Chosen positions given the mask token.
    pub masked: usize,
    /// Chosen positions given a random id.
    pub random: usize,
}

/// Draws per position: choice, replacement, random id.
const DRAWS: u64 = 3;

/// Rewrites `ids` (whole sequences of `seq` tokens) for masked-LM training as `config` says and
/// writes one label per id. A position is eligible unless its id is in `config.special` or
/// `attention_mask` (when given) is false there. Errors, before anything is written:
/// [`Error::BadTrainOption`] for a setting out of range, [`Error::LabelCountMismatch`] for labels
/// or a mask whose length is not the ids'. Panics if `ids` is not whole sequences.
pub fn mask_tokens(
    config: &MaskedLm<'_>,
    ids: &mut [u32],
    attention_mask: Option<&[bool]>,
    seq: usize,
    stream: Stream,
    labels: &mut [i64],
) -> Result<Masked> {
    config.validate()?;
    for found in [Some(labels.len()), attention_mask.map(<[bool]>::len)].into_iter().flatten() {
        if found != ids.len() {
            return Err(Error::LabelCountMismatch { labels: found, rows: ids.len() });
        }
    }
    assert!(
        seq > 0 && ids.len().is_multiple_of(seq),
        "mask_tokens: {} ids are not sequences of {seq}",
        ids.len()
    );
    let eligible = |i: usize, id: u32| attention_mask.is_none_or(|m| m[i]) && !config.special.contains(&id);
    let mut counts = Masked::default();
    for (s, (ids, labels)) in ids.chunks_exact_mut(seq).zip(labels.chunks_exact_mut(seq)).enumerate() {
        let start = s * seq;
        let n = ids.iter().enumerate().filter(|&(i, &id)| eligible(start + i, id)).count();
        counts.eligible += n;
        // Selection sampling (Knuth's algorithm S): the k-th of n eligible positions is chosen
        // with probability (wanted − chosen)/(n − seen), which picks a uniform subset of size k.
        let mut wanted = match config.selection {
            Selection::Independent => 0,
            Selection::PerSequence if n == 0 => 0,
            Selection::PerSequence => ((config.probability * n as f64).round() as usize).clamp(1, n),
        };
        let mut seen = 0;
        for (i, (id, label)) in ids.iter_mut().zip(labels.iter_mut()).enumerate() {
            *label = IGNORE_INDEX;
            let row = (start + i) as u64;
            if !eligible(start + i, *id) {
                continue;
            }
            let u = stream.uniform(row * DRAWS);
            let chosen = match config.selection {
                Selection::Independent => u < config.probability,
                Selection::PerSequence => u * ((n - seen) as f64) < wanted as f64,
            };
            seen += 1;
            if !chosen {
                continue;
            }
            wanted = wanted.saturating_sub(1);
            counts.chosen += 1;
            *label = i64::from(*id);
            let v = stream.uniform(row * DRAWS + 1);
            if v < config.mask_fraction {
                *id = config.mask_token;
                counts.masked += 1;
            } else if v < config.mask_fraction + config.random_fraction {
                *id = stream.below(row * DRAWS + 2, config.vocab as u64) as u32;
                counts.random += 1;
            }
        }
    }
    Ok(counts)
}
