//! Dense matrix multiplication for the linear layers.
//!
//! This is a thin, shape-checked wrapper over `matrixmultiply::sgemm`, which already packs panels
//! and dispatches to AVX/FMA micro-kernels at runtime. The `accumulate` flag maps onto sgemm's
//! `beta`, so a residual or a previous partial product can be added into `C` without a second pass
//! over memory. Bias and activation are deliberately *not* fused here: they live in
//! [`super::activation::bias_activation`], which runs over the output while it is still hot in
//! cache.

/// `C[m×n] = A[m×k]·B[k×n]` (`+ C` if `accumulate`), all row-major and contiguous.
/// Panics if a slice length disagrees with m, k, n.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    let len = |r: usize, c: usize, what: &str| {
        r.checked_mul(c)
            .unwrap_or_else(|| panic!("matmul: {what} dimensions {r}×{c} overflow usize"))
    };
    let (a_len, b_len, c_len) = (len(m, k, "A"), len(k, n, "B"), len(m, n, "C"));
    assert_eq!(
        a.len(),
        a_len,
        "matmul: A has {} elements, expected m×k = {m}×{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        b_len,
        "matmul: B has {} elements, expected k×n = {k}×{n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        c_len,
        "matmul: C has {} elements, expected m×n = {m}×{n}",
        c.len()
    );
    // Strides are passed to sgemm as isize; a slice can never exceed isize::MAX bytes, but the
    // element counts below are not bytes, so check the conversion rather than assume it.
    let stride = |x: usize| isize::try_from(x).expect("matmul: dimension exceeds isize::MAX");
    let (rsa, rsb, rsc) = (stride(k), stride(n), stride(n));

    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty inner product is 0; handled here so sgemm never sees empty A/B slices.
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // sgemm with beta == 0 never reads C, so stale (even NaN) contents of an output buffer cannot
    // leak into the result.
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: A is m×k with row stride k and column stride 1, B is k×n with row stride n, C is m×n
    // with row stride n; the length assertions above guarantee every addressed element lies inside
    // the respective slice. `c` is a unique borrow, so C does not alias A or B. m, k, n > 0 here.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            1,
            b.as_ptr(),
            rsb,
            1,
            beta,
            c.as_mut_ptr(),
            rsc,
            1,
        );
    }
}
