//! Backward of rotary position embeddings: the forward rotates each pair `(x0, x1)` by the angle
//! θ (`x0·c − x1·s`, `x1·c + x0·s`), an orthogonal map, so the gradient is rotated back by −θ:
//!
//! ```text
//! dx0 =  dy0·c + dy1·s
//! dx1 = −dy0·s + dy1·c
//! ```
//!
//! Dims past the rotary ones pass their gradient through unchanged. The tables are the forward's
//! ([`crate::kernels::rope::rope_tables`]).

/// Turns the gradient of one rotated head vector into the gradient of its input, in place (the
/// inverse of [`crate::kernels::rope::rope_rotate`] with the same `cos`/`sin`). Panics on the
/// same inconsistent lengths as the forward.
#[inline]
pub fn rope_rotate_backward(grad: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    assert_eq!(sin.len(), half, "rope backward: {half} cosines but {} sines", sin.len());
    assert!(
        2 * half <= grad.len(),
        "rope backward: {} rotary dims exceed the head's {}",
        2 * half,
        grad.len()
    );
    let (lo, hi) = grad[..2 * half].split_at_mut(half);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (g0, g1) = (*a, *b);
        *a = g0 * c + g1 * s;
        *b = g1 * c - g0 * s;
    }
}

/// [`rope_rotate_backward`] for consecutive head vectors of `head_dim` floats at one position.
pub fn rope_heads_backward(grads: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    assert!(head_dim > 0, "rope backward: head_dim must be positive");
    assert!(
        grads.len().is_multiple_of(head_dim),
        "rope backward: {} floats are not a whole number of heads of {head_dim}",
        grads.len()
    );
    for head in grads.chunks_exact_mut(head_dim) {
        rope_rotate_backward(head, cos, sin);
    }
}
