//! Dropout, with its mask drawn from a counter-based [`Stream`]:
//!
//! ```text
//! y  = x·m/(1−p)        m_i ~ Bernoulli(1−p)
//! dx = dy·m/(1−p)
//! ```
//!
//! Element `i` reads 32 bits of the stream (one half of `bits(i / 2)`) and is kept when they are
//! at least `p·2³²`, so it is kept with probability exactly `1 − p` for any `p` that is a multiple
//! of `2⁻³²` (every `f32` from `2⁻⁹` up; smaller ones are rounded down by less than `2⁻³²`). As
//! the draw depends only on the stream and `i`, the mask does not depend on the thread count.
//!
//! The forward keeps the mask bit-packed, one bit per element (a thirty-second of the activation
//! it masks): bit `i % 64` of word `i / 64`, set when element `i` is kept, the last word's unused
//! bits clear. [`dropout_mask`] regenerates the same mask from the stream, for a caller that
//! prefers recomputing it in the backward to keeping it.
//!
//! Each element is multiplied by its factor, `1/(1−p)` (in `f32`, with `1 − p` rounded from `f64`)
//! or 0, as torch's `input * noise` with `noise = bernoulli(1 − p).div_(1 − p)`: given the same
//! mask the values are torch's bit for bit (a dropped NaN stays NaN). `p = 0` is exactly the
//! identity, as in torch (nothing is read or written but the mask, all set).

use crate::train::rng::Stream;
use crate::train::Store;
use crate::{Error, Result, Threads};

/// Elements per mask word.
const WORD: usize = 64;

/// Mask words per task (64 Ki elements).
const WORDS_PER_TASK: usize = 1024;

/// Words of mask for `len` elements.
pub fn mask_words(len: usize) -> usize {
    len.div_ceil(WORD)
}

/// Whether element `i` was kept, in a mask written by [`dropout_train`] or [`dropout_mask`].
#[inline]
pub fn kept(mask: &[u64], i: usize) -> bool {
    mask[i / WORD] >> (i % WORD) & 1 == 1
}

/// The training forward, in place: each element of `x` dropped (multiplied by 0) with
/// probability `p` (drawn from `stream`), the others scaled by `1/(1−p)`; the mask written to `mask` (`mask_words(x.len())`
/// words). `p` outside `[0, 1)` (or NaN) is [`Error::BadTrainOption`], and nothing is written.
pub fn dropout_train(
    x: &mut [f32],
    p: f32,
    stream: Stream,
    mask: &mut [u64],
    threads: &Threads,
) -> Result<()> {
    let threshold = threshold(p)?;
    check_mask("dropout_train", x.len(), mask.len());
    if p == 0.0 {
        fill_all_kept(mask, x.len());
        return Ok(());
    }
    let scale = scale(p);
    threads.for_each_chunk_pair(x, WORDS_PER_TASK * WORD, mask, WORDS_PER_TASK, |task, x, mask| {
        for (w, (x, word)) in x.chunks_mut(WORD).zip(mask.iter_mut()).enumerate() {
            *word = mask_word(stream, threshold, (task * WORDS_PER_TASK + w) * WORD, x.len());
            for (j, v) in x.iter_mut().enumerate() {
                *v *= factor(*word, j, scale);
            }
        }
    });
    Ok(())
}

/// The mask [`dropout_train`] draws for `len` elements, without touching the data: the same
/// `p` and `stream` give the same bits.
pub fn dropout_mask(len: usize, p: f32, stream: Stream, mask: &mut [u64], threads: &Threads) -> Result<()> {
    let threshold = threshold(p)?;
    check_mask("dropout_mask", len, mask.len());
    if p == 0.0 {
        fill_all_kept(mask, len);
        return Ok(());
    }
    threads.for_each_chunk(mask, WORDS_PER_TASK, |task, mask| {
        for (w, word) in mask.iter_mut().enumerate() {
            let first = (task * WORDS_PER_TASK + w) * WORD;
            *word = mask_word(stream, threshold, first, WORD.min(len - first));
        }
    });
    Ok(())
}

/// `dx = dy·m/(1−p)`, stored as `store` says; `mask` is what the forward wrote for the same `p`.
/// `p` outside `[0, 1)` is [`Error::BadTrainOption`]. Panics on inconsistent lengths.
pub fn dropout_backward(dy: &[f32], p: f32, mask: &[u64], dx: &mut [f32], store: Store) -> Result<()> {
    threshold(p)?;
    check_mask("dropout_backward", dy.len(), mask.len());
    assert_eq!(dx.len(), dy.len(), "dropout_backward: dx has {} values, dy {}", dx.len(), dy.len());
    let scale = scale(p);
    for ((dy, dx), &word) in dy.chunks(WORD).zip(dx.chunks_mut(WORD)).zip(mask) {
        for (j, (&g, d)) in dy.iter().zip(dx.iter_mut()).enumerate() {
            store.put(d, g * factor(word, j, scale));
        }
    }
    Ok(())
}

/// `p·2³²`: element `i` is kept when its 32 bits are at least this. Refuses `p ∉ [0, 1)`.
pub(crate) fn threshold(p: f32) -> Result<u32> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::BadTrainOption {
            option: "the dropout probability",
            value: f64::from(p),
            expected: "a value in [0, 1)",
        });
    }
    // Exact for p ≥ 2⁻⁹ (p·2³² is then an integer); below 2³² as p < 1.
    Ok((f64::from(p) * 4_294_967_296.0) as u32)
}

/// `1/(1−p)` as torch computes it for an `f32` tensor.
pub(crate) fn scale(p: f32) -> f32 {
    1.0 / (1.0 - f64::from(p)) as f32
}

/// The mask bits of elements `first..first + n` (`n ≤ 64`, `first` a multiple of 64): element `i`
/// takes the low half of `bits(i / 2)` when `i` is even, the high half when odd. A whole word
/// is always drawn (a fixed loop the compiler unrolls) and the bits past `n` cleared.
#[inline]
fn mask_word(stream: Stream, threshold: u32, first: usize, n: usize) -> u64 {
    let base = (first / 2) as u64;
    let mut word = 0u64;
    for k in 0..WORD as u64 / 2 {
        let bits = stream.bits(base + k);
        word |= u64::from(bits as u32 >= threshold) << (2 * k);
        word |= u64::from((bits >> 32) as u32 >= threshold) << (2 * k + 1);
    }
    if n < WORD {
        word &= (1u64 << n) - 1;
    }
    word
}

/// The factor of element `j` of a word: `scale` if kept, else 0. Multiplying by it rather than
/// writing 0 is what torch does (`input * noise`): a dropped infinity or NaN gives NaN, a dropped
/// negative value -0.
#[inline(always)]
fn factor(word: u64, j: usize, scale: f32) -> f32 {
    if word >> j & 1 == 1 {
        scale
    } else {
        0.0
    }
}

fn fill_all_kept(mask: &mut [u64], len: usize) {
    mask.fill(u64::MAX);
    if !len.is_multiple_of(WORD) {
        if let Some(last) = mask.last_mut() {
            *last = (1u64 << (len % WORD)) - 1;
        }
    }
}

fn check_mask(what: &str, len: usize, words: usize) {
    assert_eq!(
        words,
        mask_words(len),
        "{what}: {len} elements need {} mask words, not {words}",
        mask_words(len)
    );
}

/// The dropout of one block in one forward pass of a generated trainer: the probability (0: off,
/// as in evaluation), the run's seed, the optimizer step and the block's number, from which each
/// dropout site of the block draws its own [`Stream`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockDropout {
    pub p: f32,
    pub seed: u64,
    pub step: u64,
    pub block: u64,
}

impl BlockDropout {
    /// Sites per block: a block's dropouts are numbered below this.
    pub const SITES: u64 = 64;

    /// No dropout (evaluation, or a trainer without it).
    pub fn off() -> Self {
        BlockDropout { p: 0.0, seed: 0, step: 0, block: 0 }
    }

    pub fn is_on(&self) -> bool {
        self.p > 0.0
    }

    /// The same run for block `block`.
    pub fn of_block(self, block: u64) -> Self {
        BlockDropout { block, ..self }
    }

    /// The stream of the block's dropout number `site` (below [`Self::ATTENTION_SITES`]).
    pub fn stream(&self, site: u64) -> Stream {
        debug_assert!(site < Self::ATTENTION_SITES, "dropout site {site} collides with the attention sites");
        Stream::new(self.seed, self.step, self.block * Self::SITES + site)
    }

    /// Sites from this number up are the block's attention-probability dropouts.
    pub const ATTENTION_SITES: u64 = Self::SITES / 2;

    /// The dropout on the probabilities of the block's attention number `attention`, or `None`
    /// when dropout is off.
    pub fn attention(&self, attention: u64) -> Option<crate::train::attention::ProbDropout> {
        let site = Self::ATTENTION_SITES + attention;
        debug_assert!(site < Self::SITES, "attention {attention} is past the block's sites");
        let stream = Stream::new(self.seed, self.step, self.block * Self::SITES + site);
        crate::train::attention::ProbDropout::new(self.p, stream)
            .expect("the trainer checked the dropout probability")
    }
}

/// A dropout probability as a trainer takes it: in `[0, 1)`, else [`Error::BadTrainOption`].
pub fn check_probability(p: f32) -> Result<f32> {
    if (0.0..1.0).contains(&p) {
        Ok(p)
    } else {
        Err(Error::BadTrainOption {
            option: "the dropout probability",
            value: f64::from(p),
            expected: "a value in [0, 1)",
        })
    }
}
