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

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(lens: &[usize]) -> Batch {
        let seqs: Vec<Vec<u32>> = lens.iter().map(|&n| vec![3; n]).collect();
        Batch::from_sequences(&seqs).expect("valid sources")
    }

    #[test]
    fn alignments_are_made_for_the_sources_and_kept_while_decoding() {
        let mut cache = KvCache::new(2, 2, 8, 4);
        let first = sources(&[5, 3]);
        let states = cache.take_alignments(2, &first).unwrap();
        assert_eq!(states.len(), 2);
        assert!(states.iter().all(|s| s.fits(&first) && s.previous(1).iter().all(|&a| a == 0.0)));
        cache.restore_alignments(states);
        cache.advance(&[1, 1]);
        let other = sources(&[2, 2]);
        let err = cache.take_alignments(2, &other).unwrap_err();
        assert!(matches!(err, Error::CacheSourcesMismatch { cached: 5, sources: 2 }), "{err}");
        // The failed call kept the states: the first sources still continue.
        assert!(cache.take_alignments(2, &first).unwrap().iter().all(|s| s.fits(&first)));
    }

    #[test]
    fn an_empty_cache_takes_new_sources() {
        let mut cache = KvCache::new(1, 1, 8, 4);
        let states = cache.take_alignments(1, &sources(&[5])).unwrap();
        cache.restore_alignments(states);
        cache.advance(&[2]);
        cache.reset();
        let states = cache.take_alignments(1, &sources(&[2])).unwrap();
        assert!(states[0].fits(&sources(&[2])));
    }
}
