//! The vector type the GEMM microkernel is generic over: scalar `f32` (the portable twin), `__m256`
//! (AVX2 + FMA) and `__m512` (AVX-512F).

/// A vector of `WIDTH` f32 lanes: what one microkernel register holds.
///
/// The methods are `#[inline(always)]` so they are compiled inside the `#[target_feature]` shim that
/// instantiates the generic GEMM body; they are `unsafe` because the SIMD implementations may only run on a
/// CPU with their target features (the scalar one has no requirement).
pub(crate) trait Lanes: Copy {
    const WIDTH: usize;
    /// # Safety
    /// The CPU supports this type's target features.
    unsafe fn zero() -> Self;
    /// # Safety
    /// As for [`Lanes::zero`].
    unsafe fn splat(x: f32) -> Self;
    /// # Safety
    /// As for [`Lanes::zero`], and `p` is valid for reading `WIDTH` floats.
    unsafe fn load(p: *const f32) -> Self;
    /// `a·b + acc`.
    /// # Safety
    /// As for [`Lanes::zero`].
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self;
    /// # Safety
    /// As for [`Lanes::zero`], and `p` is valid for writing `WIDTH` floats.
    unsafe fn store(self, p: *mut f32);
}

/// The portable twin: one f32 per "register", separate multiply and add (the baseline has no FMA,
/// and `f32::mul_add` without hardware FMA is a slow libm call). LLVM vectorises the unrolled
/// tile with whatever the baseline target offers.
impl Lanes for f32 {
    const WIDTH: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> Self {
        0.0
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
        a * b + acc
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees `p` is writable.
        unsafe { *p = self }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 8 lanes, AVX + FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Lanes for Avx2 {
        const WIDTH: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX.
            Avx2(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX.
            Avx2(unsafe { _mm256_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX and 8 readable floats at `p` (unaligned load).
            Avx2(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
            // SAFETY: the caller guarantees FMA.
            Avx2(unsafe { _mm256_fmadd_ps(a.0, b.0, acc.0) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees AVX and 8 writable floats at `p` (unaligned store).
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
    }

    /// 16 lanes, AVX-512F.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Lanes for Avx512 {
        const WIDTH: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F and 16 readable floats at `p` (unaligned).
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, acc: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, acc.0) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees AVX-512F and 16 writable floats at `p` (unaligned).
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
    }
}
