//! Whisper's input features: the log-mel spectrogram of 30 s of 16 kHz audio, exactly as Hugging
//! Face's `WhisperFeatureExtractor` (transformers 4.57.1) computes it.
//!
//! What transformers does (`feature_extraction_whisper.py`, `_torch_extract_fbank_features`, the
//! path taken whenever PyTorch is installed; the numpy path `_np_extract_fbank_features` computes
//! the same in f64), step by step, and where each step is here:
//!
//! 1. pad with zeros or cut to `N_SAMPLES` = 480 000 samples (30 s at 16 kHz) — [`LogMel::compute`];
//! 2. `torch.stft(waveform, n_fft=400, hop_length=160, window=torch.hann_window(400),
//!    center=True, pad_mode="reflect")`: 200 samples reflected at each end (`x[200], …, x[1]`
//!    before `x[0]`, `x[n−2], …, x[n−201]` after `x[n−1]`), frames of 400 samples every 160,
//!    each multiplied by the periodic Hann window, 201 bins — [`hann_window`],
//!    [`PowerSpectrum`];
//! 3. `stft[..., :-1].abs() ** 2`: the power spectrum, the last of the 3001 frames dropped;
//! 4. `mel_filters.T @ magnitudes` with `mel_filter_bank(201, n_mels, 0, 8000, 16000,
//!    norm="slaney", mel_scale="slaney")` — [`mel_filter_bank`];
//! 5. `log10(max(mel, 1e-10))`; then `max(x, max_over_all(x) − 8)`; then `(x + 4) / 4`.
//!
//! transformers runs steps 2–5 in f32 (the numpy path in f64); this runs them in f64 and rounds the
//! result to f32, which agrees with either to about 1e-6.

use std::fmt;

use super::mel::{mel_filter_bank, MelNorm, MelScale};
use super::spectrum::{hann_window, PowerSpectrum};
use crate::{Error, Result};

/// The sample rate Whisper's features are computed at, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT length and window length, in samples (25 ms).
pub const N_FFT: usize = 400;
/// Hop between frames, in samples (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Samples in one input: 30 s at 16 kHz; shorter audio is padded with zeros, longer cut.
pub const N_SAMPLES: usize = 480_000;
/// Frames of the features: `N_SAMPLES / HOP_LENGTH` (the STFT's 3001st frame is dropped).
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
/// Frequency bins of the power spectrum: `N_FFT / 2 + 1`.
pub const N_FREQS: usize = N_FFT / 2 + 1;

/// Whisper's input features, mel-major: `features[m][t]` is mel bin `m` of frame `t` (frame `t`
/// centred on sample `160 t`), the layout of transformers' `input_features[0]` (`[n_mels, 3000]`)
/// and of the encoder's first convolution's input. `MELS` is the model's `num_mel_bins`: 80 for
/// Whisper tiny … large-v2, 128 for large-v3.
pub type Features<const MELS: usize> = [[f32; N_FRAMES]; MELS];

/// One mel filter's non-zero weights: bins `start .. start + weights.len()`.
#[derive(Clone, Debug)]
struct Filter {
    start: usize,
    weights: Vec<f64>,
}

/// The log-mel front end of a Whisper model with `MELS` mel bins: the window, the mel filters and
/// the FFT plan, built once by [`new`](Self::new), and the buffers one [`compute`](Self::compute)
/// needs, so computing features allocates nothing.
///
/// ```
/// use transformer_runtime::audio::LogMel;
///
/// let mut log_mel = LogMel::<80>::new();
/// let mut features = LogMel::<80>::output();
/// let one_second_of_silence = vec![0.0f32; 16_000];
/// log_mel.compute(&one_second_of_silence, &mut features)?;
/// assert_eq!(features[0][0], -1.5); // log10(1e-10) = -10 everywhere, then (-10 + 4) / 4
/// # Ok::<(), transformer_runtime::Error>(())
/// ```
pub struct LogMel<const MELS: usize> {
    window: Vec<f64>,
    filters: Vec<Filter>,
    spectrum: PowerSpectrum,
    /// The 30 s input with its reflected ends: `N_FFT / 2 + N_SAMPLES + N_FFT / 2` samples.
    padded: Vec<f32>,
    /// One frame's power spectrum.
    power: Vec<f64>,
}

impl<const MELS: usize> fmt::Debug for LogMel<MELS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogMel")
            .field("mels", &MELS)
            .field("spectrum", &self.spectrum)
            .finish_non_exhaustive()
    }
}

impl<const MELS: usize> Default for LogMel<MELS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const MELS: usize> LogMel<MELS> {
    /// Builds the periodic Hann window, the `MELS` Slaney mel filters (0–8 kHz) and the FFT plan.
    pub fn new() -> Self {
        let dense =
            mel_filter_bank(N_FREQS, MELS, 0.0, 8000.0, SAMPLE_RATE, MelNorm::Slaney, MelScale::Slaney);
        let filters = (0..MELS)
            .map(|m| {
                let column: Vec<f64> = (0..N_FREQS).map(|k| dense[k * MELS + m]).collect();
                let start = column.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = column.iter().rposition(|&w| w != 0.0).map_or(start, |last| last + 1);
                Filter { start, weights: column[start..end].to_vec() }
            })
            .collect();
        LogMel {
            window: hann_window(N_FFT),
            filters,
            spectrum: PowerSpectrum::new(N_FFT),
            padded: vec![0.0; N_SAMPLES + N_FFT],
            power: vec![0.0; N_FREQS],
        }
    }

    /// A zeroed feature buffer on the heap (`MELS × 3000` f32), for [`compute`](Self::compute).
    pub fn output() -> Box<Features<MELS>> {
        let rows = vec![[0.0f32; N_FRAMES]; MELS].into_boxed_slice();
        match rows.try_into() {
            Ok(features) => features,
            Err(_) => unreachable!("a boxed slice of MELS rows is a boxed [_; MELS]"),
        }
    }

    /// Writes the features of `samples` (mono, 16 kHz, nominally in `[-1, 1]`) into `out`.
    /// Samples past the first 30 s (`N_SAMPLES`) are ignored, as transformers' `truncation=True`
    /// (its default) ignores them; shorter audio is padded with zeros.
    ///
    /// # Errors
    /// [`Error::AudioNotFinite`] if a sample (of the first 30 s) is NaN or infinite.
    pub fn compute(&mut self, samples: &[f32], out: &mut Features<MELS>) -> Result<()> {
        let samples = &samples[..samples.len().min(N_SAMPLES)];
        if let Some(index) = samples.iter().position(|s| !s.is_finite()) {
            return Err(Error::AudioNotFinite { index, value: samples[index] });
        }
        self.pad_reflect(samples);

        // log10(max(mel, 1e-10)) into `out`, frame by frame; its maximum on the way.
        let mut max = f64::NEG_INFINITY;
        for t in 0..N_FRAMES {
            let start = t * HOP_LENGTH;
            let frame = &self.padded[start..start + N_FFT];
            for ((x, &s), &w) in self.spectrum.frame_mut().iter_mut().zip(frame).zip(&self.window) {
                *x = f64::from(s) * w;
            }
            self.spectrum.transform_frame(&mut self.power);
            for (row, filter) in out.iter_mut().zip(&self.filters) {
                let power = &self.power[filter.start..filter.start + filter.weights.len()];
                let mel: f64 = filter.weights.iter().zip(power).map(|(w, p)| w * p).sum();
                let log = mel.max(1e-10).log10();
                max = max.max(log);
                row[t] = log as f32;
            }
        }

        // Dynamic range of 8 (80 dB) below the loudest bin, then scaled to about [-1, 1].
        let floor = max - 8.0;
        for x in out.as_flattened_mut() {
            *x = ((f64::from(*x).max(floor) + 4.0) / 4.0) as f32;
        }
        Ok(())
    }

    /// `padded` = `samples` padded with zeros (or cut) to `N_SAMPLES`, with `N_FFT / 2` samples
    /// reflected at each end (`torch.nn.functional.pad(mode="reflect")`, the edge not repeated).
    fn pad_reflect(&mut self, samples: &[f32]) {
        const PAD: usize = N_FFT / 2;
        let (head, rest) = self.padded.split_at_mut(PAD);
        let (body, tail) = rest.split_at_mut(N_SAMPLES);
        body[..samples.len()].copy_from_slice(samples);
        body[samples.len()..].fill(0.0);
        for (i, x) in head.iter_mut().enumerate() {
            *x = body[PAD - i];
        }
        for (i, x) in tail.iter_mut().enumerate() {
            *x = body[N_SAMPLES - 2 - i];
        }
    }
}
