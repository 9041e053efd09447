//! The audio front end against Hugging Face `WhisperFeatureExtractor` fixtures (transformers
//! 4.57.1, written by scripts/reference/whisper_features.py): WAV decoding of every supported
//! sample format and refusal of the others, the log-mel features (80 and 128 mels, within 1e-4 of
//! both transformers paths, with must-fail twins), the mel filters, the FFT power spectrum against
//! a naive DFT, and resampling by its properties (frequency, amplitude, timing, anti-aliasing).

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use safetensors::{Dtype, SafeTensors};
use transformer_runtime::audio::{
    hertz_to_mel, mel_filter_bank, mel_to_hertz, read_wav, read_wav_16k, resample, Features, LogMel, MelNorm,
    MelScale, PowerSpectrum, N_FFT, N_FRAMES, N_FREQS, N_SAMPLES, SAMPLE_RATE,
};
use transformer_runtime::Error;

/// Our features against transformers': their float32 STFT and ours in f64 differ by ~1e-5 at
/// most (transformers' own two paths differ by 1.7e-5).
const TOLERANCE: f32 = 1e-4;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/whisper_features")
}

/// The tensors of reference.safetensors, as f64 with their shapes.
struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let path = fixtures().join("reference.safetensors");
        Reference { bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let file = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let values = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                .collect(),
            Dtype::F64 => {
                view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        (view.shape().to_vec(), values)
    }

    /// transformers' `[mels][3000]` features: the stored head frames, then the constant tail.
    fn features<const MELS: usize>(&self, path: &str) -> Box<Features<MELS>> {
        let (shape, head) = self.tensor(&format!("features_{MELS}{path}"));
        let (_, tail) = self.tensor(&format!("tail_{MELS}{path}"));
        assert_eq!(shape[0], MELS);
        let frames = shape[1];
        let mut out = LogMel::<MELS>::output();
        for (m, row) in out.iter_mut().enumerate() {
            for (t, x) in row.iter_mut().enumerate() {
                *x = if t < frames { head[m * frames + t] } else { tail[0] } as f32;
            }
        }
        out
    }
}

/// The 3.7 s test clip, read by our reader.
fn speech() -> Vec<f32> {
    let audio = read_wav(fixtures().join("speech_16k.wav")).unwrap();
    assert_eq!((audio.sample_rate, audio.channels, audio.samples.len()), (16_000, 1, 59_200));
    audio.samples
}

fn max_abs_diff<const MELS: usize>(a: &Features<MELS>, b: &Features<MELS>) -> f32 {
    a.as_flattened().iter().zip(b.as_flattened()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn features<const MELS: usize>(samples: &[f32]) -> Box<Features<MELS>> {
    let mut out = LogMel::<MELS>::output();
    LogMel::<MELS>::new().compute(samples, &mut out).unwrap();
    out
}

/// `|X[k]|²` by the definition, `X[k] = Σ_j x[j] e^{−2πi jk/n}`, in f64.
fn naive_power(frame: &[f64]) -> Vec<f64> {
    let n = frame.len();
    (0..n / 2 + 1)
        .map(|k| {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (j, &x) in frame.iter().enumerate() {
                // (j·k) mod n keeps the angle small, so cos/sin stay accurate.
                let angle = -2.0 * std::f64::consts::PI * ((j * k) % n) as f64 / n as f64;
                re += x * angle.cos();
                im += x * angle.sin();
            }
            re * re + im * im
        })
        .collect()
}

/// An independent, direct formulation of WhisperFeatureExtractor in f64: index-by-index reflect
/// padding, a naive DFT (cos/sin tables), transformers' own mel filters from the fixture (dense,
/// `[201][mels]`), the window given. Slow (~0.5 s), so only the tests that need it call it.
fn naive_log_mel(samples: &[f32], window: &[f64], filters: &[f64], mels: usize) -> Vec<f32> {
    let n = N_SAMPLES;
    let x = |i: usize| samples.get(i).map_or(0.0, |&s| f64::from(s));
    // torch.nn.functional.pad(mode="reflect") by 200: padded[p] = x[|p − 200|] mirrored at both
    // ends without repeating the edge sample.
    let padded = |p: usize| -> f64 {
        let i = p as isize - (N_FFT / 2) as isize;
        let i = if i < 0 {
            -i
        } else if i >= n as isize {
            2 * (n as isize - 1) - i
        } else {
            i
        };
        x(i as usize)
    };
    let (cos, sin): (Vec<f64>, Vec<f64>) = (0..N_FFT)
        .map(|r| (2.0 * std::f64::consts::PI * r as f64 / N_FFT as f64).sin_cos())
        .map(|(s, c)| (c, -s))
        .unzip();
    let mut log = vec![0.0f64; mels * N_FRAMES];
    let mut frame = vec![0.0f64; N_FFT];
    let mut power = vec![0.0f64; N_FREQS];
    for t in 0..N_FRAMES {
        for (j, f) in frame.iter_mut().enumerate() {
            *f = padded(t * 160 + j) * window[j];
        }
        for (k, p) in power.iter_mut().enumerate() {
            let (mut re, mut im) = (0.0, 0.0);
            for (j, &f) in frame.iter().enumerate() {
                let r = (j * k) % N_FFT;
                re += f * cos[r];
                im += f * sin[r];
            }
            *p = re * re + im * im;
        }
        for m in 0..mels {
            let mel: f64 = (0..N_FREQS).map(|k| filters[k * mels + m] * power[k]).sum();
            log[m * N_FRAMES + t] = mel.max(1e-10).log10();
        }
    }
    let max = log.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    log.iter().map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32).collect()
}

fn periodic_hann() -> Vec<f64> {
    (0..N_FFT).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()).collect()
}

fn max_abs_diff_flat(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Least-squares fit of `a sin(2π f t) + b cos(2π f t)` for each `f`, over `samples[skip..len −
/// skip]` at `rate`; returns the (a, b) and the RMS of what is left.
fn fit_tones(samples: &[f32], rate: f64, freqs: &[f64], skip: usize) -> (Vec<(f64, f64)>, f64) {
    let range = skip..samples.len() - skip;
    let basis = |i: usize, c: usize| {
        let phase = 2.0 * std::f64::consts::PI * freqs[c / 2] * i as f64 / rate;
        if c.is_multiple_of(2) {
            phase.sin()
        } else {
            phase.cos()
        }
    };
    let cols = 2 * freqs.len();
    // Normal equations, solved by Gaussian elimination (a handful of columns).
    let mut a = vec![vec![0.0f64; cols + 1]; cols];
    for i in range.clone() {
        let y = f64::from(samples[i]);
        for r in 0..cols {
            let br = basis(i, r);
            for c in 0..cols {
                a[r][c] += br * basis(i, c);
            }
            a[r][cols] += br * y;
        }
    }
    for p in 0..cols {
        let pivot = a[p][p];
        for c in p..=cols {
            a[p][c] /= pivot;
        }
        for r in 0..cols {
            if r != p {
                let factor = a[r][p];
                for c in p..=cols {
                    a[r][c] -= factor * a[p][c];
                }
            }
        }
    }
    let coef: Vec<f64> = (0..cols).map(|r| a[r][cols]).collect();
    let mut residual = 0.0;
    for i in range.clone() {
        let fit: f64 = (0..cols).map(|c| coef[c] * basis(i, c)).sum();
        residual += (f64::from(samples[i]) - fit).powi(2);
    }
    let pairs = coef.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    (pairs, (residual / range.len() as f64).sqrt())
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "transformer-runtime-audio-{tag}-{}-{:?}.wav",
        std::process::id(),
        std::thread::current().id()
    ))
}

// ---------------------------------------------------------------------------------------------
// Log-mel features against WhisperFeatureExtractor
// ---------------------------------------------------------------------------------------------

#[test]
fn features_80_match_transformers() {
    let reference = Reference::load();
    let ours = features::<80>(&speech());
    let torch = max_abs_diff(&ours, &reference.features::<80>(""));
    let numpy = max_abs_diff(&ours, &reference.features::<80>("_numpy"));
    eprintln!("80 mels: max |Δ| = {torch:.3e} (torch path), {numpy:.3e} (numpy path)");
    assert!(torch <= TOLERANCE && numpy <= TOLERANCE, "max |Δ| {torch:e} / {numpy:e} > {TOLERANCE:e}");
}

#[test]
fn features_128_match_transformers() {
    let reference = Reference::load();
    let ours = features::<128>(&speech());
    let torch = max_abs_diff(&ours, &reference.features::<128>(""));
    let numpy = max_abs_diff(&ours, &reference.features::<128>("_numpy"));
    eprintln!("128 mels: max |Δ| = {torch:.3e} (torch path), {numpy:.3e} (numpy path)");
    assert!(torch <= TOLERANCE && numpy <= TOLERANCE, "max |Δ| {torch:e} / {numpy:e} > {TOLERANCE:e}");
}

/// Must fail: the same clip one sample late is a different input, and the comparison sees it.
#[test]
fn one_sample_shift_exceeds_the_tolerance() {
    let reference = Reference::load();
    let mut shifted = vec![0.0f32];
    shifted.extend(speech());
    let diff = max_abs_diff(&features::<80>(&shifted), &reference.features::<80>(""));
    eprintln!("one sample late: max |Δ| = {diff:.3e}");
    assert!(diff > TOLERANCE * 10.0, "a one-sample shift went unnoticed: max |Δ| {diff:e}");
}

/// The direct formulation matches transformers with the periodic window (so it is a faithful
/// twin), and must fail with the symmetric one (`torch.hann_window(400, periodic=False)`).
#[test]
fn naive_twin_matches_and_symmetric_window_exceeds_the_tolerance() {
    let reference = Reference::load();
    let (_, filters) = reference.tensor("mel_filters_80");
    let expected = reference.features::<80>("");
    let samples = speech();

    let periodic = naive_log_mel(&samples, &periodic_hann(), &filters, 80);
    let diff = max_abs_diff_flat(&periodic, expected.as_flattened());
    eprintln!("naive twin, periodic window: max |Δ| = {diff:.3e}");
    assert!(diff <= TOLERANCE, "naive twin: max |Δ| {diff:e}");

    let symmetric: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (N_FFT - 1) as f64).cos())
        .collect();
    let wrong = naive_log_mel(&samples, &symmetric, &filters, 80);
    let diff = max_abs_diff_flat(&wrong, expected.as_flattened());
    eprintln!("naive twin, symmetric window: max |Δ| = {diff:.3e}");
    assert!(diff > TOLERANCE * 10.0, "a symmetric window went unnoticed: max |Δ| {diff:e}");
}

/// A full 30 s of noise (so the reflection at the far end sees signal, which the 3.7 s fixture
/// never does) against the direct formulation; and audio past 30 s is ignored.
#[test]
fn full_length_input_matches_the_naive_twin_and_is_cut_at_30_s() {
    let reference = Reference::load();
    let (_, filters) = reference.tensor("mel_filters_80");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let long: Vec<f32> = (0..N_SAMPLES + 5_000)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            0.3 * noise + 0.5 * (i as f32 * 0.05).sin()
        })
        .collect();
    let ours = features::<80>(&long);
    let naive = naive_log_mel(&long, &periodic_hann(), &filters, 80);
    let diff = max_abs_diff_flat(ours.as_flattened(), &naive);
    eprintln!("30 s of noise vs naive twin: max |Δ| = {diff:.3e}");
    assert!(diff <= 1e-5, "max |Δ| {diff:e}");
    assert_eq!(ours, features::<80>(&long[..N_SAMPLES]), "samples past 30 s changed the features");
}

#[test]
fn silence_is_the_floor_everywhere() {
    let out = features::<80>(&[]);
    assert!(out.as_flattened().iter().all(|&x| x == -1.5), "log10(1e-10) = -10 → (−10 + 4) / 4");
}

#[test]
fn non_finite_samples_are_refused() {
    let mut samples = vec![0.1f32; 1000];
    samples[700] = f32::NAN;
    let mut out = LogMel::<80>::output();
    match LogMel::<80>::new().compute(&samples, &mut out) {
        Err(Error::AudioNotFinite { index: 700, .. }) => {}
        other => panic!("expected AudioNotFinite at 700, got {other:?}"),
    }
    // Past 30 s it is cut off before being looked at.
    let mut long = vec![0.0f32; N_SAMPLES + 1];
    long[N_SAMPLES] = f32::INFINITY;
    LogMel::<80>::new().compute(&long, &mut out).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Mel filters
// ---------------------------------------------------------------------------------------------

#[test]
fn mel_filters_match_transformers() {
    let reference = Reference::load();
    for mels in [80, 128] {
        let (shape, theirs) = reference.tensor(&format!("mel_filters_{mels}"));
        assert_eq!(shape, [N_FREQS, mels]);
        let ours =
            mel_filter_bank(N_FREQS, mels, 0.0, 8000.0, SAMPLE_RATE, MelNorm::Slaney, MelScale::Slaney);
        let scale = theirs.iter().copied().fold(0.0, f64::max);
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("{mels} mel filters: max |Δ| = {diff:.3e} (largest weight {scale:.3e})");
        assert!(diff <= 1e-15, "{mels} filters: max |Δ| {diff:e}");
    }
}

proptest! {
    #[test]
    fn mel_scales_invert(hertz in 0.0f64..24_000.0) {
        for scale in [MelScale::Htk, MelScale::Kaldi, MelScale::Slaney] {
            let back = mel_to_hertz(hertz_to_mel(hertz, scale), scale);
            prop_assert!((back - hertz).abs() <= 1e-9 * (1.0 + hertz), "{scale:?}: {hertz} → {back}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FFT power spectrum
// ---------------------------------------------------------------------------------------------

fn check_power(frame: &[f64]) -> Result<(), TestCaseError> {
    let mut spectrum = PowerSpectrum::new(frame.len());
    let mut power = vec![0.0; spectrum.bins()];
    spectrum.compute(frame, &mut power).unwrap();
    let naive = naive_power(frame);
    let energy: f64 = frame.iter().map(|x| x * x).sum();
    // Every |X[k]|² ≤ n · Σx² (Cauchy–Schwarz); rounding is relative to that.
    let bound = 1e-12 * frame.len() as f64 * energy.max(1e-300);
    for (k, (a, b)) in power.iter().zip(&naive).enumerate() {
        prop_assert!((a - b).abs() <= bound, "n {} bin {k}: fft {a} vs dft {b}", frame.len());
    }
    Ok(())
}

proptest! {
    #[test]
    fn power_spectrum_matches_naive_dft(frame in prop::collection::vec(-1.0f64..1.0, 1..=64)) {
        check_power(&frame)?;
    }

    #[test]
    fn power_spectrum_matches_naive_dft_at_whisper_length(frame in prop::collection::vec(-1.0f64..1.0, N_FFT)) {
        check_power(&frame)?;
    }
}

#[test]
fn power_spectrum_checks_lengths() {
    let mut spectrum = PowerSpectrum::new(8);
    let mut power = vec![0.0; 5];
    assert!(matches!(
        spectrum.compute(&[0.0; 7], &mut power),
        Err(Error::FrameLength { expected: 8, found: 7, .. })
    ));
    assert!(matches!(
        spectrum.compute(&[0.0; 8], &mut power[..4]),
        Err(Error::FrameLength { expected: 5, found: 4, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// WAV reading
// ---------------------------------------------------------------------------------------------

#[test]
fn every_supported_format_decodes_to_the_reference() {
    let reference = Reference::load();
    let cases = [
        ("pcm8_mono", 1),
        ("pcm16_stereo", 2),
        ("pcm24_stereo", 2),
        ("pcm32_3ch", 3),
        ("float32_stereo", 2),
        ("ext_pcm24_mono", 1),
        ("ext_float32_4ch", 4),
    ];
    for (name, channels) in cases {
        let audio = read_wav(fixtures().join("formats").join(format!("{name}.wav"))).unwrap();
        let (_, expected) = reference.tensor(&format!("mono_{name}"));
        assert_eq!(
            (audio.sample_rate, audio.channels, audio.samples.len()),
            (16_000, channels, 800),
            "{name}"
        );
        for (i, (&ours, &theirs)) in audio.samples.iter().zip(&expected).enumerate() {
            assert_eq!(ours, theirs as f32, "{name}: sample {i}");
        }
    }
}

fn refusal(name: &str) -> Error {
    let path = fixtures().join("formats").join(format!("{name}.wav"));
    let error = read_wav(&path).expect_err(name);
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{name}: {error} does not name the file"
    );
    error
}

#[test]
fn unsupported_formats_are_typed_errors_naming_the_format() {
    for (name, found) in [
        ("alaw", "format tag 0x0006 (A-law), 8 bits per sample, 1 channel"),
        ("float64", "format tag 0x0003 (IEEE float), 64 bits per sample, 1 channel"),
        ("ext_pcm20", "20-bit integer PCM"),
    ] {
        match refusal(name) {
            Error::UnsupportedAudio { found: f, .. } => assert_eq!(f, found, "{name}"),
            other => panic!("{name}: expected UnsupportedAudio, got {other:?}"),
        }
    }
}

#[test]
fn unreadable_files_are_typed_errors() {
    match refusal("truncated") {
        Error::AudioRead { reason, .. } => eprintln!("truncated: {reason}"),
        other => panic!("expected AudioRead, got {other:?}"),
    }
    let missing = fixtures().join("no_such_file.wav");
    assert!(matches!(read_wav(&missing), Err(Error::AudioRead { .. })));

    let text = temp_path("text");
    std::fs::write(&text, "not a wave file at all").unwrap();
    let result = read_wav(&text);
    std::fs::remove_file(&text).unwrap();
    assert!(matches!(result, Err(Error::AudioRead { .. })), "{result:?}");
}

// ---------------------------------------------------------------------------------------------
// Resampling
// ---------------------------------------------------------------------------------------------

/// Amplitude error, cos part (time shift: 1e-4 of a 0.4 tone at 1 kHz is 0.04 µs) and residual
/// RMS of the fitted tones. Measured: ≤ 2e-6, ≤ 1e-7, ≤ 5e-6 (the fixture's int16 rounding). The
/// half-input-sample shift of rubato's default 22.05 → 16 kHz blocks gives a cos part of 0.057.
const RESAMPLE_TOLERANCE: f64 = 1e-4;

/// The stereo fixture, mixed and resampled: the 1 kHz and 3 kHz tones keep their frequency,
/// amplitude and timing, and the 9.5 kHz tone (above 16 kHz's Nyquist) is gone rather than
/// folded to 6.5 kHz.
#[test]
fn stereo_22050_resamples_to_16k_keeping_tones_and_dropping_ultrasound() {
    let audio = read_wav(fixtures().join("tones_22050_stereo.wav")).unwrap();
    assert_eq!((audio.sample_rate, audio.channels, audio.samples.len()), (22_050, 2, 22_050));
    let ours = read_wav_16k(fixtures().join("tones_22050_stereo.wav")).unwrap();
    assert_eq!(ours, resample(&audio.samples, 22_050, 16_000).unwrap());
    assert_eq!(ours.len(), 16_000);

    let (tones, residual) = fit_tones(&ours, 16_000.0, &[1000.0, 3000.0, 6500.0], 400);
    eprintln!("22.05 → 16 kHz: (sin, cos) at 1k, 3k, 6.5k = {tones:.5?}, residual RMS {residual:.2e}");
    let [(a1, b1), (a3, b3), (a65, b65)] = tones[..] else { unreachable!() };
    assert!((a1 - 0.4).abs() <= RESAMPLE_TOLERANCE && b1.abs() <= RESAMPLE_TOLERANCE, "1 kHz: {a1}, {b1}");
    assert!((a3 - 0.1).abs() <= RESAMPLE_TOLERANCE && b3.abs() <= RESAMPLE_TOLERANCE, "3 kHz: {a3}, {b3}");
    assert!(a65.hypot(b65) <= RESAMPLE_TOLERANCE, "9.5 kHz aliased to 6.5 kHz: {}", a65.hypot(b65));
    assert!(residual <= RESAMPLE_TOLERANCE, "residual RMS {residual}");
}

/// Sines at common rates, up and down: frequency and amplitude kept (|ΔA| ≤ 1e-4 of 0.5, residual
/// RMS ≤ 1e-4), no time shift (cos part ≤ 1e-4), length ceil(n · to / from).
#[test]
fn sines_keep_frequency_amplitude_and_timing() {
    for (from, freq) in
        [(8_000u32, 440.0), (22_050, 1_000.0), (44_100, 440.0), (44_100, 5_000.0), (48_000, 2_500.0)]
    {
        let n = from as usize; // one second
        let sine: Vec<f32> = (0..n)
            .map(|i| (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(from)).sin()) as f32)
            .collect();
        let out = resample(&sine, from, SAMPLE_RATE).unwrap();
        assert_eq!(out.len(), (n * SAMPLE_RATE as usize).div_ceil(from as usize), "{from} Hz");
        let (tones, residual) = fit_tones(&out, f64::from(SAMPLE_RATE), &[freq], 400);
        let (a, b) = tones[0];
        eprintln!("{from} Hz, {freq} Hz: amplitude {a:.6}, cos {b:.1e}, residual RMS {residual:.1e}");
        let ok = (a - 0.5).abs() <= RESAMPLE_TOLERANCE && b.abs() <= RESAMPLE_TOLERANCE;
        assert!(ok && residual <= RESAMPLE_TOLERANCE, "{from} Hz, {freq} Hz");
    }
}

#[test]
fn resampling_checks_rates() {
    assert!(matches!(resample(&[0.0; 10], 0, 16_000), Err(Error::Resample { from: 0, to: 16_000, .. })));
    assert!(matches!(resample(&[0.0; 10], 16_000, 0), Err(Error::Resample { .. })));
    assert_eq!(resample(&[0.25; 10], 16_000, 16_000).unwrap(), [0.25; 10]);
    assert!(resample(&[], 44_100, 16_000).unwrap().is_empty());
}

/// Features of the resampled stereo fixture against those of the same tones made at 16 kHz
/// directly: the resampler's error, seen through the front end.
#[test]
fn features_of_resampled_audio_match_features_of_native_16k_audio() {
    let resampled = read_wav_16k(fixtures().join("tones_22050_stereo.wav")).unwrap();
    let native: Vec<f32> = (0..16_000)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let tau = 2.0 * std::f64::consts::PI;
            (0.4 * (tau * 1000.0 * t).sin() + 0.1 * (tau * 3000.0 * t).sin()) as f32
        })
        .collect();
    let (ours, direct) = (features::<80>(&resampled), features::<80>(&native));
    // Frames away from the clip's ends (the resampler's edge transients and the int16
    // quantisation of the fixture show there).
    let inner = ours.iter().zip(direct.iter()).flat_map(|(a, b)| a[5..95].iter().zip(&b[5..95]));
    let diff = inner.map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    eprintln!("resampled vs native 16 kHz, frames 5..95: max |Δ| = {diff:.3e}");
    assert!(diff <= 1e-4, "max |Δ| {diff:e}");
}

#[test]
fn power_spectrum_of_tiny_frames() {
    for n in [0usize, 1, 2] {
        let mut spectrum = PowerSpectrum::new(n);
        assert_eq!(spectrum.bins(), n / 2 + 1);
        let frame = vec![0.5; n];
        let mut power = vec![f64::NAN; n / 2 + 1];
        spectrum.compute(&frame, &mut power).unwrap();
        for (a, b) in power.iter().zip(naive_power(&frame)) {
            assert!((a - b).abs() <= 1e-15, "n = {n}: {power:?}");
        }
    }
}
