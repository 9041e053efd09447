//! Block-sparse attention patterns of the Sparse Transformer (Child et al. 2019, "Generating Long
//! Sequences with Sparse Transformers", §4.2), at block granularity, as the OpenAI and DeepSpeed
//! block-sparse kernels implement them: positions are cut into blocks of `b` rows, query block
//! `I = p / b` attends whole key blocks `J = j / b`, and a layout over blocks says which.
//!
//! The attention kernel ([`attention_block_sparse`](super::attention::attention_block_sparse))
//! walks only the key tiles inside blocks visible to its current query block
//! ([`BlockSparse::next_visible_block`]), so a pass costs the visible blocks, not `S²`. `b` is a
//! whole number of the kernel's key tiles ([`BlockSize`]), so a tile never straddles two key
//! blocks and a tile is either wholly visible to a query block or not at all.

use std::num::NonZeroUsize;
use std::ops::RangeInclusive;

use super::attention::{Mask, KEY_TILE};

/// A block size that is not a positive multiple of the attention kernel's key tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "block size {rows} is not a positive multiple of the attention kernel's key tile ({tile} keys): \
     a key tile must never straddle two key blocks"
)]
pub struct BlockSizeError {
    /// The block size asked for.
    pub rows: usize,
    /// The kernel's key tile ([`BlockSize::TILE`]).
    pub tile: usize,
}

/// Rows per block of a block-sparse pattern: a positive multiple of the kernel's key tile
/// ([`BlockSize::TILE`], 64), so every key tile the kernel loads lies in one key block. Only
/// [`BlockSize::new`] (and [`BlockSize::ONE_TILE`]) make one, so the constraint holds by
/// construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSize(NonZeroUsize);

impl BlockSize {
    /// The attention kernel's key tile: keys scored together, and the unit of a block size.
    pub const TILE: usize = KEY_TILE;

    /// One key tile per block (`b = 64`), the finest layout the kernel skips at.
    pub const ONE_TILE: Self = match NonZeroUsize::new(KEY_TILE) {
        Some(rows) => Self(rows),
        None => panic!("the key tile is positive"),
    };

    /// A block of `rows` positions; `Err` unless `rows` is a positive multiple of [`Self::TILE`].
    pub const fn new(rows: usize) -> Result<Self, BlockSizeError> {
        match NonZeroUsize::new(rows) {
            Some(nz) if rows.is_multiple_of(KEY_TILE) => Ok(Self(nz)),
            _ => Err(BlockSizeError { rows, tile: KEY_TILE }),
        }
    }

    /// Rows (positions) per block.
    #[inline]
    pub const fn get(self) -> usize {
        self.0.get()
    }
}

/// The two layouts of the Sparse Transformer (§4.2), over blocks. `I` is the query block, `J` the
/// key block; under a causal mask every pattern also requires `J ≤ I` (and `j ≤ p` inside the
/// diagonal block, from the mask itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SparsePattern {
    /// Strided attention (the paper's `A⁽¹⁾` local band and `A⁽²⁾` strided column, `ℓ = stride`):
    /// with `d = I − J` (causal) or `d = |I − J|` (bidirectional), `J` is visible iff
    /// `d < stride  ∨  d mod stride = 0`.
    Strided { stride: NonZeroUsize },
    /// Fixed attention (`A⁽¹⁾` the block's own group of `stride` blocks, `A⁽²⁾` the last
    /// `summary` blocks of every group, the paper's `c`): `J` is visible iff
    /// `⌊J / stride⌋ = ⌊I / stride⌋  ∨  J mod stride ≥ stride − summary`
    /// (`summary = 0`: groups only; `summary ≥ stride`: every block). Bidirectionally the rule
    /// applies as written, so a query block also sees later groups' summary blocks.
    Fixed { stride: NonZeroUsize, summary: usize },
}

/// A block-sparse layout: `pattern` over blocks of `block` positions. Query position `p` sees key
/// `j` iff the [`Mask`] lets it (padding, causal limit, window) and [`Self::block_sees`]`(p / b,
/// j / b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSparse {
    pub pattern: SparsePattern,
    pub block: BlockSize,
}

impl BlockSparse {
    pub const fn new(pattern: SparsePattern, block: BlockSize) -> Self {
        Self { pattern, block }
    }

    /// The strided layout over blocks of `block` positions; `None` unless `block` is a positive
    /// multiple of [`BlockSize::TILE`] and `stride ≥ 1`. `const`, so generated models build
    /// their layout at compile time.
    pub const fn strided(block: usize, stride: usize) -> Option<Self> {
        match (BlockSize::new(block), NonZeroUsize::new(stride)) {
            (Ok(block), Some(stride)) => Some(Self::new(SparsePattern::Strided { stride }, block)),
            _ => None,
        }
    }

    /// The fixed layout over blocks of `block` positions; `None` unless `block` is a positive
    /// multiple of [`BlockSize::TILE`] and `stride ≥ 1`.
    pub const fn fixed(block: usize, stride: usize, summary: usize) -> Option<Self> {
        match (BlockSize::new(block), NonZeroUsize::new(stride)) {
            (Ok(block), Some(stride)) => Some(Self::new(SparsePattern::Fixed { stride, summary }, block)),
            _ => None,
        }
    }

    /// Whether query block `query_block` attends key block `key_block` (the predicates of
    /// [`SparsePattern`]; with `causal`, also `key_block ≤ query_block`).
    #[inline]
    pub fn block_sees(&self, query_block: usize, key_block: usize, causal: bool) -> bool {
        let (i, j) = (query_block, key_block);
        if causal && j > i {
            return false;
        }
        match self.pattern {
            SparsePattern::Strided { stride } => {
                let (d, l) = (i.abs_diff(j), stride.get());
                d < l || d.is_multiple_of(l)
            }
            SparsePattern::Fixed { stride, summary } => {
                let l = stride.get();
                j / l == i / l || j % l >= l.saturating_sub(summary)
            }
        }
    }

    /// Whether the query at position `pos` sees key `j`: `mask.sees(pos, j)` and the block rule
    /// (causal as `mask.causal`).
    #[inline]
    pub fn sees(&self, mask: &Mask<'_>, pos: usize, j: usize) -> bool {
        let b = self.block.get();
        mask.sees(pos, j) && self.block_sees(pos / b, j / b, mask.causal)
    }

    /// The first key block `J ≥ from` that one of `query_blocks` attends, if any: how the kernel
    /// steps from one visible block to the next without testing the blocks in between. (Causal:
    /// `None` once `from` passes the last query block; bidirectional strided and fixed patterns
    /// always have one, possibly past the keys, which the caller bounds.)
    pub fn next_visible_block(
        &self,
        query_blocks: RangeInclusive<usize>,
        from: usize,
        causal: bool,
    ) -> Option<usize> {
        query_blocks.filter_map(|i| self.next_visible_for(i, from, causal)).min()
    }

    /// [`Self::next_visible_block`] for one query block `i`.
    fn next_visible_for(&self, i: usize, from: usize, causal: bool) -> Option<usize> {
        if causal && from > i {
            return None;
        }
        let j = match self.pattern {
            SparsePattern::Strided { stride } => {
                let l = stride.get();
                if from <= i {
                    // In the band, or the next J whose distance i − J is a multiple of l: i − J
                    // for J in from..from + d % l lies strictly between two multiples and is ≥ l.
                    let d = i - from;
                    if d < l {
                        from
                    } else {
                        from + d % l
                    }
                } else {
                    let d = from - i;
                    if d < l || d.is_multiple_of(l) {
                        from
                    } else {
                        from.checked_add(l - d % l)?
                    }
                }
            }
            SparsePattern::Fixed { stride, summary } => {
                let l = stride.get();
                let group = i / l * l;
                let own = if from < group {
                    Some(group)
                } else if from - group < l {
                    Some(from)
                } else {
                    None
                };
                // The first J ≥ from in the last `summary` blocks of its group.
                let tail = l - summary.min(l);
                let summary_block = if summary == 0 {
                    None
                } else if from % l >= tail {
                    Some(from)
                } else {
                    (from - from % l).checked_add(tail)
                };
                match (own, summary_block) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b)?,
                }
            }
        };
        (!causal || j <= i).then_some(j)
    }
}
