//! The key/value cache of a decoder: per layer and per sequence, the keys and values of every
//! token seen so far, preallocated for the model's whole context so a decode step only appends.

use crate::layers::additive::AlignmentState;
use crate::{Batch, Error, Result};

/// Keys and values of `layers × batch` sequences, each with room for `max_positions` rows of
/// `kv_width` floats. Sequence lengths advance together after each step (all layers appended).
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: usize,
    batch: usize,
    max_positions: usize,
    kv_width: usize,
    /// `[layer][sequence][position][kv_width]`
    keys: Vec<f32>,
    /// Same layout as `keys`.
    values: Vec<f32>,
    lens: Vec<usize>,
    /// Per layer: a location-sensitive cross-attention's alignments (empty for other models),
    /// made for the encoded sources on the first step (see [`KvCache::take_alignments`]).
    alignments: Vec<AlignmentState>,
}

impl KvCache {
    /// An empty cache; allocates `2 × layers × batch × max_positions × kv_width` floats once.
    pub fn new(layers: usize, batch: usize, max_positions: usize, kv_width: usize) -> Self {
        let n = layers * batch * max_positions * kv_width;
        Self {
            layers,
            batch,
            max_positions,
            kv_width,
            keys: vec![0.0; n],
            values: vec![0.0; n],
            lens: vec![0; batch],
            alignments: Vec::new(),
        }
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Rows each sequence has room for.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Width of one cached key (or value) row: `kv_heads × head_dim`.
    pub fn kv_width(&self) -> usize {
        self.kv_width
    }

    /// Layers cached.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Tokens cached so far for each sequence.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Forgets every sequence (keeps the memory).
    pub fn reset(&mut self) {
        self.lens.fill(0);
    }

    /// Moves out the per-layer alignment states of a location-sensitive cross-attention over
    /// `sources`, for a step to continue (give them back with
    /// [`restore_alignments`](Self::restore_alignments)). They are made on the first step (and
    /// again for new sources once the cache is empty); a sequence with no cached tokens starts
    /// from zero alignments.
    ///
    /// # Errors
    ///
    /// [`Error::CacheSourcesMismatch`] when the cache holds tokens decoded against sources of
    /// another padded length.
    pub fn take_alignments(&mut self, layers: usize, sources: &Batch) -> Result<Vec<AlignmentState>> {
        let mut states = std::mem::take(&mut self.alignments);
        let fits = states.len() == layers && states.iter().all(|s| s.fits(sources));
        if !fits {
            if let (true, Some(state)) = (self.lens.iter().any(|&n| n > 0), states.first()) {
                let cached = state.source_len();
                self.alignments = states;
                return Err(Error::CacheSourcesMismatch { cached, sources: sources.seq_len() });
            }
            states = (0..layers).map(|_| AlignmentState::new(sources)).collect();
        }
        for state in &mut states {
            for (b, _) in self.lens.iter().enumerate().filter(|(_, n)| **n == 0) {
                state.reset_sequence(b);
            }
        }
        Ok(states)
    }

    /// Puts back the alignment states a step took with [`take_alignments`](Self::take_alignments).
    pub fn restore_alignments(&mut self, states: Vec<AlignmentState>) {
        self.alignments = states;
    }

    /// Ends a step: sequence `b` now holds `new[b]` more tokens. Called once after every layer
    /// has appended its rows.
    pub fn advance(&mut self, new: &[usize]) {
        assert_eq!(new.len(), self.batch, "one count per cached sequence");
        for (len, n) in self.lens.iter_mut().zip(new) {
            *len += n;
            assert!(*len <= self.max_positions, "cache advanced past its capacity");
        }
    }

    /// Checks that `batch` can continue this cache: one sequence per cached sequence, and each
    /// sequence's cached plus new tokens within the capacity.
    pub fn check_step(&self, batch: &Batch) -> Result<()> {
        if batch.batch_size() != self.batch {
            return Err(Error::BatchSizeMismatch {
                what: "the step's batch (one sequence per cached sequence)",
                expected: self.batch,
                found: batch.batch_size(),
            });
        }
        for (b, &len) in self.lens.iter().enumerate() {
            if batch.extent_of(b) != batch.len_of(b) {
                return Err(Error::NotRightPadded { sequence: b });
            }
            let needed = len.saturating_add(batch.start_of(b)).saturating_add(batch.extent_of(b));
            if needed > self.max_positions {
                return Err(Error::ContextFull { sequence: b, needed, max: self.max_positions });
            }
        }
        Ok(())
    }

    /// [`KvCache::advance`] by each sequence's real new tokens in `batch` (right padding).
    pub fn advance_batch(&mut self, batch: &Batch) {
        assert_eq!(batch.batch_size(), self.batch, "one batch sequence per cached sequence");
        for (b, len) in self.lens.iter_mut().enumerate() {
            *len += batch.extent_of(b);
            assert!(*len <= self.max_positions, "cache advanced past its capacity");
        }
    }

    /// The key and value buffers of one layer, split per sequence: `batch` pairs of
    /// `max_positions × kv_width` slices, so sequences can be filled and read in parallel.
    pub fn layer_mut(&mut self, layer: usize) -> impl Iterator<Item = (&mut [f32], &mut [f32])> {
        assert!(layer < self.layers, "layer {layer} of a {}-layer cache", self.layers);
        let per_seq = self.max_positions * self.kv_width;
        let range = layer * self.batch * per_seq..(layer + 1) * self.batch * per_seq;
        self.keys[range.clone()].chunks_mut(per_seq).zip(self.values[range].chunks_mut(per_seq))
    }
}
