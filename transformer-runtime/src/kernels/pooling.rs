//! Sentence-embedding pooling: masked mean over token rows, then L2 normalisation.
//!
//! Masked mean fuses the mask multiply, the sum and the division by the token count into one pass
//! that only reads the valid rows (padding rows are skipped, not multiplied by zero).

use super::LANES;

/// Mean of the rows whose flag is true (sentence-transformers semantics: sum / max(count, 1e-9)); zeros if none.
pub fn mean_pool<const D: usize>(rows: &[[f32; D]], valid: &[bool], out: &mut [f32; D]) {
    assert_eq!(rows.len(), valid.len(), "mean_pool: {} rows but {} mask flags", rows.len(), valid.len());
    out.fill(0.0);
    let mut count = 0usize;
    for (row, _) in rows.iter().zip(valid).filter(|(_, &v)| v) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x;
        }
        count += 1;
    }
    // The clamp mirrors sentence-transformers (`torch.clamp(mask.sum(1), min=1e-9)`): with no
    // valid row the sum is 0 and the result is 0, never NaN.
    let denom = (count as f32).max(1e-9);
    for o in out.iter_mut() {
        *o /= denom;
    }
}

/// Element-wise maximum of the rows whose flag is true (sentence-transformers' `max` pooling, which
/// sets padding to -1e9 first); zeros if none.
pub fn max_pool<const D: usize>(rows: &[[f32; D]], valid: &[bool], out: &mut [f32; D]) {
    assert_eq!(rows.len(), valid.len(), "max_pool: {} rows but {} mask flags", rows.len(), valid.len());
    let mut real = rows.iter().zip(valid).filter(|(_, &v)| v).map(|(row, _)| row);
    let Some(first) = real.next() else {
        out.fill(0.0);
        return;
    };
    *out = *first;
    for row in real {
        for (o, &x) in out.iter_mut().zip(row) {
            *o = o.max(x);
        }
    }
}

/// In-place L2 normalisation with PyTorch F.normalize semantics: v / max(||v||, 1e-12).
pub fn l2_normalize<const D: usize>(v: &mut [f32; D]) {
    // Runs once per embedding, so f64 costs nothing and removes both overflow (|x| > 1.8e19
    // squares to inf in f32) and underflow of tiny components from the norm.
    let mut acc = [0.0f64; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for chunk in &mut chunks {
        for j in 0..LANES {
            acc[j] += f64::from(chunk[j]) * f64::from(chunk[j]);
        }
    }
    for (j, &x) in chunks.remainder().iter().enumerate() {
        acc[j] += f64::from(x) * f64::from(x);
    }
    let norm = acc.iter().sum::<f64>().sqrt();
    let denom = norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (f64::from(*x) / denom) as f32;
    }
}
