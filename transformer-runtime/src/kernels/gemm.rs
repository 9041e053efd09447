//! Dense matrix multiplication for the linear layers.
//!
//! Two entry points:
//!
//! * [`matmul_packed`]: the one the layers use. B (the weight) is packed once at load into
//!   [`PackedB`] panels for the CPU's instruction set; the product is cache-blocked (reduction,
//!   row and column blocks sized from the cache sizes read at run time, [`Blocking`]) around an
//!   `MR×NR` register-tile microkernel with A read in place, applies the bias + activation
//!   [`Epilogue`] to each finished tile, and never allocates. Portable, AVX2+FMA and AVX-512F
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
    matmul_strided(Strided::row_major(a, m, k), Strided::row_major(b, k, n), c, accumulate);
}

/// A read-only matrix view: element `(r, c)` of a `rows × cols` matrix is
/// `data[r·row_stride + c·col_stride]`. A row-major matrix has `col_stride = 1`; its transpose is
/// the same data with the strides swapped, so a backward pass multiplies by `Aᵀ` without copying.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Strided<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Strided { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose: the same elements, rows and columns swapped.
    pub fn t(self) -> Self {
        Strided {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Panics unless every element `(r, c)` lies inside `data`.
    fn check(&self, what: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|a| (self.cols - 1).checked_mul(self.col_stride).and_then(|b| a.checked_add(b)))
            .unwrap_or_else(|| panic!("matmul_strided: {what}'s extent overflows usize"));
        assert!(
            last < self.data.len(),
            "matmul_strided: {what} ({}×{}, strides {}/{}) reaches element {last} of {}",
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
            self.data.len()
        );
    }
}

/// `C[m×n] = A·B` (`+ C` if `accumulate`) for strided views `A` (`m×k`) and `B` (`k×n`), `C`
/// contiguous row-major: the backward pass's products with a transposed operand (`dW += dYᵀ·X`).
/// Like [`matmul`] it runs `matrixmultiply::sgemm` and allocates its packing buffers per call.
/// Panics if the shapes disagree or a view reaches outside its slice.
pub fn matmul_strided(a: Strided<'_>, b: Strided<'_>, c: &mut [f32], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul_strided: A is {m}×{k} but B has {} rows", b.rows);
    assert_eq!(c.len(), m * n, "matmul_strided: C has {} elements, expected {m}×{n}", c.len());
    a.check("A");
    b.check("B");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    let stride = |x: usize| isize::try_from(x).expect("matmul_strided: stride exceeds isize::MAX");
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: `check` proved that every element (r, c) of A and B, at r·row_stride + c·col_stride,
    // lies inside its slice; C is a unique borrow of exactly m×n elements with row stride n, so it
    // aliases neither input. m, k, n > 0 here. With beta = 0 sgemm does not read C.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            stride(a.row_stride),
            stride(a.col_stride),
            b.data.as_ptr(),
            stride(b.row_stride),
            stride(b.col_stride),
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}

// ================================================================================================
// Packed-weights GEMM with a fused epilogue
// ================================================================================================
//
// Layout. `PackedB` stores B (`[k, n]`) as ⌈n/NR⌉ column panels of `NR` columns (the last one
// zero-padded), cut into reduction blocks of `kc` rows: block after block, each holding every
// panel's `kc × NR` slice in turn. The microkernel reads B strictly sequentially, one `NR`-wide row
// per step of the k-loop, and a block's first pass streams one contiguous run.
//
// Microkernel. An `MR×NR` tile of C lives in `MR × NR/WIDTH` SIMD registers for one reduction
// block of `kc` steps; each step loads one `NR`-wide row of the panel, broadcasts `A[i][kk]` (A
// read in place, row-major, stride k) and multiply-adds.
//
// Blocking (`gemm/blocked.rs`, sizes from the caches read at run time in `gemm/blocking.rs`).
// Reduction blocks of `kc` keep a panel's `kc×NR` slice in L2 while every row tile of a row block
// runs past it; row blocks of `mc` keep their `mc×kc` part of A in L2 beside it, for every panel;
// column blocks of `nc` keep a `kc×nc` block of B in this core's share of L3, and each row block
// streams B once. Between
// reduction blocks a tile's partial sums wait in C, so each output is still one multiply-add chain
// over k in order from zero: the blocking changes no result. After the last block the epilogue
// (bias + activation, one monomorphic vectorised loop per activation) runs on the tile while it is
// in L1, and it is stored. C is therefore only read where this call wrote it before.
//
// Column ranges. [`matmul_packed_cols`] computes only a range of whole panels, writing each row's
// columns to its own slice: that lets a caller split a small-m product (a decode step) across
// threads by columns, each thread streaming a disjoint part of B, with safe `&mut` row sub-slices
// instead of one shared C. Every output element goes through the same microkernel arithmetic
// (same panel, same A row, same k order) whichever way the work is split, so results are
// bit-identical to [`matmul_packed`].
//
// Edges. The last row tile of a block runs a microkernel of its own height (1 ..= MR rows), so
// nothing outside A is read and no row is computed in vain; columns past `n` multiply the zero
// padding of the last panel and are not stored.
//
// ISAs. One generic body (`blocked::gemm_blocked` → `blocked::microkernel`) over a small
// `lanes::Lanes` vector trait, instantiated with scalar `f32` lanes (the portable twin: separate mul +
// add, auto-vectorised for the baseline target) and, on x86_64, with `__m256` (AVX2+FMA) and
// `__m512` (AVX-512F) lanes inside `#[target_feature]` shims. The ISA is chosen when B is packed
// (its panel width depends on it), so a `PackedB` can only ever
// carry an ISA the running CPU supports.

use std::ops::Range;

use super::activation::Activation;

mod blocked;
mod blocking;
pub(crate) mod lanes;

pub use blocking::{Blocking, CacheSizes};

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

    /// The cache blocks this instruction set's kernel uses on this CPU for a reduction of length
    /// `k`: [`Blocking::for_reduction`] of the detected [`CacheSizes`] and the tile shape.
    pub fn blocking_for(self, k: usize) -> Blocking {
        Blocking::for_reduction(CacheSizes::detected(), self.tile_rows(), self.panel_width(), k)
    }

    /// [`GemmIsa::blocking_for`] the longest reduction block (computed once).
    pub fn blocking(self) -> Blocking {
        static BLOCKS: std::sync::OnceLock<[Blocking; 3]> = std::sync::OnceLock::new();
        let blocks = BLOCKS.get_or_init(|| {
            GemmIsa::ALL.map(|isa| Blocking::new(CacheSizes::detected(), isa.tile_rows(), isa.panel_width()))
        });
        blocks[self as usize]
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 16;
const AVX2_MR: usize = 6;
const AVX2_NR: usize = 16;
const AVX512_MR: usize = 8;
const AVX512_NR: usize = 32;

/// B (`[k, n]`) packed into zero-padded column panels for [`matmul_packed`], cut into reduction
/// blocks of the [`Blocking`] it was packed with.
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    isa: GemmIsa,
    /// The cache blocks of the product; `blocks.kc` is the reduction block of the layout (balanced:
    /// k is cut into equal blocks of at most the requested `kc`).
    blocks: Blocking,
    /// For each reduction block `pc .. pc + kc_len` (`pc` a multiple of `blocks.kc`), the
    /// ⌈n / NR⌉ panels' `kc_len × NR` rows of it, one panel after another: a block's slice of
    /// every panel is contiguous, and so is the whole block.
    panels: Vec<f32>,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedB")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("isa", &self.isa)
            .field("blocks", &self.blocks)
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
        Self::pack_blocked(isa, isa.blocking_for(k), b, k, n)
    }

    /// Packs a row-major `[k, n]` matrix for `isa`, with explicit cache blocks instead of the ones
    /// derived from this CPU's caches (tests, tuning). Results do not depend on the blocks.
    /// Panics as [`PackedB::pack_for`] does.
    pub fn pack_blocked(isa: GemmIsa, blocks: Blocking, b: &[f32], k: usize, n: usize) -> Self {
        let len = k.checked_mul(n).unwrap_or_else(|| panic!("PackedB: dimensions {k}×{n} overflow usize"));
        assert_eq!(b.len(), len, "PackedB: B has {} elements, expected k×n = {k}×{n}", b.len());
        Self::from_fn_blocked(isa, blocks, k, n, |kk, j| b[kk * n + j])
    }

    /// Packs the `[k, n]` matrix whose element `(kk, j)` is `f(kk, j)`, for `isa` (e.g. straight
    /// from a transposed `[n, k]` weight without materialising the transpose). Panics if this CPU
    /// does not support `isa`.
    pub fn from_fn(isa: GemmIsa, k: usize, n: usize, f: impl Fn(usize, usize) -> f32) -> Self {
        Self::from_fn_blocked(isa, isa.blocking_for(k), k, n, f)
    }

    /// [`PackedB::from_fn`] with explicit cache blocks (see [`PackedB::pack_blocked`]).
    pub fn from_fn_blocked(
        isa: GemmIsa,
        blocks: Blocking,
        k: usize,
        n: usize,
        f: impl Fn(usize, usize) -> f32,
    ) -> Self {
        let mut packed = Self { k: 0, n: 0, isa: GemmIsa::Portable, blocks, panels: Vec::new() };
        packed.refill_blocked(isa, blocks, k, n, f);
        packed
    }

    /// An empty matrix (`0 × 0`) whose storage [`PackedB::refill`] grows on first use and then
    /// reuses: the packing buffer of a product whose B changes every call (training's weights).
    pub fn empty() -> Self {
        Self { k: 0, n: 0, isa: GemmIsa::Portable, blocks: GemmIsa::Portable.blocking(), panels: Vec::new() }
    }

    /// Packs `f` (as [`PackedB::from_fn`] does) into this matrix's storage, reusing it: no heap
    /// allocation once the storage has held a matrix at least this large. Panics if this CPU does
    /// not support `isa`.
    pub fn refill(&mut self, isa: GemmIsa, k: usize, n: usize, f: impl Fn(usize, usize) -> f32) {
        self.refill_blocked(isa, isa.blocking_for(k), k, n, f);
    }

    fn refill_blocked(
        &mut self,
        isa: GemmIsa,
        blocks: Blocking,
        k: usize,
        n: usize,
        f: impl Fn(usize, usize) -> f32,
    ) {
        // The kernels behind `isa` are only ever called through a `PackedB`, so this check is what
        // makes the `#[target_feature]` calls in `matmul_packed` sound.
        assert!(isa.is_supported(), "PackedB: this CPU does not support {isa:?}");
        let nr = isa.panel_width();
        let panels = n.div_ceil(nr);
        let len = panels
            .checked_mul(nr)
            .and_then(|x| x.checked_mul(k))
            .unwrap_or_else(|| panic!("PackedB: dimensions {k}×{n} overflow usize"));
        // Equal reduction blocks of at most the requested kc: k = 384 under kc = 256 is two blocks
        // of 192, not 256 + 128.
        let kc = if k == 0 { 0 } else { k.div_ceil(k.div_ceil(blocks.kc.max(1))) };
        let blocks = Blocking { kc, ..blocks };
        let data = &mut self.panels;
        data.clear();
        data.resize(len, 0.0);
        let mut rest = &mut data[..];
        for pc in (0..k).step_by(kc.max(1)) {
            let kc_len = kc.min(k - pc);
            for p in 0..panels {
                let (block, tail) = rest.split_at_mut(kc_len * nr);
                rest = tail;
                let j0 = p * nr;
                let width = nr.min(n - j0);
                for (kk, row) in (pc..).zip(block.chunks_exact_mut(nr)) {
                    for (jj, x) in row[..width].iter_mut().enumerate() {
                        *x = f(kk, j0 + jj);
                    }
                }
            }
        }
        (self.k, self.n, self.isa, self.blocks) = (k, n, isa, blocks);
    }

    /// The cache blocks products with this matrix use (`kc` as balanced for this `k`).
    pub fn blocking(&self) -> Blocking {
        self.blocks
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
/// and the instruction set). C's prior contents are never read (partial sums written by this call
/// are). No heap allocation.
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
    let args = Args {
        a,
        m,
        b,
        panels,
        c: Dest::Dense(c),
        bias: epilogue.bias,
        accumulate: false,
        block_sums: false,
    };
    dispatch(args, epilogue.activation);
}

/// Training's product: `C[m×n] = A[m×k]·B + bias` (`accumulate = false`) or `C += A·B`
/// (`accumulate = true`, no bias), A and C row-major and contiguous, B packed. Unlike
/// [`matmul_packed`], each reduction block of the packed layout is summed from zero and added to
/// C in turn, as BLAS does: gradients reduce over every row of a batch, and a single multiply-add
/// chain that long loses accuracy (it measurably moved Adam's updates against PyTorch's). Results
/// depend on the layout's `kc` but never on how rows are split across threads. No heap
/// allocation. Panics if a slice length disagrees with m, k, n, or if a bias is given with
/// `accumulate`.
pub fn matmul_packed_sums(
    a: &[f32],
    m: usize,
    b: &PackedB,
    c: &mut [f32],
    bias: Option<&[f32]>,
    accumulate: bool,
) {
    assert!(
        !(accumulate && bias.is_some()),
        "matmul_packed_sums: a bias is only added when C is overwritten"
    );
    let epilogue = Epilogue::new(bias, Activation::Identity);
    check_operands("matmul_packed_sums", a, m, b, epilogue);
    let n = b.n;
    let c_len =
        m.checked_mul(n).unwrap_or_else(|| panic!("matmul_packed_sums: C dimensions {m}×{n} overflow usize"));
    assert_eq!(c.len(), c_len, "matmul_packed_sums: C has {} elements, expected m×n = {m}×{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    let panels = 0..b.panel_count();
    let args = Args { a, m, b, panels, c: Dest::Dense(c), bias, accumulate, block_sums: true };
    dispatch(args, Activation::Identity);
}

/// Columns `cols = b.panel_cols(panels)` of `epilogue(A[m×k]·B)`: row `i`'s are written to `c[i]`,
/// which must have exactly `cols.len()` elements (`c[i][j]` is output column `cols.start + j`). A
/// is row-major and contiguous; `epilogue.bias`, if any, has all `n` columns. C's prior contents
/// are never read.
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
        Args { a, m, b, panels, c: Dest::Rows(c), bias: epilogue.bias, accumulate: false, block_sums: false };
    dispatch(args, epilogue.activation);
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
fn dispatch(args: Args<'_, '_>, act: Activation) {
    match args.b.isa {
        // SAFETY: the scalar `f32` lanes need no target feature.
        GemmIsa::Portable => unsafe {
            blocked::gemm_blocked::<f32, PORTABLE_MR, PORTABLE_NR, PORTABLE_NR>(args, act)
        },
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
    b: &'a PackedB,
    /// The panels to compute.
    panels: Range<usize>,
    c: Dest<'a, 'r>,
    bias: Option<&'a [f32]>,
    /// `C += A·B` (no epilogue) instead of `C = epilogue(A·B)`.
    accumulate: bool,
    /// Each reduction block's tile summed from zero, then added to C (see `blocked.rs`).
    block_sums: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemm_avx2_fma(args: Args<'_, '_>, act: Activation) {
    // SAFETY: this function is compiled with, and only called on CPUs with, AVX2 + FMA, which is
    // all `lanes::x86::Avx2` needs.
    unsafe { blocked::gemm_blocked::<lanes::x86::Avx2, AVX2_MR, { AVX2_NR / 8 }, AVX2_NR>(args, act) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn gemm_avx512(args: Args<'_, '_>, act: Activation) {
    // SAFETY: this function is compiled with, and only called on CPUs with, AVX-512F, which is all
    // `lanes::x86::Avx512` needs.
    unsafe {
        blocked::gemm_blocked::<lanes::x86::Avx512, AVX512_MR, { AVX512_NR / 16 }, AVX512_NR>(args, act)
    };
}
