//! WAV files in, mono `f32` samples out (the `hound` crate reads the container).
//!
//! Integer samples are scaled by `1 / 2^(bits − 1)` (a 16-bit sample `s` becomes `s / 32768`), as
//! soundfile, librosa and ffmpeg's `f32le` output (what transformers' `ffmpeg_read` uses) do;
//! float samples are taken as they are. Several channels are averaged into one.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use hound::{SampleFormat, WavReader};

use crate::{Error, Result};

/// The decoded samples of an audio file, mixed down to one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    /// One sample per frame: the mean of the frame's channels, nominally in `[-1, 1]`.
    pub samples: Vec<f32>,
    /// Frames per second of [`samples`](Self::samples), as the file gives it.
    pub sample_rate: u32,
    /// How many channels the file had before they were averaged.
    pub channels: u16,
}

/// Reads a WAV file of 8-, 16-, 24- or 32-bit integer PCM or 32-bit IEEE float samples (plain or
/// `WAVE_FORMAT_EXTENSIBLE`), any number of channels, and averages the channels into one.
///
/// # Errors
/// [`Error::AudioRead`] if the file cannot be opened, is not a WAV file or ends inside its data;
/// [`Error::UnsupportedAudio`] for another sample format (compressed formats such as A-law or
/// ADPCM, 64-bit float, integer widths other than 8/16/24/32 bits) or a sample rate of 0 Hz.
pub fn read_wav(path: impl AsRef<Path>) -> Result<Audio> {
    let path = path.as_ref();
    let reader = WavReader::open(path).map_err(|e| open_error(path, e))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels);
    if spec.sample_rate == 0 {
        return Err(unsupported(path, "a sample rate of 0 Hz".to_string()));
    }
    let samples = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / f64::from(1u32 << (bits - 1));
            mix_down(path, reader.into_samples::<i32>(), channels, |s| f64::from(s) * scale)?
        }
        (SampleFormat::Float, 32) => mix_down(path, reader.into_samples::<f32>(), channels, f64::from)?,
        (SampleFormat::Int, bits) => return Err(unsupported(path, format!("{bits}-bit integer PCM"))),
        (SampleFormat::Float, bits) => return Err(unsupported(path, format!("{bits}-bit float"))),
    };
    Ok(Audio { samples, sample_rate: spec.sample_rate, channels: spec.channels })
}

/// Averages each frame's `channels` samples (summed in f64, one rounding to f32).
fn mix_down<S>(
    path: &Path,
    samples: impl ExactSizeIterator<Item = hound::Result<S>>,
    channels: usize,
    to_f64: impl Fn(S) -> f64,
) -> Result<Vec<f32>> {
    let total = samples.len();
    if !total.is_multiple_of(channels) {
        return Err(Error::AudioRead {
            path: path.to_path_buf(),
            reason: format!(
                "the data chunk ends inside a frame: {total} samples is not a multiple of {channels} channels"
            ),
        });
    }
    let mut mono = Vec::with_capacity(total / channels);
    let mut sum = 0.0f64;
    for (i, sample) in samples.enumerate() {
        let sample = sample.map_err(|e| Error::AudioRead {
            path: path.to_path_buf(),
            reason: format!("sample {i} of {total}: {e}"),
        })?;
        sum += to_f64(sample);
        if (i + 1).is_multiple_of(channels) {
            mono.push((sum / channels as f64) as f32);
            sum = 0.0;
        }
    }
    Ok(mono)
}

fn unsupported(path: &Path, found: String) -> Error {
    Error::UnsupportedAudio { path: path.to_path_buf(), found }
}

/// Turns `hound`'s refusal to open a file into our error: a format it does not decode becomes
/// [`Error::UnsupportedAudio`] naming the file's format tag and sample width (read from its `fmt `
/// chunk), anything else [`Error::AudioRead`].
fn open_error(path: &Path, error: hound::Error) -> Error {
    let format_refused = match &error {
        hound::Error::Unsupported => true,
        // hound's words for a float width other than 32 and a WAVEFORMATEX PCM width it refuses.
        hound::Error::FormatError(reason) => reason.starts_with("bits per sample is not"),
        _ => false,
    };
    match (format_refused, describe_format(path)) {
        (true, Some(found)) => unsupported(path, found),
        _ => Error::AudioRead { path: path.to_path_buf(), reason: error.to_string() },
    }
}

/// "format tag 0x0006 (A-law), 8 bits per sample, 1 channel" from a RIFF/WAVE file's `fmt ` chunk
/// (the sub-format's tag for `WAVE_FORMAT_EXTENSIBLE`); `None` if the header cannot be read.
fn describe_format(path: &Path) -> Option<String> {
    let mut file = BufReader::new(File::open(path).ok()?);
    let mut riff = [0u8; 12];
    file.read_exact(&mut riff).ok()?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return None;
    }
    loop {
        let mut header = [0u8; 8];
        file.read_exact(&mut header).ok()?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if &header[0..4] != b"fmt " {
            // Chunks are padded to an even length.
            file.seek(SeekFrom::Current(i64::from(len) + i64::from(len % 2))).ok()?;
            continue;
        }
        let mut fmt = vec![0u8; (len as usize).min(40)];
        file.read_exact(&mut fmt).ok()?;
        let u16_at = |i: usize| fmt.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let mut tag = u16_at(0)?;
        let channels = u16_at(2)?;
        let bits = u16_at(14)?;
        let extensible = tag == 0xFFFE;
        if extensible {
            // WAVEFORMATEXTENSIBLE: the sub-format GUID (offset 24) starts with the format tag.
            tag = u16_at(24)?;
        }
        let plural = if channels == 1 { "" } else { "s" };
        return Some(format!(
            "{}format tag {tag:#06x} ({}), {bits} bits per sample, {channels} channel{plural}",
            if extensible { "WAVE_FORMAT_EXTENSIBLE with sub-" } else { "" },
            format_name(tag)
        ));
    }
}

/// The name of a WAVE format tag (mmreg.h), for the common ones.
fn format_name(tag: u16) -> &'static str {
    match tag {
        0x0001 => "integer PCM",
        0x0002 => "Microsoft ADPCM",
        0x0003 => "IEEE float",
        0x0006 => "A-law",
        0x0007 => "µ-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MPEG Layer 3",
        _ => "unknown",
    }
}
