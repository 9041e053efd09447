//! Pillow's bilinear resize of 8-bit images, reproduced bit for bit.
//!
//! Hugging Face's `ViTImageProcessor` resizes with `PIL.Image.resize(size, Image.BILINEAR)` on a
//! uint8 RGB image, so matching its pixel values means matching Pillow's resampler
//! (`libImaging/Resample.c`, `ImagingResample`):
//!
//! - the resize is separable: one pass per axis through an intermediate 8-bit image; a pass whose
//!   axis keeps its size is skipped, and same-size resizes are copies. The horizontal pass runs
//!   first, except (since Pillow 13, python-pillow/Pillow#9549) when the height shrinks by more
//!   than twice as many pixels as the width: then the vertical pass runs first. The order changes
//!   the result by ±1 in a few pixels, so it is part of being exact; Pillow 12 and earlier always
//!   run the horizontal pass first and differ from this in those cases;
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

/// The rounding offset every fixed-point sum starts from (one half).
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// `clip8`: the fixed-point sum back to a byte.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow 13's choice of pass order (python-pillow/Pillow#9549): the vertical pass runs first when
/// the height shrinks by more than twice as many pixels as the width does; otherwise the horizontal
/// pass runs first. (Earlier Pillow always ran the horizontal pass first.) Only called when both
/// axes change size.
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    shrink_h > 0 && shrink_h > 2 * shrink_w
}

/// One horizontal pass (`ImagingResampleHorizontal_8bpc`): `rows` rows of `in_w` RGB pixels to
/// rows of `out_w` pixels.
fn horizontal(src: &[u8], in_w: usize, out_w: usize) -> Vec<u8> {
    let h = coefficients(in_w, out_w);
    let rows = src.len() / (in_w * 3);
    let mut out = vec![0u8; rows * out_w * 3];
    for (src_row, dst_row) in src.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for (x, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let (start, k) = h.of(x);
            let mut sum = [HALF; 3];
            for (p, &w) in src_row[start * 3..].chunks_exact(3).zip(k) {
                for c in 0..3 {
                    sum[c] += p[c] as i64 * w;
                }
            }
            for c in 0..3 {
                dst[c] = clip8(sum[c]);
            }
        }
    }
    out
}

/// One vertical pass (`ImagingResampleVertical_8bpc`): `in_h` rows of `width` RGB pixels to
/// `out_h` rows.
fn vertical(src: &[u8], width: usize, in_h: usize, out_h: usize) -> Vec<u8> {
    let v = coefficients(in_h, out_h);
    let stride = width * 3;
    let mut out = vec![0u8; out_h * stride];
    let mut sums = vec![0i64; stride];
    for (y, dst_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, k) = v.of(y);
        sums.fill(HALF);
        for (src_row, &w) in src[start * stride..].chunks_exact(stride).zip(k) {
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

/// Pillow's `Image.resize((width, height), Image.BILINEAR)` of an 8-bit RGB image, bit for bit
/// (Pillow 13 and later; see the module documentation for the pass order). An empty source or
/// target gives an image of the target size filled with zeros.
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
    let out = if in_w == out_w {
        vertical(src, in_w, in_h, out_h)
    } else if in_h == out_h {
        horizontal(src, in_w, out_w)
    } else if vertical_first(in_w, in_h, out_w, out_h) {
        horizontal(&vertical(src, in_w, in_h, out_h), in_w, out_w)
    } else {
        vertical(&horizontal(src, in_w, out_w), out_w, in_h, out_h)
    };
    RgbImage::from_raw(width, height, out).expect("resized buffer has width·height·3 bytes")
}
