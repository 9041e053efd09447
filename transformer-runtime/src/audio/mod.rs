//! Speech input for Whisper: WAV files read into mono samples ([`read_wav`]), resampled to 16 kHz
//! ([`resample`]), and turned into the log-mel spectrogram Hugging Face's
//! `WhisperFeatureExtractor` computes ([`LogMel`], with its mel filters from
//! [`mel_filter_bank`] and its FFT in [`PowerSpectrum`]).
//!
//! ```no_run
//! use transformer_runtime::audio::{read_wav_16k, LogMel};
//!
//! let samples = read_wav_16k("speech.wav")?;
//! let mut log_mel = LogMel::<80>::new();
//! let mut features = LogMel::<80>::output(); // [80][3000], mel-major
//! log_mel.compute(&samples, &mut features)?;
//! # Ok::<(), transformer_runtime::Error>(())
//! ```

pub mod log_mel;
pub mod mel;
pub mod resample;
pub mod spectrum;
pub mod wav;

use std::path::Path;

pub use log_mel::{Features, LogMel, HOP_LENGTH, N_FFT, N_FRAMES, N_FREQS, N_SAMPLES, SAMPLE_RATE};
pub use mel::{hertz_to_mel, mel_filter_bank, mel_to_hertz, MelNorm, MelScale};
pub use resample::resample;
pub use spectrum::{hann_window, PowerSpectrum};
pub use wav::{read_wav, Audio};

use crate::Result;

/// Reads a WAV file ([`read_wav`]: channels averaged) and resamples it to Whisper's 16 kHz
/// ([`resample`]) if it has another rate.
///
/// # Errors
/// Those of [`read_wav`] and [`resample`].
pub fn read_wav_16k(path: impl AsRef<Path>) -> Result<Vec<f32>> {
    let audio = read_wav(path)?;
    if audio.sample_rate == SAMPLE_RATE {
        return Ok(audio.samples);
    }
    resample(&audio.samples, audio.sample_rate, SAMPLE_RATE)
}
