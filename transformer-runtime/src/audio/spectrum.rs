//! The power spectrum of a real frame (a `realfft` plan and its buffers, made once), and the
//! periodic Hann window.

use std::fmt;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::{Error, Result};

/// The periodic Hann window of `len` points, `0.5 − 0.5 · cos(2π i / len)`: the symmetric window
/// of `len + 1` points without its last (`torch.hann_window(len)`, `periodic=True`, the default;
/// transformers' `window_function(len, "hann")`).
pub fn hann_window(len: usize) -> Vec<f64> {
    (0..len).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / len as f64).cos()).collect()
}

/// `|X[k]|²` for `k = 0..=n/2` of a real frame of `n` samples, `X[k] = Σ_j x[j] e^{−2πi jk/n}`
/// (unnormalised, as `torch.stft` / `numpy.fft.rfft`). The FFT plan, its scratch and a copy of the
/// frame are made once by [`new`](Self::new); [`compute`](Self::compute) allocates nothing.
pub struct PowerSpectrum {
    fft: Arc<dyn RealToComplex<f64>>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl fmt::Debug for PowerSpectrum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerSpectrum").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl PowerSpectrum {
    /// A plan for frames of `len` samples (`len ≥ 1`; any length, fastest for products of small
    /// primes: 400 = 2⁴·5² is fine).
    pub fn new(len: usize) -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(len);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        PowerSpectrum { frame: vec![0.0; len], spectrum, scratch, fft }
    }

    /// The frame length `n`.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether the frame length is 0 (never: [`new`](Self::new) takes `len ≥ 1`).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// The number of bins of the spectrum, `n / 2 + 1`.
    pub fn bins(&self) -> usize {
        self.spectrum.len()
    }

    /// Writes `|X[k]|²` of `frame` (`n` samples) into `power` (`n / 2 + 1` bins).
    ///
    /// # Errors
    /// [`Error::FrameLength`] if either slice has another length.
    pub fn compute(&mut self, frame: &[f64], power: &mut [f64]) -> Result<()> {
        check_len("the frame", self.len(), frame.len())?;
        check_len("the power spectrum", self.bins(), power.len())?;
        self.frame.copy_from_slice(frame);
        self.transform_frame(power);
        Ok(())
    }

    /// The frame buffer [`transform_frame`](Self::transform_frame) reads (and overwrites).
    pub(crate) fn frame_mut(&mut self) -> &mut [f64] {
        &mut self.frame
    }

    /// `|X[k]|²` of the frame buffer into `power` (`bins()` long); the buffer is left undefined.
    pub(crate) fn transform_frame(&mut self, power: &mut [f64]) {
        // The lengths are the plan's own, so realfft cannot refuse them.
        let lengths_ok =
            self.fft.process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch);
        debug_assert!(lengths_ok.is_ok());
        for (p, x) in power.iter_mut().zip(&self.spectrum) {
            *p = x.re * x.re + x.im * x.im;
        }
    }
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::FrameLength { what, expected, found })
    }
}
