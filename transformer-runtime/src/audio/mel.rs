//! Mel filter banks, computed as transformers' `audio_utils.mel_filter_bank` computes them (in
//! f64, operation for operation, so the result is the same to the last bit or two).

/// The mel scale of a filter bank (`mel_scale=` in transformers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MelScale {
    /// `2595 · log10(1 + f / 700)`.
    Htk,
    /// `1127 · ln(1 + f / 700)` (Kaldi's, the HTK scale in natural logarithms).
    Kaldi,
    /// Slaney's (the Auditory Toolbox's, librosa's default, Whisper's): linear below 1 kHz
    /// (`3f / 200`), logarithmic above (`15 + ln(f / 1000) · 27 / ln 6.4`).
    Slaney,
}

/// The normalisation of a filter bank's triangles (`norm=` in transformers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MelNorm {
    /// Peaks of 1.
    None,
    /// Slaney's: each triangle scaled by `2 / (its upper edge − its lower edge)` in Hz, so every
    /// filter has roughly the same area.
    Slaney,
}

/// Hertz to mels (transformers' `hertz_to_mel`).
pub fn hertz_to_mel(hertz: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + hertz / 700.0).log10(),
        MelScale::Kaldi => 1127.0 * (1.0 + hertz / 700.0).ln(),
        MelScale::Slaney => {
            const MIN_LOG_HERTZ: f64 = 1000.0;
            const MIN_LOG_MEL: f64 = 15.0;
            if hertz >= MIN_LOG_HERTZ {
                let logstep = 27.0 / 6.4f64.ln();
                MIN_LOG_MEL + (hertz / MIN_LOG_HERTZ).ln() * logstep
            } else {
                3.0 * hertz / 200.0
            }
        }
    }
}

/// Mels to hertz (transformers' `mel_to_hertz`).
pub fn mel_to_hertz(mels: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(mels / 2595.0) - 1.0),
        MelScale::Kaldi => 700.0 * ((mels / 1127.0).exp() - 1.0),
        MelScale::Slaney => {
            const MIN_LOG_HERTZ: f64 = 1000.0;
            const MIN_LOG_MEL: f64 = 15.0;
            if mels >= MIN_LOG_MEL {
                let logstep = 6.4f64.ln() / 27.0;
                MIN_LOG_HERTZ * (logstep * (mels - MIN_LOG_MEL)).exp()
            } else {
                200.0 * mels / 3.0
            }
        }
    }
}

/// `numpy.linspace(start, stop, num)`'s `i`-th point: `i · step + start`, the last exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize, i: usize) -> f64 {
    if num > 1 && i == num - 1 {
        return stop;
    }
    let step = (stop - start) / (num.max(2) - 1) as f64;
    i as f64 * step + start
}

/// Triangular mel filters over the bins of a real FFT, as transformers'
/// `mel_filter_bank(num_frequency_bins, num_mel_filters, min_frequency, max_frequency,
/// sampling_rate, norm, mel_scale)` (with `triangularize_in_mel_space=False`) computes them.
///
/// Returns `[num_frequency_bins][num_mel_filters]`, row-major, as transformers does: bin `k` is
/// `k · (sampling_rate / 2) / (num_frequency_bins − 1)` Hz (`sampling_rate / 2` rounded down to
/// whole hertz, as `sampling_rate // 2`); filter `m` rises from mel point `m` to `m + 1` and falls
/// to `m + 2`, the `num_mel_filters + 2` points spaced evenly in mels from `min_frequency` to
/// `max_frequency`.
///
/// Whisper's: `mel_filter_bank(201, 80, 0.0, 8000.0, 16000, MelNorm::Slaney, MelScale::Slaney)`
/// (128 filters for large-v3).
pub fn mel_filter_bank(
    num_frequency_bins: usize,
    num_mel_filters: usize,
    min_frequency: f64,
    max_frequency: f64,
    sampling_rate: u32,
    norm: MelNorm,
    scale: MelScale,
) -> Vec<f64> {
    let mel_min = hertz_to_mel(min_frequency, scale);
    let mel_max = hertz_to_mel(max_frequency, scale);
    let points = num_mel_filters + 2;
    let filter_freqs: Vec<f64> =
        (0..points).map(|i| mel_to_hertz(linspace(mel_min, mel_max, points, i), scale)).collect();
    let nyquist = f64::from(sampling_rate / 2);

    let mut filters = vec![0.0; num_frequency_bins * num_mel_filters];
    for (k, row) in filters.chunks_exact_mut(num_mel_filters.max(1)).enumerate() {
        let fft_freq = linspace(0.0, nyquist, num_frequency_bins, k);
        for (m, weight) in row.iter_mut().enumerate() {
            // _create_triangular_filter_bank: slopes = filter_freqs − fft_freq,
            // down = −slopes[m] / diff[m], up = slopes[m + 2] / diff[m + 1].
            let down = -(filter_freqs[m] - fft_freq) / (filter_freqs[m + 1] - filter_freqs[m]);
            let up = (filter_freqs[m + 2] - fft_freq) / (filter_freqs[m + 2] - filter_freqs[m + 1]);
            *weight = down.min(up).max(0.0);
            if norm == MelNorm::Slaney {
                *weight *= 2.0 / (filter_freqs[m + 2] - filter_freqs[m]);
            }
        }
    }
    filters
}
