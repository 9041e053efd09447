//! Pillow's bilinear resize of 8-bit images, reproduced bit for bit.
//!
//! Hugging Face's `ViTImageProcessor` resizes with `PIL.Image.resize(size, Image.BILINEAR)` on a
//! uint8 RGB image, so matching its pixel values means matching Pillow's resampler
//! (`libImaging/Resample.c`, `ImagingResample`):
//!
//! - the resize is separable: a horizontal pass into an intermediate 8-bit image, then a vertical
//!   pass; a pass whose axis keeps its size is skipped, and same-size resizes are copies;
//! - per axis, `scale = in / out`, `filterscale = max(scale, 1)` (downscaling widens the filter,
//!   i.e. antialiases), `support = 1 · filterscale`; output pixel `i` is centred at
//!   `center = (i + 0.5) · scale` and reads inputs `xmin = trunc(center − support + 0.5)` (≥ 0) up
//!   to `trunc(center + support + 0.5)` (≤ `in`), weighted by the triangle `1 − |t|` at
//!   `t = (x − center + 0.5) / filterscale`, the weights divided by their sum;
//! - weights are converted to fixed point with 22 fractional bits (`PRECISION_BITS = 32 − 8 − 2`),
//!   rounding half away from zero; each output is `(2²¹ + Σ pixel·weight) >> 22` clamped to 0..=255.
//!
//! Every floating-point step is evaluated in the same order and precision (f64) as the C code.

use image::RgbImage;

/// Fractional bits of the fixed-point weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The fixed-point weights of one axis: for output `i`, inputs `start[i]..start[i] + len[i]` with
/// weights `weights[i * ksize..][..len[i]]`.
struct Coeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i64>,
}

impl Coeffs {
    fn of(&self, i: usize) -> (usize, &[i64]) {
        (self.start[i], &self.weights[i * self.ksize..][..self.len[i]])
    }
}

/// Pillow's triangle filter (`bilinear_filter`), support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole input axis as the box.
fn coefficients(in_size: usize, out_size: usize) -> Coeffs {
    debug_assert!(in_size > 0 && out_size > 0);
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut coeffs = Coeffs {
        ksize,
        start: Vec::with_capacity(out_size),
        len: Vec::with_capacity(out_size),
        weights: vec![0; out_size * ksize],
    };
    let mut k = vec![0.0f64; ksize];
    for i in 0..out_size {
        let center = 0.0 + (i as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's `(int)` truncates toward zero; a negative start is clamped to 0 either way.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut sum = 0.0;
        for (x, w) in k[..n].iter_mut().enumerate() {
            *w = triangle(((x + xmin) as f64 - center + 0.5) * ss);
            sum += *w;
        }
        let fixed = &mut coeffs.weights[i * ksize..][..n];
        for (w, f) in k[..n].iter_mut().zip(fixed) {
            if sum != 0.0 {
                *w /= sum;
            }
            let scaled = *w * (1u32 << PRECISION_BITS) as f64;
            // `(int)(±0.5 + w · 2²²)`: round half away from zero.
            *f = if *w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 } as i64;
        }
        coeffs.start.push(xmin);
        coeffs.len.push(n);
    }
    coeffs
}

/// `clip8`: the fixed-point sum back to a byte.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((width, height), Image.BILINEAR)` of an 8-bit RGB image, bit for bit.
/// An empty source or target gives an image of the target size filled with zeros.
pub fn resize_bilinear(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = image.dimensions();
    if (in_w, in_h) == (width, height) {
        return image.clone();
    }
    if in_w == 0 || in_h == 0 || width == 0 || height == 0 {
        return RgbImage::new(width, height);
    }
    let (in_w, in_h, out_w, out_h) = (in_w as usize, in_h as usize, width as usize, height as usize);
    let src = image.as_raw();
    let half = 1i64 << (PRECISION_BITS - 1);

    let vertical = (out_h != in_h).then(|| coefficients(in_h, out_h));
    // Rows of the source the vertical pass reads: the horizontal pass only produces these.
    let (first_row, last_row) = match &vertical {
        Some(v) => (v.start[0], v.start[out_h - 1] + v.len[out_h - 1]),
        None => (0, in_h),
    };

    // Horizontal pass: `rows × out_w` pixels, rows starting at `first_row`.
    let (mid, mid_w) = if out_w != in_w {
        let h = coefficients(in_w, out_w);
        let rows = last_row - first_row;
        let mut mid = vec![0u8; rows * out_w * 3];
        for (r, dst_row) in mid.chunks_exact_mut(out_w * 3).enumerate() {
            let src_row = &src[(first_row + r) * in_w * 3..][..in_w * 3];
            for (x, dst) in dst_row.chunks_exact_mut(3).enumerate() {
                let (start, k) = h.of(x);
                let mut sum = [half; 3];
                for (j, &w) in k.iter().enumerate() {
                    let p = &src_row[(start + j) * 3..][..3];
                    for c in 0..3 {
                        sum[c] += p[c] as i64 * w;
                    }
                }
                for c in 0..3 {
                    dst[c] = clip8(sum[c]);
                }
            }
        }
        (std::borrow::Cow::Owned(mid), out_w)
    } else {
        (std::borrow::Cow::Borrowed(&src[first_row * in_w * 3..last_row * in_w * 3]), in_w)
    };

    let out = match vertical {
        Some(v) => {
            let stride = mid_w * 3;
            let mut out = vec![0u8; out_h * stride];
            let mut sums = vec![0i64; stride];
            for (y, dst_row) in out.chunks_exact_mut(stride).enumerate() {
                let (start, k) = v.of(y);
                let start = start - first_row;
                sums.fill(half);
                for (j, &w) in k.iter().enumerate() {
                    let src_row = &mid[(start + j) * stride..][..stride];
                    for (s, &p) in sums.iter_mut().zip(src_row) {
                        *s += p as i64 * w;
                    }
                }
                for (d, &s) in dst_row.iter_mut().zip(&sums) {
                    *d = clip8(s);
                }
            }
            out
        }
        None => mid.into_owned(),
    };
    RgbImage::from_raw(width, height, out).expect("resized buffer has width·height·3 bytes")
}
