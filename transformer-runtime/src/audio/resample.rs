//! Sample-rate conversion of a whole clip, by `rubato`'s synchronous FFT resampler.
//!
//! rubato's `Fft` resamples a fixed ratio `to / from` (reduced by their gcd) block by block: each
//! block's spectrum is cut or zero-extended to the new length and multiplied by a low-pass filter
//! (a Blackman–Harris windowed sinc whose cutoff sits below the lower of the two Nyquist
//! frequencies), and the blocks are overlap-added; `process_all` trims the resampler's delay, so
//! output sample `i` is at time `i / to` as input sample `j` is at `j / from`.
//!
//! That last holds only when both FFT blocks have an even length: rubato 5.1 centres its filter
//! at `⌊n_in / 2⌋` input samples but trims `⌊n_out / 2⌋` output samples, which are the same time
//! only then (22.05 → 16 kHz with its default blocks of 1323 → 960 samples comes out half an input
//! sample early). So the blocks here are an even number of the smallest whole blocks
//! (`from / gcd` → `to / gcd` samples).
//!
//! Hugging Face's pipelines resample with ffmpeg or librosa, whose filters differ a little:
//! features of a file that is not already 16 kHz are close to theirs, not exact.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::{Error, Result};

/// The input block the FFT resampler aims for, in frames (rounded up to an even number of
/// `from / gcd(from, to)` blocks).
const CHUNK: usize = 1024;

/// Resamples mono `samples` from `from` Hz to `to` Hz: `ceil(len · to / from)` samples. Equal rates
/// return a copy.
///
/// # Errors
/// [`Error::Resample`] if a rate is 0.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    let error = |reason: String| Error::Resample { from, to, reason };
    if from == 0 || to == 0 {
        return Err(error("sample rates must be above 0 Hz".to_string()));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let (from_hz, to_hz) = (from as usize, to as usize);
    let smallest_block = from_hz / gcd(from_hz, to_hz);
    let block = 2 * CHUNK.div_ceil(2 * smallest_block) * smallest_block;
    let mut resampler =
        Fft::<f32>::new(from_hz, to_hz, block, 1, FixedSync::Both).map_err(|e| error(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| error(e.to_string()))?;
    let output = resampler.process_all(&input, samples.len(), None).map_err(|e| error(e.to_string()))?;
    Ok(output.take_data())
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
