//! A counter-based random generator for training: every random number is a pure function of
//! `(seed, step, site, index)`, so a dropout mask or a masked-LM batch is the same whichever thread
//! draws which element, and a backward pass can regenerate what its forward drew instead of
//! keeping it.
//!
//! The mixer is SplitMix64's finalizer (Stafford's "Mix13"), a bijection of `u64` whose outputs
//! over a Weyl sequence `key + i·φ` pass BigCrush: [`Stream::bits`]`(i)` is exactly the `i + 1`-th
//! output of a SplitMix64 generator seeded with the stream's key. The key is the seed, the step
//! and the site each passed through the mixer in turn, so neighbouring steps or sites give
//! unrelated keys. (Two streams are two windows of one Weyl sequence at random offsets; windows of
//! `n` draws overlap with probability about `2n/2⁶⁴`.)
//!
//! [Generation](mod@crate::generate)'s sampling keeps its ChaCha8: it draws one number per
//! generated token, in order, where this draws one per element of a tensor, out of order.

/// `2⁶⁴/φ`, SplitMix64's increment.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random numbers of one use (one dropout site, the masking of one batch) at one training
/// step. Cheap to copy; [`Stream::bits`] is a pure function of the stream and the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    key: u64,
}

impl Stream {
    /// The stream of `site` (a number the caller gives each place that draws: layer 3's attention
    /// output dropout, the MLM masking, …) at optimizer step `step` of a run seeded with `seed`.
    pub fn new(seed: u64, step: u64, site: u64) -> Self {
        let key = mix(mix(mix(seed.wrapping_add(GOLDEN)).wrapping_add(step)).wrapping_add(site));
        Stream { key }
    }

    /// 64 uniformly distributed bits for element `index`.
    #[inline(always)]
    pub fn bits(self, index: u64) -> u64 {
        mix(self.key.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
    }

    /// A uniform `f64` in `[0, 1)` for element `index` (the top 53 bits).
    #[inline(always)]
    pub fn uniform(self, index: u64) -> f64 {
        (self.bits(index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An integer in `0..n` for element `index` (Lemire's multiply-shift: the bias is at most
    /// `n/2⁶⁴`). `n` must be positive.
    #[inline(always)]
    pub fn below(self, index: u64, n: u64) -> u64 {
        debug_assert!(n > 0, "Stream::below: empty range");
        ((u128::from(self.bits(index)) * u128::from(n)) >> 64) as u64
    }
}
