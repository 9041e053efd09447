//! The input of an encoder forward pass: a padded batch of token ids, its padding mask and optional
//! token-type ids, checked against the model's static sizes before any kernel runs.

use ndarray::ArrayView2;

use crate::{Error, Result};

/// A batch of token-id sequences, padded on the right to one length.
///
/// Row-major `[batch, seq]` storage; `mask[i] == false` marks padding, which attention ignores and
/// pooling skips.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    ids: Vec<u32>,
    /// Position of each sequence's first token (non-zero when continuing a cached sequence).
    starts: Vec<usize>,
    type_ids: Option<Vec<u32>>,
    mask: Vec<bool>,
    batch: usize,
    seq: usize,
}

impl Batch {
    /// Sequences of different lengths, padded with id 0 and masked.
    pub fn from_sequences<S: AsRef<[u32]>>(sequences: &[S]) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let batch = sequences.len();
        let seq = sequences.iter().map(|s| s.as_ref().len()).max().unwrap_or(0);
        let mut ids = vec![0; batch * seq];
        let mut mask = vec![false; batch * seq];
        for (b, s) in sequences.iter().enumerate() {
            let s = s.as_ref();
            if s.is_empty() {
                return Err(Error::EmptySequence { sequence: b });
            }
            ids[b * seq..b * seq + s.len()].copy_from_slice(s);
            mask[b * seq..b * seq + s.len()].fill(true);
        }
        Ok(Self { ids, starts: vec![0; batch], type_ids: None, mask, batch, seq })
    }

    /// `batch` sequences of `seq` real tokens each and no ids to speak of: the batch of an image
    /// model, whose rows come from patches rather than a vocabulary.
    pub fn uniform(batch: usize, seq: usize) -> Result<Self> {
        if batch == 0 {
            return Err(Error::EmptyBatch);
        }
        if seq == 0 {
            return Err(Error::EmptySequence { sequence: 0 });
        }
        let n = batch * seq;
        Ok(Self { ids: vec![0; n], starts: vec![0; batch], type_ids: None, mask: vec![true; n], batch, seq })
    }

    /// Adds token-type (segment) ids, one sequence per token sequence, each of the same length.
    pub fn with_token_types<S: AsRef<[u32]>>(mut self, type_ids: &[S]) -> Result<Self> {
        if type_ids.len() != self.batch {
            return Err(Error::BatchSizeMismatch {
                what: "token type ids",
                expected: self.batch,
                found: type_ids.len(),
            });
        }
        let mut padded = vec![0; self.batch * self.seq];
        for (b, t) in type_ids.iter().enumerate() {
            let t = t.as_ref();
            let len = self.len_of(b);
            if t.len() != len {
                return Err(Error::LengthMismatch {
                    what: "token type ids",
                    sequence: b,
                    expected: len,
                    found: t.len(),
                });
            }
            padded[b * self.seq..b * self.seq + len].copy_from_slice(t);
        }
        self.type_ids = Some(padded);
        Ok(self)
    }

    /// An already padded batch, as tokenizers and Python code produce it: `ids` and `mask` are
    /// `[batch, seq]`, mask values 0 or 1.
    pub fn from_padded(
        ids: ArrayView2<'_, u32>,
        mask: ArrayView2<'_, u32>,
        type_ids: Option<ArrayView2<'_, u32>>,
    ) -> Result<Self> {
        let (batch, seq) = ids.dim();
        if batch == 0 {
            return Err(Error::EmptyBatch);
        }
        check_dims("attention mask", mask.dim(), (batch, seq))?;
        if let Some(t) = &type_ids {
            check_dims("token type ids", t.dim(), (batch, seq))?;
        }
        let mut flags = Vec::with_capacity(batch * seq);
        for ((b, p), &m) in mask.indexed_iter() {
            match m {
                0 => flags.push(false),
                1 => flags.push(true),
                value => return Err(Error::BadMaskValue { sequence: b, position: p, value }),
            }
        }
        for b in 0..batch {
            if !flags[b * seq..(b + 1) * seq].contains(&true) {
                return Err(Error::EmptySequence { sequence: b });
            }
        }
        Ok(Self {
            ids: ids.iter().copied().collect(),
            starts: vec![0; batch],
            type_ids: type_ids.map(|t| t.iter().copied().collect()),
            mask: flags,
            batch,
            seq,
        })
    }

    /// Continues each sequence at a position: sequence `b`'s first token sits at `starts[b]`
    /// (a decoder's cached length), so positions are `starts[b]..`.
    pub fn with_starts(mut self, starts: &[usize]) -> Result<Self> {
        if starts.len() != self.batch {
            return Err(Error::BatchSizeMismatch {
                what: "start positions",
                expected: self.batch,
                found: starts.len(),
            });
        }
        self.starts.copy_from_slice(starts);
        Ok(self)
    }

    /// This batch padded on the right to `seq` positions with id 0 and mask 0 (positions from 0,
    /// token types dropped), built in `reuse`'s storage when given: no allocation once that has
    /// grown to the shape.
    pub(crate) fn right_padded(&self, seq: usize, reuse: Option<Batch>) -> Batch {
        let mut out = reuse.unwrap_or_else(|| Batch {
            ids: Vec::new(),
            starts: Vec::new(),
            type_ids: None,
            mask: Vec::new(),
            batch: 0,
            seq: 0,
        });
        let pad = seq.saturating_sub(self.seq);
        out.ids.clear();
        out.mask.clear();
        for b in 0..self.batch {
            out.ids.extend_from_slice(&self.ids[b * self.seq..(b + 1) * self.seq]);
            out.ids.extend(std::iter::repeat_n(0, pad));
            out.mask.extend_from_slice(&self.mask[b * self.seq..(b + 1) * self.seq]);
            out.mask.extend(std::iter::repeat_n(false, pad));
        }
        out.starts.clear();
        out.starts.resize(self.batch, 0);
        out.type_ids = None;
        (out.batch, out.seq) = (self.batch, self.seq + pad);
        out
    }

    /// Checks every id against a model's sizes; generated models call this before running.
    pub fn validate(&self, vocab: usize, max_positions: usize, type_vocab: Option<usize>) -> Result<()> {
        // Padding ids are looked up too (attention then ignores them), so they must be in range.
        if let Some(i) = self.ids.iter().position(|&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange {
                sequence: i / self.seq,
                position: i % self.seq,
                token: self.ids[i],
                vocab,
            });
        }
        for b in 0..self.batch {
            let (start, len) = (self.start_of(b), self.extent_of(b));
            if start.saturating_add(len) > max_positions {
                return Err(if start == 0 {
                    Error::SequenceTooLong { sequence: b, len, max: max_positions }
                } else {
                    Error::ContextFull { sequence: b, needed: start.saturating_add(len), max: max_positions }
                });
            }
        }
        match (&self.type_ids, type_vocab) {
            (Some(_), None) => return Err(Error::TokenTypesNotSupported),
            (Some(types), Some(type_vocab)) => {
                if let Some(i) = types.iter().position(|&t| t as usize >= type_vocab) {
                    return Err(Error::TokenTypeOutOfRange {
                        sequence: i / self.seq,
                        position: i % self.seq,
                        type_id: types[i],
                        type_vocab,
                    });
                }
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Padded length of every sequence.
    pub fn seq_len(&self) -> usize {
        self.seq
    }

    /// Rows of the batch (`batch_size * seq_len`): the number of hidden-state rows a forward pass gives.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Token ids, `[batch, seq]` row-major.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Padding mask, `[batch, seq]` row-major; `true` is a real token.
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// The padding mask of sequence `b`.
    pub fn mask_of(&self, b: usize) -> &[bool] {
        &self.mask[b * self.seq..(b + 1) * self.seq]
    }

    /// Position of row `row`: its sequence's start plus its index. Padding rows after the last real
    /// token repeat the last real position, so any amount of padding stays inside the table
    /// (their outputs are ignored: no real token attends to them).
    pub fn position(&self, row: usize) -> usize {
        let b = row / self.seq;
        let last = self.extent_of(b).saturating_sub(1);
        self.starts[b] + (row % self.seq).min(last)
    }

    /// Position of sequence `b`'s first token.
    pub fn start_of(&self, b: usize) -> usize {
        self.starts[b]
    }

    /// Token type of row `row` (0 when none were given).
    pub fn type_id(&self, row: usize) -> u32 {
        self.type_ids.as_ref().map_or(0, |t| t[row])
    }

    /// Number of real (unmasked) tokens of sequence `b`.
    pub fn len_of(&self, b: usize) -> usize {
        self.mask_of(b).iter().filter(|&&m| m).count()
    }

    /// One past the last real token of sequence `b`.
    pub fn extent_of(&self, b: usize) -> usize {
        self.mask_of(b).iter().rposition(|&m| m).map_or(0, |p| p + 1)
    }
}

fn check_dims(what: &'static str, found: (usize, usize), expected: (usize, usize)) -> Result<()> {
    if found.0 != expected.0 {
        return Err(Error::BatchSizeMismatch { what, expected: expected.0, found: found.0 });
    }
    if found.1 != expected.1 {
        return Err(Error::LengthMismatch { what, sequence: 0, expected: expected.1, found: found.1 });
    }
    Ok(())
}
