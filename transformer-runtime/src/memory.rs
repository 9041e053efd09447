//! What an encoder-decoder's cross-attention reads: the encoder's output for a batch of sources,
//! and each decoder layer's keys and values of it, projected once per source rather than once per
//! generated token.

use crate::{Batch, Error, Result};

/// An encoded batch of sources: their final hidden states and, per decoder layer, the
/// cross-attention keys and values (`[K | V]` rows). Built by a generated model's `encode`.
#[derive(Clone, Debug)]
pub struct EncoderMemory {
    sources: Batch,
    hidden: Vec<f32>,
    key_values: Vec<Vec<f32>>,
}

impl EncoderMemory {
    /// `hidden`: `sources.rows()` rows of the encoder's width; `key_values[l]`: `sources.rows()`
    /// rows of decoder layer `l`'s `[K | V]`.
    pub fn new(sources: Batch, hidden: Vec<f32>, key_values: Vec<Vec<f32>>) -> Self {
        let rows = sources.rows();
        assert!(rows > 0 && hidden.len().is_multiple_of(rows), "hidden states do not fit the sources");
        for kv in &key_values {
            assert!(kv.len().is_multiple_of(rows), "cross-attention keys and values do not fit the sources");
        }
        Self { sources, hidden, key_values }
    }

    /// The encoded sources (their padding masks the cross-attention).
    pub fn sources(&self) -> &Batch {
        &self.sources
    }

    /// The encoder's output, `sources().rows()` rows, row-major.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Decoder layer `layer`'s cross-attention `[K | V]` rows.
    pub fn key_values(&self, layer: usize) -> &[f32] {
        &self.key_values[layer]
    }

    /// Number of sources.
    pub fn batch_size(&self) -> usize {
        self.sources.batch_size()
    }

    /// A decoder batch must hold one sequence per source, in order.
    pub fn check_targets(&self, targets: &Batch) -> Result<()> {
        if targets.batch_size() == self.batch_size() {
            Ok(())
        } else {
            Err(Error::MemoryMismatch { sources: self.batch_size(), targets: targets.batch_size() })
        }
    }
}
