//! Dense matrix multiplication for the linear layers.
//!
//! Two entry points:
//!
//! * [`matmul_packed`]: the one the layers use. B (the weight) is packed once at load into
//!   [`PackedB`] panels for the CPU's instruction set; the product runs an `MR×NR` register-tile
//!   microkernel with A read in place, applies the bias + activation [`Epilogue`] to each tile in
//!   registers/on the stack, and stores C once. It never allocates. Portable, AVX2+FMA and AVX-512F
//!   instantiations of one generic body, chosen at runtime (see the section comment further down).
//! * [`matmul`]: a thin, shape-checked wrapper over `matrixmultiply::sgemm`, kept as the reference
//!   baseline (benches, tests). It allocates packing buffers on every call, and bias/activation
//!   are not fused: [`super::activation::bias_activation`] is a separate pass after it. The
//!   `accumulate` flag maps onto sgemm's `beta`.

/// `C[m×n] = A[m×k]·B[k×n]` (`+ C` if `accumulate`), all row-major and contiguous.
/// Panics if a slice length disagrees with m, k, n.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    let len = |r: usize, c: usize, what: &str| {
        r.checked_mul(c).unwrap_or_else(|| panic!("matmul: {what} dimensions {r}×{c} overflow usize"))
    };
    let (a_len, b_len, c_len) = (len(m, k, "A"), len(k, n, "B"), len(m, n, "C"));
    assert_eq!(a.len(), a_len, "matmul: A has {} elements, expected m×k = {m}×{k}", a.len());
    assert_eq!(b.len(), b_len, "matmul: B has {} elements, expected k×n = {k}×{n}", b.len());
    assert_eq!(c.len(), c_len, "matmul: C has {} elements, expected m×n = {m}×{n}", c.len());
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

// ================================================================================================
// Packed-weights GEMM with a fused epilogue
// ================================================================================================
//
// Layout. `PackedB` stores B (`[k, n]`) as ⌈n/NR⌉ column panels; panel `p` holds columns
// `p·NR .. p·NR + NR` as `k` consecutive rows of `NR` floats, the last panel zero-padded. The
// microkernel therefore reads B strictly sequentially, one `NR`-wide row per step of the k-loop.
//
// Microkernel. An `MR×NR` tile of C lives in `MR × NR/WIDTH` SIMD registers for the whole k-loop,
// which loads one `NR`-wide row of the panel, broadcasts `A[i][kk]` (A read in place, row-major,
// stride k) and multiply-adds. After the last k step the tile is spilled once to a stack array, the
// epilogue (bias + activation, one monomorphic vectorised loop per activation) runs on it while it
// is in L1, and it is stored to C: C is written exactly once and never read.
//
// Blocking. Rows are processed in blocks of `MC` (so the `MC×k` slab of A stays in L2 while every
// B panel streams past it); inside a block, panels are the outer loop and `MR`-row tiles the inner
// one (so each `k×NR` panel is reused from L1/L2 for all tiles of the block). There is no blocking
// over k: the tile stays in registers for the whole reduction, which keeps the epilogue trivially
// "after the last k", and at transformer widths (k ≤ a few thousand) a panel fits in L2 anyway.
//
// Column ranges. [`matmul_packed_cols`] computes only a range of whole panels, writing each row's
// columns to its own slice: that lets a caller split a small-m product (a decode step) across
// threads by columns, each thread streaming a disjoint part of B, with safe `&mut` row sub-slices
// instead of one shared C. Every output element goes through the same microkernel arithmetic
// (same panel, same A row, same k order) whichever way the work is split, so results are
// bit-identical to [`matmul_packed`].
//
// Edges. Rows past `m` in the last tile read a duplicate of the last valid row of A (so nothing
// outside A is touched) and their results are discarded; columns past `n` multiply the zero padding
// of the last panel and are not stored.
//
// ISAs. One generic body ([`gemm_body`] → [`gemm_blocks`] → [`microkernel`]) over a small
// [`Lanes`] vector trait, instantiated with scalar `f32` lanes (the portable twin: separate mul +
// add, auto-vectorised for the baseline target) and, on x86_64, with `__m256` (AVX2+FMA) and
// `__m512` (AVX-512F) lanes inside `#[target_feature]` shims. The ISA is chosen when B is packed
// (its panel width depends on it), so a `PackedB` can only ever
// carry an ISA the running CPU supports.

use std::ops::Range;

use super::activation::Activation;

/// Instruction set a [`PackedB`] is packed for and [`matmul_packed`] runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmIsa {
    /// Baseline target only; the scalar/auto-vectorised twin of the SIMD paths.
    Portable,
    /// AVX2 + FMA: 6×16 tiles (12 ymm accumulators).
    Avx2Fma,
    /// AVX-512F (+ AVX2/FMA): 8×32 tiles (16 zmm accumulators).
    Avx512,
}

impl GemmIsa {
    /// Every variant, best last.
    pub const ALL: [GemmIsa; 3] = [GemmIsa::Portable, GemmIsa::Avx2Fma, GemmIsa::Avx512];

    /// The best instruction set this CPU supports (detected once, then cached).
    pub fn detected() -> GemmIsa {
        static BEST: std::sync::OnceLock<GemmIsa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            GemmIsa::ALL.into_iter().rev().find(|isa| isa.is_supported()).unwrap_or(GemmIsa::Portable)
        })
    }

    /// Whether this CPU can run kernels for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            GemmIsa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx2Fma => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            GemmIsa::Avx512 => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            GemmIsa::Avx2Fma | GemmIsa::Avx512 => false,
        }
    }

    /// The supported instruction sets (for tests and benches).
    pub fn supported() -> Vec<GemmIsa> {
        GemmIsa::ALL.into_iter().filter(|isa| isa.is_supported()).collect()
    }

    /// Width of a B panel (`NR`) for this instruction set.
    pub const fn panel_width(self) -> usize {
        match self {
            GemmIsa::Portable => PORTABLE_NR,
            GemmIsa::Avx2Fma => AVX2_NR,
            GemmIsa::Avx512 => AVX512_NR,
        }
    }

    /// Rows of a microkernel tile (`MR`) for this instruction set.
    pub const fn tile_rows(self) -> usize {
        match self {
            GemmIsa::Portable => PORTABLE_MR,
            GemmIsa::Avx2Fma => AVX2_MR,
            GemmIsa::Avx512 => AVX512_MR,
        }
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 16;
const AVX2_MR: usize = 6;
const AVX2_NR: usize = 16;
const AVX512_MR: usize = 8;
const AVX512_NR: usize = 32;

/// Rows of A per cache block: a 64×k slab (≤ 384 KiB for k = 1536) stays in L2 while the panels of
/// B stream past it. A multiple of every `MR`… except 6, whose last tile in a block is a 4-row edge.
const MC: usize = 64;

/// B (`[k, n]`) packed into zero-padded column panels for [`matmul_packed`].
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    isa: GemmIsa,
    /// ⌈n / NR⌉ panels of `k × NR` floats each.
    panels: Vec<f32>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

impl PackedB {
    /// Packs a row-major `[k, n]` matrix for the best instruction set of this CPU.
    pub fn pack(b: &[f32], k: usize, n: usize) -> Self {
        Self::pack_for(GemmIsa::detected(), b, k, n)
    }

    /// Packs a row-major `[k, n]` matrix for `isa`. Panics if `b.len() != k·n` or if this CPU does
    /// not support `isa`.
    pub fn pack_for(isa: GemmIsa, b: &[f32], k: usize, n: usize) -> Self {
        let len = k.checked_mul(n).unwrap_or_else(|| panic!("PackedB: dimensions {k}×{n} overflow usize"));
        assert_eq!(b.len(), len, "PackedB: B has {} elements, expected k×n = {k}×{n}", b.len());
        Self::from_fn(isa, k, n, |kk, j| b[kk * n + j])
    }

    /// Packs the `[k, n]` matrix whose element `(kk, j)` is `f(kk, j)`, for `isa` (e.g. straight
    /// from a transposed `[n, k]` weight without materialising the transpose). Panics if this CPU
    /// does not support `isa`.
    pub fn from_fn(isa: GemmIsa, k: usize, n: usize, f: impl Fn(usize, usize) -> f32) -> Self {
        // The kernels behind `isa` are only ever called through a `PackedB`, so this check is what
        // makes the `#[target_feature]` calls in `matmul_packed` sound.
        assert!(isa.is_supported(), "PackedB: this CPU does not support {isa:?}");
        let nr = isa.panel_width();
        let panels = n.div_ceil(nr);
        let len = panels
            .checked_mul(nr)
            .and_then(|x| x.checked_mul(k))
            .unwrap_or_else(|| panic!("PackedB: dimensions {k}×{n} overflow usize"));
        let mut data = vec![0.0f32; len];
        if k > 0 {
            for (p, panel) in data.chunks_exact_mut(k * nr).enumerate() {
                let j0 = p * nr;
                let width = nr.min(n - j0);
                for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                    for (jj, x) in row[..width].iter_mut().enumerate() {
                        *x = f(kk, j0 + jj);
                    }
                }
            }
        }
        Self { k, n, isa, panels: data }
    }

    /// Rows of B (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B (the output width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The instruction set this matrix was packed for.
    pub fn isa(&self) -> GemmIsa {
        self.isa
    }

    /// Number of column panels, ⌈n / NR⌉ with `NR = isa().panel_width()`.
    pub fn panel_count(&self) -> usize {
        self.n.div_ceil(self.isa.panel_width())
    }

    /// The output columns covered by `panels`: `start·NR .. min(end·NR, n)`. Panics unless
    /// `panels.start ≤ panels.end ≤ panel_count()`.
    pub fn panel_cols(&self, panels: Range<usize>) -> Range<usize> {
        assert!(
            panels.start <= panels.end && panels.end <= self.panel_count(),
            "PackedB: panel range {panels:?} is not within 0..{}",
            self.panel_count()
        );
        let nr = self.isa.panel_width();
        panels.start * nr..(panels.end * nr).min(self.n)
    }
}

/// What [`matmul_packed`] applies to each finished tile before storing it: `act(x + bias[col])`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// Per-column bias (`n` elements), or none.
    pub bias: Option<&'a [f32]>,
    /// Activation applied after the bias.
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// Plain product: no bias, identity activation.
    pub const NONE: Epilogue<'static> = Epilogue { bias: None, activation: Activation::Identity };

    /// `act(x + bias)` (or `act(x)` when `bias` is `None`).
    pub fn new(bias: Option<&'a [f32]>, activation: Activation) -> Self {
        Self { bias, activation }
    }
}

/// `C[m×n] = epilogue(A[m×k]·B)` with A and C row-major and contiguous, B packed (which fixes k, n
/// and the instruction set). C is only written, never read. No heap allocation.
/// Panics if a slice length disagrees with m, k, n or the bias length with n.
pub fn matmul_packed(a: &[f32], m: usize, b: &PackedB, c: &mut [f32], epilogue: Epilogue<'_>) {
    check_operands("matmul_packed", a, m, b, epilogue);
    let n = b.n;
    let c_len =
        m.checked_mul(n).unwrap_or_else(|| panic!("matmul_packed: C dimensions {m}×{n} overflow usize"));
    assert_eq!(c.len(), c_len, "matmul_packed: C has {} elements, expected m×n = {m}×{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    let panels = 0..b.panel_count();
    dispatch(
        Args { a, m, k: b.k, n, panels, panel_data: &b.panels, c: Dest::Dense(c), bias: epilogue.bias },
        b.isa,
        epilogue.activation,
    );
}

/// Columns `cols = b.panel_cols(panels)` of `epilogue(A[m×k]·B)`: row `i`'s are written to `c[i]`,
/// which must have exactly `cols.len()` elements (`c[i][j]` is output column `cols.start + j`). A
/// is row-major and contiguous; `epilogue.bias`, if any, has all `n` columns. C is only written.
/// No heap allocation. Every element is bit-identical to the one [`matmul_packed`] computes.
///
/// This lets a caller split a product with few rows across threads by columns: each task takes a
/// disjoint panel range (so streams a disjoint part of B) and disjoint `&mut` row sub-slices.
/// Panics if the panel range is out of bounds or a length disagrees with m, k, n or the range.
pub fn matmul_packed_cols(
    a: &[f32],
    m: usize,
    b: &PackedB,
    panels: Range<usize>,
    c: &mut [&mut [f32]],
    epilogue: Epilogue<'_>,
) {
    check_operands("matmul_packed_cols", a, m, b, epilogue);
    let cols = b.panel_cols(panels.clone());
    assert_eq!(c.len(), m, "matmul_packed_cols: C has {} rows, expected m = {m}", c.len());
    for (i, row) in c.iter().enumerate() {
        assert_eq!(
            row.len(),
            cols.len(),
            "matmul_packed_cols: C row {i} has {} elements, expected the {} columns {cols:?}",
            row.len(),
            cols.len()
        );
    }
    if m == 0 || cols.is_empty() {
        return;
    }
    let args =
        Args { a, m, k: b.k, n: b.n, panels, panel_data: &b.panels, c: Dest::Rows(c), bias: epilogue.bias };
    dispatch(args, b.isa, epilogue.activation);
}

/// The shape checks both entry points share: A is `m×k`, the bias (if any) has `n` elements.
fn check_operands(what: &str, a: &[f32], m: usize, b: &PackedB, epilogue: Epilogue<'_>) {
    let (k, n) = (b.k, b.n);
    let a_len = m.checked_mul(k).unwrap_or_else(|| panic!("{what}: A dimensions {m}×{k} overflow usize"));
    assert_eq!(a.len(), a_len, "{what}: A has {} elements, expected m×k = {m}×{k}", a.len());
    if let Some(bias) = epilogue.bias {
        assert_eq!(bias.len(), n, "{what}: bias has {} elements, expected n = {n}", bias.len());
    }
}

/// Runs the kernel of `isa` (the one `Args`' panels were packed for) on shape-checked operands.
fn dispatch(args: Args<'_, '_>, isa: GemmIsa, act: Activation) {
    match isa {
        // SAFETY: the scalar `f32` lanes need no target feature.
        GemmIsa::Portable => unsafe { gemm_body::<f32, PORTABLE_MR, PORTABLE_NR, PORTABLE_NR>(args, act) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `gemm_avx2_fma` requires the `avx2` and `fma` target features; a `PackedB` can
        // only carry `GemmIsa::Avx2Fma` if `from_fn` confirmed at runtime that this CPU has both.
        GemmIsa::Avx2Fma => unsafe { gemm_avx2_fma(args, act) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `gemm_avx512` requires `avx512f`, `avx2` and `fma`; a `PackedB` can only carry
        // `GemmIsa::Avx512` if `from_fn` confirmed at runtime that this CPU has all three.
        GemmIsa::Avx512 => unsafe { gemm_avx512(args, act) },
        #[cfg(not(target_arch = "x86_64"))]
        GemmIsa::Avx2Fma | GemmIsa::Avx512 => unreachable!("PackedB::from_fn rejects x86 ISAs here"),
    }
}

/// Where finished tiles go.
enum Dest<'a, 'r> {
    /// Row-major contiguous `[m, n]` (all panels).
    Dense(&'a mut [f32]),
    /// One slice per row holding exactly the columns of `Args::panels`.
    Rows(&'a mut [&'r mut [f32]]),
}

/// Shape-checked operands of one [`matmul_packed`] / [`matmul_packed_cols`] call (m > 0, a
/// non-empty panel range; lengths verified).
struct Args<'a, 'r> {
    a: &'a [f32],
    m: usize,
    k: usize,
    n: usize,
    /// The panels to compute.
    panels: Range<usize>,
    /// All of B's packed panels.
    panel_data: &'a [f32],
    c: Dest<'a, 'r>,
    bias: Option<&'a [f32]>,
}

/// A vector of `WIDTH` f32 lanes: what one microkernel register holds.
///
/// The methods are `#[inline(always)]` so they are compiled inside the `#[target_feature]` shim that
/// instantiates [`gemm_body`]; they are `unsafe` because the SIMD implementations may only run on a
/// CPU with their target features (the scalar one has no requirement).
trait Lanes: Copy {
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
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 8 lanes, AVX + FMA.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256);

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
    pub(super) struct Avx512(__m512);

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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemm_avx2_fma(args: Args<'_, '_>, act: Activation) {
    // SAFETY: this function is compiled with, and only called on CPUs with, AVX2 + FMA, which is
    // all `x86::Avx2` needs.
    unsafe { gemm_body::<x86::Avx2, AVX2_MR, { AVX2_NR / 8 }, AVX2_NR>(args, act) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn gemm_avx512(args: Args<'_, '_>, act: Activation) {
    // SAFETY: this function is compiled with, and only called on CPUs with, AVX-512F, which is all
    // `x86::Avx512` needs.
    unsafe { gemm_body::<x86::Avx512, AVX512_MR, { AVX512_NR / 16 }, AVX512_NR>(args, act) };
}

/// Picks the activation once, so each arm is a monomorphic kernel whose epilogue vectorises.
///
/// # Safety
/// The CPU supports `V`'s target features.
#[inline(always)]
unsafe fn gemm_body<V: Lanes, const MR: usize, const NV: usize, const NR: usize>(
    args: Args<'_, '_>,
    act: Activation,
) {
    // SAFETY (all arms): forwarded from the caller.
    unsafe {
        match act {
            Activation::Identity => gemm_blocks::<V, MR, NV, NR>(args, |x| x),
            Activation::GeluErf => gemm_blocks::<V, MR, NV, NR>(args, |x| Activation::GeluErf.apply(x)),
            Activation::GeluTanh => gemm_blocks::<V, MR, NV, NR>(args, |x| Activation::GeluTanh.apply(x)),
            Activation::Relu => gemm_blocks::<V, MR, NV, NR>(args, |x| Activation::Relu.apply(x)),
            Activation::Silu => gemm_blocks::<V, MR, NV, NR>(args, |x| Activation::Silu.apply(x)),
        }
    }
}

/// The blocked loops around the microkernel, the epilogue and the store.
///
/// # Safety
/// The CPU supports `V`'s target features.
#[inline(always)]
unsafe fn gemm_blocks<V: Lanes, const MR: usize, const NV: usize, const NR: usize>(
    args: Args<'_, '_>,
    act: impl Fn(f32) -> f32,
) {
    let Args { a, m, k, n, panels, panel_data, mut c, bias } = args;
    // Output column `j` is element `j - col0` of a destination row.
    let col0 = panels.start * NR;
    for ic in (0..m).step_by(MC) {
        let mc = MC.min(m - ic);
        for p in panels.clone() {
            let panel = &panel_data[p * k * NR..(p + 1) * k * NR];
            let j0 = p * NR;
            let width = NR.min(n - j0);
            let mut bias_tile = [0.0f32; NR];
            if let Some(bias) = bias {
                bias_tile[..width].copy_from_slice(&bias[j0..j0 + width]);
            }
            for ir in (ic..ic + mc).step_by(MR) {
                let rows = MR.min(ic + mc - ir);
                // SAFETY: forwarded from the caller.
                let mut acc =
                    unsafe { microkernel::<V, MR, NV, NR>(&a[ir * k..(ir + rows) * k], rows, k, panel) };
                for row in &mut acc {
                    for (x, &b) in row.iter_mut().zip(&bias_tile) {
                        *x = act(*x + b);
                    }
                }
                for (i, row) in acc.iter().enumerate().take(rows) {
                    let dst_row: &mut [f32] = match &mut c {
                        Dest::Dense(c) => &mut c[(ir + i) * n..][..n],
                        Dest::Rows(rows) => &mut *rows[ir + i],
                    };
                    let dst = &mut dst_row[j0 - col0..][..width];
                    match <&mut [f32; NR]>::try_from(&mut *dst) {
                        Ok(full) => *full = *row,
                        Err(_) => dst.copy_from_slice(&row[..width]),
                    }
                }
            }
        }
    }
}

/// The `MR×NR` tile `A[rows×k]·panel[k×NR]`, accumulated in `MR×NV` registers of `V` for the whole
/// k-loop. Tile rows `rows..MR` repeat the last row of A (so only memory inside `a` is read); the
/// caller discards them.
///
/// # Safety
/// The CPU supports `V`'s target features.
#[inline(always)]
unsafe fn microkernel<V: Lanes, const MR: usize, const NV: usize, const NR: usize>(
    a: &[f32],
    rows: usize,
    k: usize,
    panel: &[f32],
) -> [[f32; NR]; MR] {
    const { assert!(NV * V::WIDTH == NR, "a tile row must be NV whole registers") };
    assert!(
        (1..=MR).contains(&rows)
            && Some(a.len()) == rows.checked_mul(k)
            && Some(panel.len()) == k.checked_mul(NR),
        "gemm microkernel: inconsistent tile shape"
    );
    let row_start: [*const f32; MR] = std::array::from_fn(|i| a[i.min(rows - 1) * k..].as_ptr());
    let b = panel.as_ptr();
    // SAFETY (target features, every block below): guaranteed by the caller.
    let mut acc = [[unsafe { V::zero() }; NV]; MR];
    for kk in 0..k {
        // SAFETY: kk < k, so the NR = NV·WIDTH floats at kk·NR end at (kk + 1)·NR ≤ k·NR, the
        // panel's length.
        let b_row: [V; NV] = std::array::from_fn(|v| unsafe { V::load(b.add(kk * NR + v * V::WIDTH)) });
        for i in 0..MR {
            // SAFETY: row_start[i] is the start of a row r < rows of `a` (length rows·k), so offset
            // kk < k stays inside that row.
            let a_ik = unsafe { V::splat(*row_start[i].add(kk)) };
            for v in 0..NV {
                acc[i][v] = unsafe { V::mul_add(a_ik, b_row[v], acc[i][v]) };
            }
        }
    }
    let mut tile = [[0.0f32; NR]; MR];
    for (out, regs) in tile.iter_mut().zip(&acc) {
        for (v, reg) in regs.iter().enumerate() {
            // SAFETY: v·WIDTH + WIDTH ≤ NV·WIDTH = NR, the length of `out`.
            unsafe { reg.store(out.as_mut_ptr().add(v * V::WIDTH)) };
        }
    }
    tile
}
