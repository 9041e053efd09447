//! Rotary position embeddings (RoPE) in the "rotate half" convention of HF LLaMA / Mistral
//! (GPT-NeoX style): a head vector's first `R` (rotary) dims are split into halves `x[..R/2]` and
//! `x[R/2..R]`, and pair `i` is rotated by the angle `p·inv_freq[i]` of the token's position `p`:
//!
//! ```text
//! x'[i]       = x[i]·cos − x[i + R/2]·sin
//! x'[i + R/2] = x[i + R/2]·cos + x[i]·sin        (i < R/2; dims ≥ R unchanged)
//! ```
//!
//! The cos/sin tables are built once ([`rope_tables`]) with the float32 arithmetic of transformers'
//! `LlamaRotaryEmbedding` (default rope type), because at long contexts it is not a rounding detail:
//! the angle `p·inv_freq` is formed in f32 by HF, and at `p = 4096` one ulp of it is 5e-4 rad, so
//! tables built from exact (f64) angles differ from HF's by up to 3e-4 (4e-4 at p = 8191, measured).
//! Matching HF's f32 steps and rounding `cos`/`sin` of the f32 angle once from f64 leaves at most
//! one f32 ulp (≤ 6e-8) between the tables, which is PyTorch's own `cos`/`sin` error. The rotation
//! itself ([`rope_rotate`]) performs the same f32 operations in the same order as
//! `q * cos + rotate_half(q) * sin`, so it is bit-identical to HF given equal tables.

/// `inv_freq[i]` of transformers' default RoPE, in its float32 arithmetic:
/// `1.0 / (base ** (torch.arange(0, R, 2, dtype=torch.int64).float() / R))` with `base` the f32
/// tensor dtype's conversion of `theta`. The exponent `2i / R` is an f32 division; the power is
/// evaluated in f64 from the f32 base and exponent and rounded to f32 (PyTorch's f32 `pow` is within
/// an ulp of that, and equal to it for every theta/R pair checked); the reciprocal is an f32
/// division.
#[inline]
pub fn rope_inv_freq(i: usize, rotary_dims: usize, theta: f64) -> f32 {
    let exponent = (2 * i) as f32 / rotary_dims as f32;
    let base = theta as f32;
    let power = f64::from(base).powf(f64::from(exponent)) as f32;
    1.0 / power
}

/// Fills the cos/sin tables of positions `0..positions` for `rotary_dims` rotary dims: with
/// `half = rotary_dims / 2`, `cos[p·half + i] = cos(p·inv_freq[i])` (and `sin` likewise), where
/// `inv_freq` is [`rope_inv_freq`] and the angle is the f32 product `(p as f32) · inv_freq[i]` (HF's
/// `inv_freq @ position_ids.float()`, a one-term f32 product); cos/sin of that f32 angle are
/// evaluated in f64 and rounded to f32 once.
///
/// `rotary_dims` must be even and `cos`/`sin` exactly `positions · rotary_dims / 2` long; panics
/// otherwise. Allocates nothing (the caller owns the tables).
pub fn rope_tables(rotary_dims: usize, theta: f64, cos: &mut [f32], sin: &mut [f32]) {
    assert!(rotary_dims.is_multiple_of(2), "rope: rotary dims {rotary_dims} must be even");
    assert_eq!(cos.len(), sin.len(), "rope: cos table has {} entries, sin table {}", cos.len(), sin.len());
    let half = rotary_dims / 2;
    if half == 0 {
        assert!(cos.is_empty(), "rope: 0 rotary dims but a table of {} entries", cos.len());
        return;
    }
    assert!(
        cos.len().is_multiple_of(half),
        "rope: a table of {} entries is not a whole number of positions of {half} frequencies",
        cos.len()
    );
    for (p, (c_row, s_row)) in cos.chunks_exact_mut(half).zip(sin.chunks_exact_mut(half)).enumerate() {
        // Exact for p < 2²⁴, as is PyTorch's int64 → float32 conversion of position ids.
        let pos = p as f32;
        for (i, (c, s)) in c_row.iter_mut().zip(s_row.iter_mut()).enumerate() {
            let angle = f64::from(pos * rope_inv_freq(i, rotary_dims, theta));
            *c = angle.cos() as f32;
            *s = angle.sin() as f32;
        }
    }
}

/// Rotates one head vector in place: the first `2·cos.len()` dims of `x` (the rotary dims `R`),
/// pairs `(i, i + R/2)` by the angle whose cosine and sine are `cos[i]`, `sin[i]`; dims `≥ R` are
/// left as they are. `sin.len()` must equal `cos.len()` and `2·cos.len() ≤ x.len()`; panics
/// otherwise.
#[inline]
pub fn rope_rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    assert_eq!(sin.len(), half, "rope: {half} cosines but {} sines", sin.len());
    assert!(2 * half <= x.len(), "rope: {} rotary dims exceed the head's {}", 2 * half, x.len());
    let (lo, hi) = x[..2 * half].split_at_mut(half);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (x0, x1) = (*a, *b);
        // HF: q·cos + rotate_half(q)·sin, i.e. x0·c + (−x1)·s and x1·c + x0·s: the same roundings.
        *a = x0 * c - x1 * s;
        *b = x1 * c + x0 * s;
    }
}

/// [`rope_rotate`] for every head of `heads`: consecutive head vectors of `head_dim` floats
/// (`heads.len()` a multiple of `head_dim`), all at the same position.
pub fn rope_heads(heads: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    assert!(head_dim > 0, "rope: head_dim must be positive");
    assert!(
        heads.len().is_multiple_of(head_dim),
        "rope: {} floats are not a whole number of heads of {head_dim}",
        heads.len()
    );
    for head in heads.chunks_exact_mut(head_dim) {
        rope_rotate(head, cos, sin);
    }
}
