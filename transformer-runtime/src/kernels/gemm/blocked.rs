//! The cache-blocked loops around the register-tile microkernel, and the fused epilogue.
//!
//! Loop nest (outermost first), with what each level keeps in which cache:
//!
//! ```text
//! for jc: column block, nc columns of whole panels    kc × nc of B in L3 across the row blocks
//!   for ic: row block, mc rows of A                     mc × kc of A in L2 across the panels
//!     for pc: reduction block, kc of k                  —
//!       for p: one NR-wide panel of the column block    kc × NR of B in L2 across the row tiles
//!         for ir: one MR-row tile                       the MR × NR tile of C in registers
//! ```
//!
//! B's blocks are contiguous in the packed layout (block `pc`: every panel's `kc × NR` slice, one
//! after another), so the first pass over a block streams it sequentially from L3 or memory.
//!
//! The tile's accumulators live in registers for one reduction block. Between blocks its partial
//! sums wait in C (written by the first block, read and rewritten by the next), so every output
//! element is still one chain of multiply-adds over k in order, starting from zero: the same
//! arithmetic as an unblocked kernel, whatever `kc`, and bit-identical across row, column and
//! reduction splits. The epilogue (bias + activation) runs once, on the tile of the last block,
//! before its only store of final values.
//!
//! Training's products (`block_sums`) trade that invariance for accuracy: a weight gradient sums
//! over every row of the batch (k in the thousands), and one chain's rounding error grows with
//! k. There each block's tile starts from zero and its sum is added to C (`C + Σ_block`, block
//! after block, as BLAS implementations do), so the error grows with the block count instead;
//! results then depend on `kc`, which is fixed per CPU. In accumulate mode (`C += A·B`) the first
//! block adds to C's prior contents too.

use super::lanes::Lanes;
use super::{Args, Dest};
use crate::kernels::activation::Activation;

/// The blocked product of `args` with `MR × NR` tiles of `NV` registers of `V` per row.
///
/// # Safety
/// The CPU supports `V`'s target features.
#[inline(always)]
pub(super) unsafe fn gemm_blocked<V: Lanes, const MR: usize, const NV: usize, const NR: usize>(
    args: Args<'_, '_>,
    act: Activation,
) {
    let Args { a, m, b, panels, mut c, bias, accumulate, block_sums } = args;
    let (k, n, blocks, packed) = (b.k, b.n, b.blocks, &b.panels[..]);
    let panel_count = n.div_ceil(NR);
    // Output column `j` is element `j - col0` of a destination row.
    let col0 = panels.start * NR;
    // The layout's reduction blocks (one empty block when k = 0, so the epilogue still runs).
    let kc = blocks.kc;
    let k_blocks = if k == 0 { 1 } else { k.div_ceil(kc) };
    let mc = blocks.mc.max(1).div_ceil(MR) * MR;
    let nc_panels = (blocks.nc / NR).max(1);
    for jc in panels.clone().step_by(nc_panels) {
        let jc_panels = jc..(jc + nc_panels).min(panels.end);
        for ic in (0..m).step_by(mc) {
            let ic_end = (ic + mc).min(m);
            for kb in 0..k_blocks {
                let pc = kb * kc;
                let kc_len = kc.min(k - pc);
                // Whether C holds nothing to add to yet (the first block of a product that
                // overwrites C), and whether this is the block that finishes the tile.
                let (fresh, last) = (kb == 0 && !accumulate, kb + 1 == k_blocks);
                // A chained tile starts from zero only when C is fresh; a block sum always does,
                // and is added to C below.
                let first = fresh || block_sums;
                let block = &packed[pc * panel_count * NR..][..kc_len * panel_count * NR];
                for p in jc_panels.clone() {
                    let b = &block[p * kc_len * NR..][..kc_len * NR];
                    let j0 = p * NR;
                    let cols = j0 - col0..j0 - col0 + NR.min(n - j0);
                    let mut bias_tile = [0.0f32; NR];
                    if let (true, Some(bias)) = (last, bias) {
                        bias_tile[..cols.len()].copy_from_slice(&bias[j0..j0 + cols.len()]);
                    }
                    for ir in (ic..ic_end).step_by(MR) {
                        let rows = MR.min(ic_end - ir);
                        let mut tile = [[0.0f32; NR]; MR];
                        if !first {
                            for (i, t) in tile.iter_mut().enumerate().take(rows) {
                                copy_in(t, &dest_row(&mut c, ir + i, n)[cols.clone()]);
                            }
                        }
                        let a_tile = &a[ir * k + pc..][..(rows - 1) * k + kc_len];
                        // SAFETY: forwarded from the caller.
                        unsafe { tile_product::<V, MR, NV, NR>(a_tile, k, b, &mut tile[..rows], first) };
                        for (i, t) in tile.iter_mut().enumerate().take(rows) {
                            if block_sums && !fresh {
                                add_in(t, &dest_row(&mut c, ir + i, n)[cols.clone()]);
                            }
                            if last {
                                epilogue(t, &bias_tile, act);
                            }
                            copy_out(&mut dest_row(&mut c, ir + i, n)[cols.clone()], t);
                        }
                    }
                }
            }
        }
    }
}

/// Row `i` of the destination, indexed by output column minus the first computed column.
#[inline(always)]
fn dest_row<'c>(c: &'c mut Dest<'_, '_>, i: usize, n: usize) -> &'c mut [f32] {
    match c {
        Dest::Dense(c) => &mut c[i * n..][..n],
        Dest::Rows(rows) => &mut *rows[i],
    }
}

/// `tile[..src.len()] = src` (a whole register row when the panel is full).
#[inline(always)]
fn copy_in<const NR: usize>(tile: &mut [f32; NR], src: &[f32]) {
    match <&[f32; NR]>::try_from(src) {
        Ok(full) => *tile = *full,
        Err(_) => tile[..src.len()].copy_from_slice(src),
    }
}

/// `tile[..src.len()] = src + tile` (C's value, then the block's sum).
#[inline(always)]
fn add_in<const NR: usize>(tile: &mut [f32; NR], src: &[f32]) {
    for (t, &c) in tile.iter_mut().zip(src) {
        *t += c;
    }
}

/// `dst = tile[..dst.len()]`.
#[inline(always)]
fn copy_out<const NR: usize>(dst: &mut [f32], tile: &[f32; NR]) {
    let len = dst.len();
    match <&mut [f32; NR]>::try_from(&mut *dst) {
        Ok(full) => *full = *tile,
        Err(_) => dst.copy_from_slice(&tile[..len]),
    }
}

/// `act(x + bias)` over one finished row of a tile: one match, then a monomorphic loop the
/// compiler vectorises with the shim's target features.
#[inline(always)]
fn epilogue<const NR: usize>(x: &mut [f32; NR], bias: &[f32; NR], act: Activation) {
    #[inline(always)]
    fn each<const NR: usize>(x: &mut [f32; NR], bias: &[f32; NR], f: impl Fn(f32) -> f32) {
        for (x, &b) in x.iter_mut().zip(bias) {
            *x = f(*x + b);
        }
    }
    match act {
        Activation::Identity => each(x, bias, |x| x),
        Activation::GeluErf => each(x, bias, |x| Activation::GeluErf.apply(x)),
        Activation::GeluTanh => each(x, bias, |x| Activation::GeluTanh.apply(x)),
        Activation::Relu => each(x, bias, |x| Activation::Relu.apply(x)),
        Activation::Silu => each(x, bias, |x| Activation::Silu.apply(x)),
    }
}

/// [`microkernel`] with as many rows as `tile` has (1 ..= MR): an edge tile runs a kernel of its
/// own height instead of computing rows it would throw away.
///
/// # Safety
/// The CPU supports `V`'s target features.
#[inline(always)]
unsafe fn tile_product<V: Lanes, const MR: usize, const NV: usize, const NR: usize>(
    a: &[f32],
    lda: usize,
    b: &[f32],
    tile: &mut [[f32; NR]],
    first: bool,
) {
    macro_rules! heights {
        ($($r:literal)*) => {
            match tile.len() {
                $($r if $r <= MR => {
                    let tile: &mut [[f32; NR]; $r] = tile.try_into().expect("length checked by the match");
                    // SAFETY: forwarded from the caller.
                    unsafe { microkernel::<V, $r, NV, NR>(a, lda, b, tile, first) }
                })*
                rows => unreachable!("a tile has 1 ..= {MR} rows, not {rows}"),
            }
        };
    }
    heights!(1 2 3 4 5 6 7 8)
}

/// `tile[i] = (first ? 0 : tile[i]) + Σ_kk a[i·lda + kk] · b[kk·NR ..][..NR]` for the `R` rows of
/// a tile, over `kc = b.len() / NR` steps: `R × NV` registers of `V` accumulate for the whole
/// block, each step loading one `NR`-wide row of the B panel and broadcasting `A[i][kk]` (A read in
/// place, rows `lda` apart).
///
/// # Safety
/// The CPU supports `V`'s target features.
#[inline(always)]
unsafe fn microkernel<V: Lanes, const R: usize, const NV: usize, const NR: usize>(
    a: &[f32],
    lda: usize,
    b: &[f32],
    tile: &mut [[f32; NR]; R],
    first: bool,
) {
    const { assert!(NV * V::WIDTH == NR, "a tile row must be NV whole registers") };
    let kc = b.len() / NR;
    assert!(
        R >= 1 && b.len() == kc * NR && Some(a.len()) == ((R - 1) * lda).checked_add(kc),
        "gemm microkernel: inconsistent tile shape"
    );
    let row: [*const f32; R] = std::array::from_fn(|i| a[i * lda..].as_ptr());
    let b = b.as_ptr();
    // SAFETY (target features, every block below): guaranteed by the caller. Loads and stores of
    // `tile` rows: v·WIDTH + WIDTH ≤ NV·WIDTH = NR, a row's length.
    let mut acc: [[V; NV]; R] = std::array::from_fn(|i| {
        std::array::from_fn(|v| unsafe {
            if first {
                V::zero()
            } else {
                V::load(tile[i].as_ptr().add(v * V::WIDTH))
            }
        })
    });
    for kk in 0..kc {
        // SAFETY: kk < kc, so the NR = NV·WIDTH floats of `b` at kk·NR end at (kk + 1)·NR ≤
        // kc·NR, its length; row[i] is a[i·lda..] and i·lda + kk < (R − 1)·lda + kc = a.len().
        let b_row: [V; NV] = std::array::from_fn(|v| unsafe { V::load(b.add(kk * NR + v * V::WIDTH)) });
        for i in 0..R {
            let a_ik = unsafe { V::splat(*row[i].add(kk)) };
            for v in 0..NV {
                acc[i][v] = unsafe { V::mul_add(a_ik, b_row[v], acc[i][v]) };
            }
        }
    }
    for (out, regs) in tile.iter_mut().zip(&acc) {
        for (v, reg) in regs.iter().enumerate() {
            unsafe { reg.store(out.as_mut_ptr().add(v * V::WIDTH)) };
        }
    }
}
