//! Rotary position embeddings over fused `[Q | K | V]` rows: the tables built once for a model's
//! context, applied to the query and key heads of every row at its position.

use crate::kernels::rope::{rope_heads, rope_tables};
use crate::Batch;

/// RoPE tables for positions `0..max_positions` (HF LLaMA "rotate half" convention, default rope
/// type; see [`crate::kernels::rope`] for the float32 arithmetic matched).
#[derive(Clone, Debug)]
pub struct Rope {
    max_positions: usize,
    head_dim: usize,
    rotary_dims: usize,
    /// `[max_positions][rotary_dims / 2]`
    cos: Vec<f32>,
    /// Same layout as `cos`.
    sin: Vec<f32>,
}

impl Rope {
    /// Tables for `max_positions` positions of heads of `head_dim` floats whose first `rotary_dims`
    /// dims rotate (`rotary_dims == head_dim` for LLaMA / Mistral; smaller for partial rotary
    /// models), with base `theta` (`rope_theta`, e.g. 10000 or 1e6). Allocates
    /// `max_positions × rotary_dims` floats. Panics unless `0 < head_dim`, `rotary_dims` is even and
    /// `rotary_dims ≤ head_dim`.
    pub fn new(max_positions: usize, head_dim: usize, rotary_dims: usize, theta: f64) -> Self {
        assert!(head_dim > 0, "rope: head_dim must be positive");
        assert!(rotary_dims.is_multiple_of(2), "rope: rotary dims {rotary_dims} must be even");
        assert!(rotary_dims <= head_dim, "rope: {rotary_dims} rotary dims exceed head_dim = {head_dim}");
        let n = max_positions.checked_mul(rotary_dims / 2).expect("rope: table size overflows usize");
        let (mut cos, mut sin) = (vec![0.0; n], vec![0.0; n]);
        rope_tables(rotary_dims, theta, &mut cos, &mut sin);
        Self { max_positions, head_dim, rotary_dims, cos, sin }
    }

    /// Positions the tables cover.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Floats per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Leading dims of each head that rotate.
    pub fn rotary_dims(&self) -> usize {
        self.rotary_dims
    }

    /// `cos` of position `pos`'s `rotary_dims / 2` angles. Panics if `pos ≥ max_positions`.
    pub fn cos_at(&self, pos: usize) -> &[f32] {
        self.check_position(pos);
        let half = self.rotary_dims / 2;
        &self.cos[pos * half..(pos + 1) * half]
    }

    /// `sin` of position `pos`'s angles, as [`Rope::cos_at`].
    pub fn sin_at(&self, pos: usize) -> &[f32] {
        self.check_position(pos);
        let half = self.rotary_dims / 2;
        &self.sin[pos * half..(pos + 1) * half]
    }

    /// Rotates `heads.len() / head_dim` consecutive head vectors, all at position `pos`.
    pub fn rotate(&self, heads: &mut [f32], pos: usize) {
        rope_heads(heads, self.head_dim, self.cos_at(pos), self.sin_at(pos));
    }

    /// Rotates, in every row of `qkv`, the `heads` query heads and the `kv_heads` key heads; rows are
    /// `[Q (heads·HD) | K (kv_heads·HD) | V (kv_heads·HD)]` as the fused QKV projection writes them
    /// (`HD = head_dim`), and the values are left untouched.
    ///
    /// Row `r` is at position `batch.position(r) + starts[r / batch.seq_len()]` (`starts`: e.g. a
    /// cache's lengths for a cached step; `None` = 0). Padding rows repeat their sequence's last real
    /// position, so they stay inside the table. Allocates nothing.
    ///
    /// Panics if `qkv` is not `batch.rows()` such rows, `starts` does not have one entry per
    /// sequence, or a position reaches `max_positions` (the caller validates input before).
    pub fn apply(
        &self,
        qkv: &mut [f32],
        batch: &Batch,
        starts: Option<&[usize]>,
        heads: usize,
        kv_heads: usize,
    ) {
        let hd = self.head_dim;
        let stride = (heads + 2 * kv_heads) * hd;
        assert_eq!(
            qkv.len(),
            batch.rows() * stride,
            "rope: qkv has {} floats, expected {} rows of (heads {heads} + 2 × kv_heads {kv_heads}) × {hd}",
            qkv.len(),
            batch.rows()
        );
        if let Some(starts) = starts {
            assert_eq!(
                starts.len(),
                batch.batch_size(),
                "rope: {} start positions for {} sequences",
                starts.len(),
                batch.batch_size()
            );
        }
        if stride == 0 {
            return;
        }
        let seq = batch.seq_len();
        for (r, row) in qkv.chunks_exact_mut(stride).enumerate() {
            let pos = batch.position(r) + starts.map_or(0, |s| s[r / seq]);
            self.rotate(&mut row[..(heads + kv_heads) * hd], pos);
        }
    }

    fn check_position(&self, pos: usize) {
        assert!(
            pos < self.max_positions,
            "rope: position {pos} is past the table's {} positions",
            self.max_positions
        );
    }
}
