//! Backward pass of multi-head scaled-dot-product attention, FlashAttention-2's way: the forward
//! keeps only each (query row, head)'s log-sum-exp, and the backward recomputes the attention
//! probabilities one block at a time from it, so no `rows × keys` matrix is kept or materialised.
//!
//! With `S = Q·Kᵀ·scale + bias` over the keys a query sees, `P = softmax(S)` and `O = P·V`, the
//! gradients of a loss with upstream gradient `dO` are
//!
//! ```text
//! D_i = Σ_d dO_id · O_id                    one number per (row, head)
//! P   = exp(S − lse)                        recomputed per (block of rows × key tile)
//! dV += Pᵀ·dO        dP = dO·Vᵀ
//! dS  = P ∘ (dP − D)
//! dQ  = scale · dS·K  dK += scale · dSᵀ·Q
//! ```
//!
//! The work runs over blocks of [`Q_BLOCK`] query rows of one head against tiles of [`KEY_TILE`]
//! keys; a block's `P`/`dS` tile lives in caller scratch ([`attention_backward_scratch_len`]).
//! Under a causal limit or a window the tiles a block cannot see are skipped, as in the forward.
//!
//! **What is kept.** [`attention_train`] writes `out` (the inference kernel's output) and `lse`;
//! the backward reads `q`, `k`, `v` (not kept: they are the projections' outputs, which the
//! caller has anyway), `out`, `d_out` and `lse`.
//!
//! **Layouts.** `q`, `k`, `v` are [`HeadRows`] views as in the forward (row `r`, head `h` at
//! `data[r·stride + offset + h·HD..][..HD]`, so a fused `[Q | K | V]` row works). Everything else
//! is a plain contiguous row-major slice: `out`, `d_out` and `dq` are `[q.rows, heads·HD]`, `dk` and
//! `dv` `[k.rows, kv_heads·HD]`, `lse` `[q.rows, heads]` (row-major: `lse[r·heads + h]`).
//!
//! **Convention.** `dq`, `dk` and `dv` are activation gradients (of the Q/K/V projections'
//! outputs) and are **written**: each is zeroed here first, then accumulated over key tiles (and,
//! for `dk`/`dv` under grouped-query attention, over the `heads / kv_heads` query heads that share
//! a key/value head). A query row that sees no key has output zero, `lse = −∞`, and contributes
//! nothing: its `dq` row is zero and it adds nothing to `dk`/`dv`.
//!
//! **Positions.** Query row `r` is at position `r` and key `j` at position `j` (a whole sequence,
//! or cross-attention over a memory, as training runs them; the inference kernel's `q_pos0` for a
//! cached decode is not needed).
//!
//! **Dropout on the probabilities** ([`ProbDropout`], `attn_pdrop` / BERT's
//! `attention_probs_dropout_prob`): `O = (P ∘ M)·V` with `M_ij ∈ {0, 1/(1−p)}` drawn from a counter
//! stream by (head, row, key), so the backward regenerates it instead of keeping a `rows × keys`
//! mask. The forward then runs its own blocked pass for `O` (the inference kernel has no dropout),
//! and the backward uses `P ∘ M` for `dV` and `dP = (dO·Vᵀ) ∘ M`; `D_i = dO_i·O_i` still equals
//! `Σ_j P_ij dP_ij`, so `dS = P ∘ (dP − D)` is unchanged.
//!
//! **Position bias.** An additive [`PositionBias`](crate::kernels::attention::PositionBias) (ALiBi,
//! T5's relative buckets) enters the recomputed scores as a constant. Its own gradient is **not**
//! computed: ALiBi's table is fixed, but T5's relative-bias table is a learned parameter, and its
//! gradient (`Σ dS` over the (row, key) pairs of each bucket, per head) is still missing, so a T5
//! model's bias table cannot be trained with this module yet.
//!
//! The backward is serial. Parallelising it over heads or blocks needs per-task `dk`/`dv`
//! accumulators (several blocks of query rows add into the same key rows).
//!
//! [`attention_backward_naive`] and [`attention_train_naive`] are the f64 reference twins (they
//! materialise each row's probabilities) that the property tests compare against.

use crate::kernels::attention::{attention_general, check_rows, HeadRows, Mask, Window};
use crate::kernels::exp_f32;
use crate::kernels::gemm::GemmIsa;
use crate::train::rng::Stream;
use crate::Result;

/// Dropout on attention probabilities: element (head `h`, query row `r`, key `j`) is kept, and
/// scaled by `1/(1−p)`, when the low 32 bits of `stream.bits(first + (h·len + r)·len + j)` are at
/// least `p·2³²` (as [`crate::train::dropout`] draws), else dropped. A pure function of its
/// indices, so forward and backward draw the same mask and no thread split changes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbDropout {
    stream: Stream,
    threshold: u32,
    scale: f32,
    first: u64,
    len: u64,
}

impl ProbDropout {
    /// Dropout with probability `p` from `stream`; `None` when `p` is 0 (nothing dropped), and
    /// [`Error::BadTrainOption`](crate::Error::BadTrainOption) outside `[0, 1)`.
    pub fn new(p: f32, stream: Stream) -> Result<Option<Self>> {
        let threshold = crate::train::dropout::threshold(p)?;
        let scale = crate::train::dropout::scale(p);
        Ok((p > 0.0).then_some(ProbDropout { stream, threshold, scale, first: 0, len: 0 }))
    }

    /// The draws of sequence `b` of a batch of `heads`-head attentions over sequences padded to
    /// `len`: disjoint index ranges per sequence.
    pub fn for_sequence(self, b: usize, heads: usize, len: usize) -> Self {
        let (len, per_sequence) = (len as u64, (heads * len * len) as u64);
        ProbDropout { first: b as u64 * per_sequence, len, ..self }
    }

    /// `1/(1−p)` if (h, r, j) is kept, else 0.
    #[inline(always)]
    pub fn factor(&self, h: usize, r: usize, j: usize) -> f32 {
        let index = self.first + (h as u64 * self.len + r as u64) * self.len + j as u64;
        if self.stream.bits(index) as u32 >= self.threshold {
            self.scale
        } else {
            0.0
        }
    }
}

/// Defines `$name` as a dispatcher to `$body` compiled for the best vector instruction set of this
/// CPU (AVX-512F, AVX2 + FMA, or the baseline), chosen at run time as the GEMM's is
/// ([`GemmIsa::detected`]). The bodies are plain Rust in `#[inline(always)]` functions: inside a
/// `#[target_feature]` shim LLVM vectorises their loops for that instruction set (without it the
/// baseline target is SSE2). Rust does not contract `a * b + c` into an FMA, so every path computes
/// the same values.
macro_rules! vector_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<const HD: usize>($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<const HD: usize>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512<const HD: usize>($($arg: $ty),*) {
                    $body::<HD>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2<const HD: usize>($($arg: $ty),*) {
                    $body::<HD>($($arg),*)
                }
                match GemmIsa::detected() {
                    // SAFETY: `detected` returns Avx512 only when the CPU has AVX-512F, AVX2 and FMA.
                    GemmIsa::Avx512 => return unsafe { avx512::<HD>($($arg),*) },
                    // SAFETY: `detected` returns Avx2Fma only when the CPU has AVX2 and FMA.
                    GemmIsa::Avx2Fma => return unsafe { avx2::<HD>($($arg),*) },
                    GemmIsa::Portable => {}
                }
            }
            $body::<HD>($($arg),*)
        }
    };
}

/// Query rows per block of the backward and of the log-sum-exp pass.
pub const Q_BLOCK: usize = 16;
/// Keys per tile of the backward and of the log-sum-exp pass.
pub const KEY_TILE: usize = 32;

/// Floats of the `scratch` that [`attention_backward`] needs for head width `head_dim`: one
/// `Q_BLOCK × KEY_TILE` tile (the probabilities, then the score gradients) and one `Q_BLOCK`
/// column (the rows' `D`). Independent of the sequence length; `head_dim` is part of the contract
/// so that a later blocked `dQ` accumulator can grow it without changing callers.
pub const fn attention_backward_scratch_len(head_dim: usize) -> usize {
    let _ = head_dim;
    Q_BLOCK * KEY_TILE + Q_BLOCK
}

/// The training forward: [`attention_general`] (positions from 0) into `out`, plus each query
/// row's log-sum-exp per head into `lse` for [`attention_backward`].
///
/// `lse[r·heads + h] = ln Σ_j exp(q·k_j·scale + bias(h, r, j))` over the keys `j` that row `r`
/// sees (`−∞` when it sees none). `out` comes from the optimized inference kernel, so training
/// and inference agree exactly; `lse` from a separate blocked pass over the scores (the same
/// score code as the backward's recomputation, which keeps `exp(S − lse)` normalised in the
/// backward's own arithmetic). The extra pass costs one `Q·Kᵀ` on top of the forward. Nothing is
/// allocated (the pass's score tile is on the stack).
///
/// With `dropout`, `out` is `(P ∘ M)·V` from a blocked pass of its own after the log-sum-exp
/// (see the module documentation).
///
/// `out` is `[q.rows, heads·HD]` and `lse` `[q.rows, heads]`, contiguous; the rest as in
/// [`attention_general`] with `q_pos0 = 0`. Panics on inconsistent shapes (caller bugs).
#[allow(clippy::too_many_arguments)]
pub fn attention_train<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    mask: Mask<'_>,
    scale: f32,
    dropout: Option<ProbDropout>,
    out: &mut [f32],
    lse: &mut [f32],
) {
    check::<HD>(&q, &k, &v, heads, kv_heads, &mask);
    check_len("out", out.len(), q.rows * heads * HD);
    check_len("lse", lse.len(), q.rows * heads);
    log_sum_exp::<HD>(q, k, heads, kv_heads, &mask, scale, lse);
    match dropout {
        None => attention_general::<HD>(q, k, v, heads, kv_heads, 0, mask, scale, out),
        Some(dropout) => dropped_output::<HD>(q, k, v, heads, kv_heads, &mask, scale, lse, dropout, out),
    }
}

vector_dispatch! {
    /// `out = (P ∘ M)·V` per (head, block of rows), `P = exp(S − lse)` recomputed per key tile.
    fn dropped_output<const HD: usize>(
        q: HeadRows<'_>,
        k: HeadRows<'_>,
        v: HeadRows<'_>,
        heads: usize,
        kv_heads: usize,
        mask: &Mask<'_>,
        scale: f32,
        lse: &[f32],
        dropout: ProbDropout,
        out: &mut [f32],
    ) => dropped_output_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dropped_output_body<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    mask: &Mask<'_>,
    scale: f32,
    lse: &[f32],
    dropout: ProbDropout,
    out: &mut [f32],
) {
    out.fill(0.0);
    let (group, width) = (heads / kv_heads, heads * HD);
    let mut s = [0.0f32; Q_BLOCK * KEY_TILE];
    for h in 0..heads {
        let kvh = h / group;
        for r0 in (0..q.rows).step_by(Q_BLOCK) {
            let nq = Q_BLOCK.min(q.rows - r0);
            let (lo, hi) = key_range(mask, r0, nq, k.rows);
            for t0 in (lo..hi).step_by(KEY_TILE) {
                let t1 = hi.min(t0 + KEY_TILE);
                if !tile_scores::<HD>(&q, &k, h, kvh, mask, scale, r0, nq, t0, t1, &mut s) {
                    continue;
                }
                for i in 0..nq {
                    let row_lse = lse[(r0 + i) * heads + h];
                    let o = vec_at_mut::<HD>(out, (r0 + i) * width + h * HD);
                    for (c, &score) in s[i * KEY_TILE..][..t1 - t0].iter().enumerate() {
                        if score == f32::NEG_INFINITY {
                            continue;
                        }
                        let p = exp_f32(score - row_lse) * dropout.factor(h, r0 + i, t0 + c);
                        if p != 0.0 {
                            axpy::<HD>(p, vec_at::<HD>(v.data, (t0 + c) * v.stride + v.offset + kvh * HD), o);
                        }
                    }
                }
            }
        }
    }
}

vector_dispatch! {
    /// The blocked log-sum-exp pass of [`attention_train`]: per (head, block of rows), a running
    /// maximum and a running sum of `exp(s − max)` over the visible key tiles.
    fn log_sum_exp<const HD: usize>(
        q: HeadRows<'_>,
        k: HeadRows<'_>,
        heads: usize,
        kv_heads: usize,
        mask: &Mask<'_>,
        scale: f32,
        lse: &mut [f32],
    ) => log_sum_exp_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn log_sum_exp_body<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    mask: &Mask<'_>,
    scale: f32,
    lse: &mut [f32],
) {
    let group = heads / kv_heads;
    let mut s = [0.0f32; Q_BLOCK * KEY_TILE];
    for h in 0..heads {
        for r0 in (0..q.rows).step_by(Q_BLOCK) {
            let nq = Q_BLOCK.min(q.rows - r0);
            let mut max = [f32::NEG_INFINITY; Q_BLOCK];
            let mut sum = [0.0f32; Q_BLOCK];
            let (lo, hi) = key_range(mask, r0, nq, k.rows);
            for t0 in (lo..hi).step_by(KEY_TILE) {
                let t1 = hi.min(t0 + KEY_TILE);
                if !tile_scores::<HD>(&q, &k, h, h / group, mask, scale, r0, nq, t0, t1, &mut s) {
                    continue;
                }
                for i in 0..nq {
                    let row = &s[i * KEY_TILE..][..t1 - t0];
                    let tile_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if tile_max == f32::NEG_INFINITY {
                        continue;
                    }
                    let new_max = max[i].max(tile_max);
                    let tile_sum: f32 = row.iter().map(|&x| exp_f32(x - new_max)).sum();
                    // `max[i]` is −∞ before the row's first visible key: its sum is then 0.
                    let rescale = if max[i] == f32::NEG_INFINITY { 0.0 } else { exp_f32(max[i] - new_max) };
                    sum[i] = sum[i] * rescale + tile_sum;
                    max[i] = new_max;
                }
            }
            for i in 0..nq {
                lse[(r0 + i) * heads + h] =
                    if sum[i] > 0.0 { max[i] + sum[i].ln() } else { f32::NEG_INFINITY };
            }
        }
    }
}

vector_dispatch! {
    /// Gradients of multi-head scaled-dot-product attention: from the upstream gradient `d_out` and
    /// what [`attention_train`] saved (`out`, `lse`), writes `dq` and, summed over each key/value
    /// head's query heads, `dk` and `dv` (see the module documentation for the formulas, layouts and
    /// conventions: all three are zeroed first, then accumulated).
    ///
    /// `q`, `k`, `v`, `heads`, `kv_heads`, `mask` and `scale` must be those of the forward. `out`,
    /// `d_out` and `dq` are `[q.rows, heads·HD]`, `dk` and `dv` `[k.rows, kv_heads·HD]`, `lse`
    /// `[q.rows, heads]`, all contiguous row-major; `scratch` has at least
    /// [`attention_backward_scratch_len`]`(HD)` floats (its contents on entry do not matter).
    /// Nothing is allocated. The position bias is a constant here (its gradient is not computed).
    /// `dropout` must be the forward's. Panics on inconsistent shapes (caller bugs).
    pub fn attention_backward<const HD: usize>(
        q: HeadRows<'_>,
        k: HeadRows<'_>,
        v: HeadRows<'_>,
        out: &[f32],
        d_out: &[f32],
        lse: &[f32],
        heads: usize,
        kv_heads: usize,
        mask: Mask<'_>,
        scale: f32,
        dropout: Option<ProbDropout>,
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        scratch: &mut [f32],
    ) => attention_backward_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_backward_body<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    out: &[f32],
    d_out: &[f32],
    lse: &[f32],
    heads: usize,
    kv_heads: usize,
    mask: Mask<'_>,
    scale: f32,
    dropout: Option<ProbDropout>,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: &mut [f32],
) {
    check::<HD>(&q, &k, &v, heads, kv_heads, &mask);
    let width = heads * HD;
    let kv_width = kv_heads * HD;
    check_len("out", out.len(), q.rows * width);
    check_len("d_out", d_out.len(), q.rows * width);
    check_len("lse", lse.len(), q.rows * heads);
    check_len("dq", dq.len(), q.rows * width);
    check_len("dk", dk.len(), k.rows * kv_width);
    check_len("dv", dv.len(), k.rows * kv_width);
    let needed = attention_backward_scratch_len(HD);
    assert!(
        scratch.len() >= needed,
        "attention backward: scratch has {} floats, needs attention_backward_scratch_len({HD}) = {needed}",
        scratch.len()
    );

    dq.fill(0.0);
    dk.fill(0.0);
    dv.fill(0.0);
    let (s, rest) = scratch.split_at_mut(Q_BLOCK * KEY_TILE);
    let d_row = &mut rest[..Q_BLOCK];
    let group = heads / kv_heads;
    let mut m_tile = [1.0f32; Q_BLOCK * KEY_TILE];

    for h in 0..heads {
        let kvh = h / group;
        for r0 in (0..q.rows).step_by(Q_BLOCK) {
            let nq = Q_BLOCK.min(q.rows - r0);
            // D_i = dO_i · O_i, once per block.
            for i in 0..nq {
                let at = (r0 + i) * width + h * HD;
                d_row[i] = dot::<HD>(vec_at::<HD>(d_out, at), vec_at::<HD>(out, at));
            }
            let (lo, hi) = key_range(&mask, r0, nq, k.rows);
            for t0 in (lo..hi).step_by(KEY_TILE) {
                let t1 = hi.min(t0 + KEY_TILE);
                let nk = t1 - t0;
                if !tile_scores::<HD>(&q, &k, h, kvh, &mask, scale, r0, nq, t0, t1, s) {
                    continue;
                }
                // P = exp(S − lse); 0 on the keys a row does not see (score −∞).
                for i in 0..nq {
                    let row_lse = lse[(r0 + i) * heads + h];
                    for p in &mut s[i * KEY_TILE..][..nk] {
                        *p = if *p == f32::NEG_INFINITY { 0.0 } else { exp_f32(*p - row_lse) };
                    }
                }
                // The mask's factors M_ij of this tile (all 1 without dropout).
                if let Some(dropout) = dropout {
                    for i in 0..nq {
                        for (c, m) in m_tile[i * KEY_TILE..][..nk].iter_mut().enumerate() {
                            *m = dropout.factor(h, r0 + i, t0 + c);
                        }
                    }
                }
                // dV_j += Σ_i P_ij M_ij dO_i.
                for c in 0..nk {
                    let dv_row = vec_at_mut::<HD>(dv, (t0 + c) * kv_width + kvh * HD);
                    for i in 0..nq {
                        let p = s[i * KEY_TILE + c] * m_tile[i * KEY_TILE + c];
                        if p != 0.0 {
                            axpy::<HD>(p, vec_at::<HD>(d_out, (r0 + i) * width + h * HD), dv_row);
                        }
                    }
                }
                // dS_ij = P_ij (M_ij dO_i · V_j − D_i), times `scale` for both products below.
                let vt = transposed_tile::<HD>(&v, kvh, t0, nk);
                for i in 0..nq {
                    let dp = row_times_tile::<HD>(vec_at::<HD>(d_out, (r0 + i) * width + h * HD), &vt);
                    let m_row = &m_tile[i * KEY_TILE..][..nk];
                    for ((p, &dp), &m) in s[i * KEY_TILE..][..nk].iter_mut().zip(&dp).zip(m_row) {
                        if *p != 0.0 {
                            *p *= (dp * m - d_row[i]) * scale;
                        }
                    }
                }
                // dQ_i += scale Σ_j dS_ij K_j.
                for i in 0..nq {
                    let dq_row = vec_at_mut::<HD>(dq, (r0 + i) * width + h * HD);
                    for c in 0..nk {
                        let ds = s[i * KEY_TILE + c];
                        if ds != 0.0 {
                            axpy::<HD>(
                                ds,
                                vec_at::<HD>(k.data, (t0 + c) * k.stride + k.offset + kvh * HD),
                                dq_row,
                            );
                        }
                    }
                }
                // dK_j += scale Σ_i dS_ij Q_i.
                for c in 0..nk {
                    let dk_row = vec_at_mut::<HD>(dk, (t0 + c) * kv_width + kvh * HD);
                    for i in 0..nq {
                        let ds = s[i * KEY_TILE + c];
                        if ds != 0.0 {
                            axpy::<HD>(
                                ds,
                                vec_at::<HD>(q.data, (r0 + i) * q.stride + q.offset + h * HD),
                                dk_row,
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The keys `lo..hi` that some row of the block `r0..r0 + nq` may see under the causal limit and
/// the window (padding aside): from the first row's window start to the last row's end.
#[inline(always)]
fn key_range(mask: &Mask<'_>, r0: usize, nq: usize, keys: usize) -> (usize, usize) {
    let last = r0 + nq - 1;
    let lo = match mask.window_kind() {
        None => 0,
        Some(Window::Trailing(w)) => (r0 + 1).saturating_sub(w),
        Some(Window::Centred(w)) => r0.saturating_sub(w / 2),
    };
    let hi = match mask.window_kind() {
        _ if mask.causal => last + 1,
        Some(Window::Centred(w)) => last.saturating_add(w / 2).saturating_add(1),
        _ => keys,
    };
    (lo.min(keys), hi.min(keys))
}

/// Scores of rows `r0..r0 + nq` of head `h` against keys `t0..t1` (of key/value head `kvh`) into
/// `s[i·KEY_TILE + c]`: `q·k·scale + bias`, or `−∞` where the row does not see the key. Returns
/// whether any pair is visible.
#[inline(always)]
fn tile_scores<const HD: usize>(
    q: &HeadRows<'_>,
    k: &HeadRows<'_>,
    h: usize,
    kvh: usize,
    mask: &Mask<'_>,
    scale: f32,
    r0: usize,
    nq: usize,
    t0: usize,
    t1: usize,
    s: &mut [f32],
) -> bool {
    let mut any = false;
    let kt = transposed_tile::<HD>(k, kvh, t0, t1 - t0);
    for i in 0..nq {
        let pos = r0 + i;
        let qk = row_times_tile::<HD>(vec_at::<HD>(q.data, pos * q.stride + q.offset + h * HD), &kt);
        let row = &mut s[i * KEY_TILE..][..t1 - t0];
        for (c, (x, &qk)) in row.iter_mut().zip(&qk).enumerate() {
            let j = t0 + c;
            *x = if mask.sees(pos, j) {
                any = true;
                qk * scale + mask.bias.map_or(0.0, |b| b.at(h, pos, j))
            } else {
                f32::NEG_INFINITY
            };
        }
    }
    any
}

/// Rows `t0..t0 + nk` of head `head` of `rows`, transposed: `[HD][KEY_TILE]`, zeros past `nk`. A
/// row's products with every key of the tile are then [`row_times_tile`]'s loop over contiguous
/// keys, which vectorises (a dot product per key would be a sequential sum).
#[inline(always)]
fn transposed_tile<const HD: usize>(
    rows: &HeadRows<'_>,
    head: usize,
    t0: usize,
    nk: usize,
) -> [[f32; KEY_TILE]; HD] {
    let mut tile = [[0.0f32; KEY_TILE]; HD];
    for c in 0..nk {
        let row = vec_at::<HD>(rows.data, (t0 + c) * rows.stride + rows.offset + head * HD);
        for (d, &x) in row.iter().enumerate() {
            tile[d][c] = x;
        }
    }
    tile
}

/// `x · row_c` for every row `c` of a [`transposed_tile`]: `Σ_d x_d · tile[d]`, key by key.
#[inline(always)]
fn row_times_tile<const HD: usize>(x: &[f32; HD], tile: &[[f32; KEY_TILE]; HD]) -> [f32; KEY_TILE] {
    let mut out = [0.0f32; KEY_TILE];
    for (&xd, keys) in x.iter().zip(tile) {
        for (o, &k) in out.iter_mut().zip(keys) {
            *o += xd * k;
        }
    }
    out
}

#[inline(always)]
fn vec_at<const HD: usize>(xs: &[f32], at: usize) -> &[f32; HD] {
    xs[at..at + HD].try_into().expect("a slice of HD floats")
}

#[inline(always)]
fn vec_at_mut<const HD: usize>(xs: &mut [f32], at: usize) -> &mut [f32; HD] {
    (&mut xs[at..at + HD]).try_into().expect("a slice of HD floats")
}

/// `a · b` over eight independent partial sums: a single running sum is a chain the compiler
/// may not reorder (float addition is not associative), so it stays scalar; eight lanes let it
/// become vector multiplies and adds (SSE2 in the portable build). The lanes are added pairwise
/// at the end.
#[inline(always)]
fn dot<const HD: usize>(a: &[f32; HD], b: &[f32; HD]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
    ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) + tail
}

/// `y += a·x`.
#[inline(always)]
fn axpy<const HD: usize>(a: f32, x: &[f32; HD], y: &mut [f32; HD]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// The shape contract shared by every function here (caller bugs panic with a message).
fn check<const HD: usize>(
    q: &HeadRows<'_>,
    k: &HeadRows<'_>,
    v: &HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    mask: &Mask<'_>,
) {
    assert!(HD > 0, "attention backward: head dimension HD must be positive");
    assert!(heads > 0, "attention backward: heads must be positive");
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "attention backward: kv_heads = {kv_heads} does not divide heads = {heads}"
    );
    let width = heads.checked_mul(HD).expect("attention backward: heads × HD overflows usize");
    assert!(q.rows.checked_mul(width).is_some(), "attention backward: rows × heads·HD overflows usize");
    assert_eq!(k.rows, v.rows, "attention backward: {} key rows but {} value rows", k.rows, v.rows);
    check_rows("q", q, width);
    check_rows("k", k, kv_heads * HD);
    check_rows("v", v, kv_heads * HD);
    if let Some(valid) = mask.key_valid {
        assert_eq!(
            valid.len(),
            k.rows,
            "attention backward: key_valid has {} flags but there are {} keys",
            valid.len(),
            k.rows
        );
    }
    if let Some(bias) = &mask.bias {
        let needed = heads.checked_mul(bias.span).expect("attention backward: heads × span overflows usize");
        assert!(
            needed <= bias.table.len(),
            "attention backward: position bias table has {} floats, fewer than heads × span = {heads} × {}",
            bias.table.len(),
            bias.span
        );
        // Offsets key − query run from −(q.rows − 1) to k.rows − 1.
        if q.rows > 0 && k.rows > 0 {
            assert!(
                bias.center >= q.rows - 1 && bias.center < bias.span && bias.span - bias.center >= k.rows,
                "attention backward: position bias (span {}, center {}) does not cover the offsets \
                 −{}..={} of {} queries × {} keys",
                bias.span,
                bias.center,
                q.rows - 1,
                k.rows - 1,
                q.rows,
                k.rows
            );
        }
    }
}

fn check_len(what: &str, len: usize, expected: usize) {
    assert_eq!(len, expected, "attention backward: {what} has {len} floats, expected {expected}");
}

/// One (row, head) of the f64 reference: the visible keys, their probabilities and the output.
/// Also returns each visible key's dropout factor (1 without dropout); the output is
/// `Σ p·factor·v`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn naive_row<const HD: usize>(
    q: &HeadRows<'_>,
    k: &HeadRows<'_>,
    v: &HeadRows<'_>,
    r: usize,
    h: usize,
    kvh: usize,
    mask: &Mask<'_>,
    scale: f32,
    dropout: Option<ProbDropout>,
) -> (Vec<usize>, Vec<f64>, Vec<f64>, [f64; HD], f64) {
    let visible: Vec<usize> = (0..k.rows).filter(|&j| mask.sees(r, j)).collect();
    let qv = vec_at::<HD>(q.data, r * q.stride + q.offset + h * HD);
    let scores: Vec<f64> = visible
        .iter()
        .map(|&j| {
            let kv = vec_at::<HD>(k.data, j * k.stride + k.offset + kvh * HD);
            let qk: f64 = qv.iter().zip(kv).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            qk * f64::from(scale) + mask.bias.map_or(0.0, |b| f64::from(b.at(h, r, j)))
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    let probs: Vec<f64> = scores.iter().map(|s| (s - max).exp() / sum).collect();
    let factors: Vec<f64> =
        visible.iter().map(|&j| dropout.map_or(1.0, |d| f64::from(d.factor(h, r, j)))).collect();
    let mut o = [0.0f64; HD];
    for ((&p, &m), &j) in probs.iter().zip(&factors).zip(&visible) {
        let vv = vec_at::<HD>(v.data, j * v.stride + v.offset + kvh * HD);
        for (o, &x) in o.iter_mut().zip(vv) {
            *o += p * m * f64::from(x);
        }
    }
    let lse = if visible.is_empty() { f64::NEG_INFINITY } else { max + sum.ln() };
    (visible, probs, factors, o, lse)
}

/// Reference twin of [`attention_train`]: each row's probabilities materialised, in f64. Allocates;
/// for tests only.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn attention_train_naive<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    heads: usize,
    kv_heads: usize,
    mask: Mask<'_>,
    scale: f32,
    dropout: Option<ProbDropout>,
    out: &mut [f32],
    lse: &mut [f32],
) {
    check::<HD>(&q, &k, &v, heads, kv_heads, &mask);
    check_len("out", out.len(), q.rows * heads * HD);
    check_len("lse", lse.len(), q.rows * heads);
    let group = heads / kv_heads;
    for r in 0..q.rows {
        for h in 0..heads {
            let (_, _, _, o, row_lse) = naive_row::<HD>(&q, &k, &v, r, h, h / group, &mask, scale, dropout);
            for (dst, x) in out[(r * heads + h) * HD..][..HD].iter_mut().zip(o) {
                *dst = x as f32;
            }
            lse[r * heads + h] = row_lse as f32;
        }
    }
}

/// Reference twin of [`attention_backward`]: recomputes the forward in f64 per (row, head) with
/// the probabilities materialised, then `dV += p·m·dO`, `dS = p (m·dO·V − dO·O)`, `dQ += scale·dS·K`,
/// `dK += scale·dS·Q` in f64. Needs no saved state; writes `dq`, `dk`, `dv` (same layouts). Allocates;
/// for tests only.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_naive<const HD: usize>(
    q: HeadRows<'_>,
    k: HeadRows<'_>,
    v: HeadRows<'_>,
    d_out: &[f32],
    heads: usize,
    kv_heads: usize,
    mask: Mask<'_>,
    scale: f32,
    dropout: Option<ProbDropout>,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    check::<HD>(&q, &k, &v, heads, kv_heads, &mask);
    let (width, kv_width) = (heads * HD, kv_heads * HD);
    check_len("d_out", d_out.len(), q.rows * width);
    check_len("dq", dq.len(), q.rows * width);
    check_len("dk", dk.len(), k.rows * kv_width);
    check_len("dv", dv.len(), k.rows * kv_width);
    let group = heads / kv_heads;
    let scale64 = f64::from(scale);
    let mut dq64 = vec![0.0f64; dq.len()];
    let mut dk64 = vec![0.0f64; dk.len()];
    let mut dv64 = vec![0.0f64; dv.len()];
    for r in 0..q.rows {
        for h in 0..heads {
            let kvh = h / group;
            let (visible, probs, factors, o, _) =
                naive_row::<HD>(&q, &k, &v, r, h, kvh, &mask, scale, dropout);
            let d_o = vec_at::<HD>(d_out, r * width + h * HD).map(f64::from);
            let qv = vec_at::<HD>(q.data, r * q.stride + q.offset + h * HD).map(f64::from);
            let d: f64 = d_o.iter().zip(&o).map(|(a, b)| a * b).sum();
            for ((&p, &m), &j) in probs.iter().zip(&factors).zip(&visible) {
                let kv = vec_at::<HD>(k.data, j * k.stride + k.offset + kvh * HD).map(f64::from);
                let vv = vec_at::<HD>(v.data, j * v.stride + v.offset + kvh * HD).map(f64::from);
                let dp: f64 = d_o.iter().zip(&vv).map(|(a, b)| a * b).sum();
                let ds = p * (m * dp - d) * scale64;
                for x in 0..HD {
                    dv64[j * kv_width + kvh * HD + x] += p * m * d_o[x];
                    dq64[r * width + h * HD + x] += ds * kv[x];
                    dk64[j * kv_width + kvh * HD + x] += ds * qv[x];
                }
            }
        }
    }
    for (dst, src) in [(dq, dq64), (dk, dk64), (dv, dv64)] {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s as f32;
        }
    }
}
