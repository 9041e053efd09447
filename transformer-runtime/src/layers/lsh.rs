//! Reformer (Kitaev et al. 2020) building blocks over a padded batch, matching Hugging Face
//! `ReformerModelWithLMHead` / `ReformerForMaskedLM` (transformers 4.57.1) in eval mode:
//!
//! - [`lsh_self_attention`]: LSH attention given the layer's random rotations (HF draws them with
//!   `torch.randn` in every forward, so they are an input here, not a weight), and
//!   [`lsh_self_attention_buckets`], the buckets it hashes every position to;
//! - [`local_self_attention`]: chunked attention to the own and neighbouring chunks;
//! - [`AxialPositions`]: factorised learned positions;
//! - [`reversible_layer`] and [`concat_streams`]: the reversible residual composition
//!   `Y1 = X1 + f(X2)`, `Y2 = X2 + g(Y1)` and the `[Y1 | Y2]` rows (2·hidden wide) the final
//!   LayerNorm and the LM head read;
//! - [`padded_length`]: the length HF pads a sequence to before any of this runs.
//!
//! The per-head work (hashing, sorting, chunked attention, the rounds' combination, HF's mask
//! values and float32 logsumexps) is in [`kernels::lsh`](crate::kernels::lsh).

use crate::kernels::lsh::{local_attention, lsh_attention, lsh_buckets, LshScratch};
use crate::{Batch, Threads, WeightLoader};

pub use crate::kernels::lsh::{LocalShape, LshShape, MASK_VALUE, SELF_MASK_VALUE};

/// The length HF runs a sequence of `seq` tokens at (`ReformerModel._pad_to_mult_of_chunk_length`,
/// eval only): the next multiple of the least common multiple of `chunk_lengths` when `seq` is
/// not a multiple of it and longer than the smallest of them, else `seq`.
///
/// `chunk_lengths` holds the chunk length of each attention kind the model has: `[lsh]`,
/// `[local]` or `[lsh, local]` (`lsh_attn_chunk_length`, `local_attn_chunk_length`). The padding
/// is `pad_token_id` with attention mask 0 and positions continuing the sequence's; it changes how
/// the real tokens are chunked, so a model must pad exactly like this to match HF.
///
/// # Panics
///
/// If `chunk_lengths` is empty or holds a zero.
pub fn padded_length(seq: usize, chunk_lengths: &[usize]) -> usize {
    assert!(
        !chunk_lengths.is_empty() && !chunk_lengths.contains(&0),
        "padded_length: chunk lengths must be positive, got {chunk_lengths:?}"
    );
    let lcm = chunk_lengths.iter().fold(1, |acc, &c| acc / gcd(acc, c) * c);
    let min = chunk_lengths.iter().copied().min().unwrap_or(1);
    if !seq.is_multiple_of(lcm) && seq > min {
        seq.next_multiple_of(lcm)
    } else {
        seq
    }
}

/// `batch` padded on the right to `seq` positions as HF pads it before running a Reformer: pad
/// token 0 with mask 0 (attention never reads it: masked keys score [`MASK_VALUE`] and padding
/// hashes to a bucket of its own), the real tokens and mask unchanged, positions from 0. Token
/// types are dropped (a Reformer has none; generated models reject them before padding).
/// [`LshWorkspace::pad`] does the same without allocating.
///
/// # Panics
///
/// If `seq < batch.seq_len()` (a caller bug: [`padded_length`] never shortens).
pub fn pad_batch(batch: &Batch, seq: usize) -> Batch {
    assert!(seq >= batch.seq_len(), "pad_batch: cannot pad {} positions to {seq}", batch.seq_len());
    batch.right_padded(seq, None)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One head of a sequence's rows (rows of `stride` floats, the head at column `offset`), gathered
/// into `out` as rows of `HD` (no allocation once `out` has grown to them).
fn gather_head<'o, const HD: usize>(
    data: &[f32],
    stride: usize,
    offset: usize,
    out: &'o mut Vec<f32>,
) -> &'o [[f32; HD]] {
    out.clear();
    for row in data.chunks_exact(stride) {
        out.extend_from_slice(&row[offset..offset + HD]);
    }
    out.as_chunks::<HD>().0
}

/// Reusable working memory of [`lsh_self_attention_in`] and [`local_self_attention_in`]: one
/// scratch per (sequence, head) task, the heads' outputs before they are interleaved, and a padded
/// batch's storage. It only grows, so after the first call at a batch shape (or a smaller one) the
/// attention allocates nothing.
#[derive(Debug, Default)]
pub struct LshWorkspace {
    tasks: Vec<HeadTask>,
    /// `[batch, heads, seq, HD]`.
    by_head: Vec<f32>,
    /// The storage of the last padded batch ([`Self::pad`], [`Self::recycle`]).
    padded: Option<Batch>,
}

/// The [`LshWorkspace`]s a model keeps, one per concurrent caller (like
/// [`WorkspacePool`](crate::workspace::WorkspacePool)).
#[derive(Debug, Default)]
pub struct LshWorkspacePool {
    free: std::sync::Mutex<Vec<LshWorkspace>>,
}

impl LshWorkspacePool {
    /// A workspace from the pool, or a new one.
    pub fn take(&self) -> LshWorkspace {
        // Workspaces hold no state between calls that a panic could leave half-valid, so a
        // poisoned lock is still usable.
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    /// Returns a workspace for later calls.
    pub fn put(&self, workspace: LshWorkspace) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(workspace);
    }
}

/// One (sequence, head)'s gathered rows and kernel scratch.
#[derive(Debug, Default)]
struct HeadTask {
    scratch: LshScratch,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl LshWorkspace {
    /// [`pad_batch`] in the storage of the batch last given back with [`Self::recycle`].
    ///
    /// # Panics
    ///
    /// If `seq < batch.seq_len()`.
    pub fn pad(&mut self, batch: &Batch, seq: usize) -> Batch {
        assert!(seq >= batch.seq_len(), "pad: cannot pad {} positions to {seq}", batch.seq_len());
        batch.right_padded(seq, self.padded.take())
    }

    /// Keeps a batch from [`Self::pad`] for the next call to reuse.
    pub fn recycle(&mut self, padded: Batch) {
        self.padded = Some(padded);
    }

    /// Runs `head(b, h, task, out_h)` for every (sequence `b`, head `h`) in parallel, each
    /// filling `seq` rows of `HD`, then interleaves the heads into `ctx`'s rows of `heads·HD`.
    fn per_head<const HD: usize>(
        &mut self,
        ctx: &mut [f32],
        batch: &Batch,
        heads: usize,
        threads: &Threads,
        head: impl Fn(usize, usize, &mut HeadTask, &mut [[f32; HD]]) + Send + Sync,
    ) {
        let (seq, width, n) = (batch.seq_len(), heads * HD, batch.batch_size() * heads);
        if self.tasks.len() < n {
            self.tasks.resize_with(n, HeadTask::default);
        }
        if self.by_head.len() < n * seq * HD {
            self.by_head.resize(n * seq * HD, 0.0);
        }
        let by_head = &mut self.by_head[..n * seq * HD];
        threads.for_each_chunk_pair(by_head, seq * HD, &mut self.tasks[..n], 1, |i, out, task| {
            head(i / heads, i % heads, &mut task[0], out.as_chunks_mut::<HD>().0);
        });
        for (i, rows) in by_head.chunks_exact(seq * HD).enumerate() {
            let (b, h) = (i / heads, i % heads);
            let ctx_seq = &mut ctx[b * seq * width..(b + 1) * seq * width];
            for (ctx_row, row) in ctx_seq.chunks_exact_mut(width).zip(rows.chunks_exact(HD)) {
                ctx_row[h * HD..(h + 1) * HD].copy_from_slice(row);
            }
        }
    }
}

/// Checks the buffers of an attention call: `qkv` of `rows × stride`, `ctx` of `rows × width`.
fn check_buffers(what: &str, qkv: &[f32], stride: usize, ctx_len: usize, width: usize, batch: &Batch) {
    assert_eq!(qkv.len(), batch.rows() * stride, "{what}: projection buffer does not fit the batch");
    assert_eq!(ctx_len, batch.rows() * width, "{what}: context buffer does not fit the batch");
}

/// LSH self-attention (HF `LSHSelfAttention`, eval, no cache) over a padded batch.
///
/// `qkv` holds `batch.rows()` rows of `[QK (heads·HD) | V (heads·HD)]`: the shared query/key
/// projection (`self_attention.query_key`) and the value projection (`self_attention.value`),
/// as one fused `Linear` writes them. `rotations` are this layer's `[heads, HD, hashes,
/// buckets / 2]` floats ([`LshShape::rotations_shape`]), the tensor HF's `_hash_vectors` draws.
/// `ctx` receives `batch.rows()` rows of `heads·HD` (before `attention.output.dense`), every
/// row computed as HF computes it, padding rows included. The mask is `batch.mask_of(b)`;
/// positions are indices in the batch row. `batch.seq_len()` must be at most `shape.chunk` or a
/// multiple of it: pad the input as HF does ([`padded_length`]).
///
/// Sequences and heads run in parallel. Allocates its working memory (`O(hashes · seq · HD)` per
/// head) on every call; [`lsh_self_attention_in`] reuses it.
///
/// # Panics
///
/// On buffer sizes that do not fit the batch, rotations of the wrong length, an unusable `shape`
/// ([`LshShape::check`]) or an unpadded sequence length (caller bugs).
pub fn lsh_self_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: LshShape,
    rotations: &[f32],
    ctx: &mut [f32],
    threads: &Threads,
) {
    lsh_self_attention_in::<HD>(qkv, batch, shape, rotations, ctx, threads, &mut LshWorkspace::default());
}

/// [`lsh_self_attention`] with its working memory in `workspace` (nothing allocated once it has
/// grown to the batch shape). Sequences and heads run in parallel; the results do not depend on
/// the thread count.
///
/// # Panics
///
/// As [`lsh_self_attention`].
pub fn lsh_self_attention_in<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: LshShape,
    rotations: &[f32],
    ctx: &mut [f32],
    threads: &Threads,
    workspace: &mut LshWorkspace,
) {
    shape.check();
    let (seq, width) = (batch.seq_len(), shape.heads * HD);
    check_buffers("LSH attention", qkv, 2 * width, ctx.len(), width, batch);
    let per_head_rot = shape.rotations_len(HD) / shape.heads;
    assert_eq!(
        rotations.len(),
        shape.rotations_len(HD),
        "LSH attention: rotations have {} floats, expected {:?}",
        rotations.len(),
        shape.rotations_shape(HD)
    );
    workspace.per_head::<HD>(ctx, batch, shape.heads, threads, |b, h, task, out| {
        let qkv_seq = &qkv[b * seq * 2 * width..(b + 1) * seq * 2 * width];
        let HeadTask { scratch, q, v, .. } = task;
        let qk = gather_head::<HD>(qkv_seq, 2 * width, h * HD, q);
        let v = gather_head::<HD>(qkv_seq, 2 * width, width + h * HD, v);
        let rot = &rotations[h * per_head_rot..(h + 1) * per_head_rot];
        lsh_attention(qk, v, batch.mask_of(b), rot, &shape, scratch, out);
    });
}

/// The bucket of every (sequence, head, round, position) that [`lsh_self_attention`] hashes with
/// the same arguments: `out` is `[batch, heads, hashes, seq]` (HF's `buckets` layout without the
/// per-round offsets), each in `0..buckets`, or `buckets` for padding. (HF does not hash a
/// sequence of at most one chunk; this still computes its buckets.)
pub fn lsh_self_attention_buckets<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: LshShape,
    rotations: &[f32],
    out: &mut [u32],
) {
    shape.check();
    let (seq, width) = (batch.seq_len(), shape.heads * HD);
    assert_eq!(qkv.len(), batch.rows() * 2 * width, "LSH buckets: projection buffer does not fit the batch");
    assert_eq!(rotations.len(), shape.rotations_len(HD), "LSH buckets: rotations of the wrong length");
    assert_eq!(out.len(), batch.rows() * shape.heads * shape.hashes, "LSH buckets: output does not fit");
    let per_head_rot = shape.rotations_len(HD) / shape.heads;
    let mut gathered = Vec::with_capacity(seq * HD);
    for (b, out_seq) in out.chunks_exact_mut(shape.heads * shape.hashes * seq).enumerate() {
        let qkv_seq = &qkv[b * seq * 2 * width..(b + 1) * seq * 2 * width];
        for (h, out_head) in out_seq.chunks_exact_mut(shape.hashes * seq).enumerate() {
            let qk = gather_head::<HD>(qkv_seq, 2 * width, h * HD, &mut gathered);
            let rot = &rotations[h * per_head_rot..(h + 1) * per_head_rot];
            lsh_buckets(qk, batch.mask_of(b), rot, shape.hashes, shape.buckets, out_head);
        }
    }
}

/// Local self-attention (HF `LocalSelfAttention`, eval, no cache) over a padded batch.
///
/// `qkv` holds `batch.rows()` rows of `[Q | K | V]` (each `heads·HD`: `self_attention.query`,
/// `.key`, `.value`); `ctx` receives `batch.rows()` rows of `heads·HD`. Same length rule,
/// parallelism and panics as [`lsh_self_attention`].
pub fn local_self_attention<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: LocalShape,
    ctx: &mut [f32],
    threads: &Threads,
) {
    local_self_attention_in::<HD>(qkv, batch, shape, ctx, threads, &mut LshWorkspace::default());
}

/// [`local_self_attention`] with its working memory in `workspace`, as
/// [`lsh_self_attention_in`].
///
/// # Panics
///
/// As [`local_self_attention`].
pub fn local_self_attention_in<const HD: usize>(
    qkv: &[f32],
    batch: &Batch,
    shape: LocalShape,
    ctx: &mut [f32],
    threads: &Threads,
    workspace: &mut LshWorkspace,
) {
    shape.check();
    let (seq, width) = (batch.seq_len(), shape.heads * HD);
    check_buffers("local attention", qkv, 3 * width, ctx.len(), width, batch);
    workspace.per_head::<HD>(ctx, batch, shape.heads, threads, |b, h, task, out| {
        let qkv_seq = &qkv[b * seq * 3 * width..(b + 1) * seq * 3 * width];
        let HeadTask { scratch, q, k, v } = task;
        let q = gather_head::<HD>(qkv_seq, 3 * width, h * HD, q);
        let k = gather_head::<HD>(qkv_seq, 3 * width, width + h * HD, k);
        let v = gather_head::<HD>(qkv_seq, 3 * width, 2 * width + h * HD, v);
        local_attention(q, k, v, batch.mask_of(b), &shape, scratch, out);
    });
}

/// Reformer's axial position embeddings (HF `AxialPositionEmbeddings`, eval): position `p` is
/// `concat(weights.0[p / s1], weights.1[p % s1])` for `axial_pos_shape = [s0, s1]` and
/// `axial_pos_embds_dim = [d0, d1]`, `d0 + d1 = D`.
#[derive(Clone, Debug)]
pub struct AxialPositions<const D: usize> {
    shape: [usize; 2],
    first_dim: usize,
    /// `[s0, d0]`.
    first: Vec<f32>,
    /// `[s1, d1]`.
    second: Vec<f32>,
}

impl<const D: usize> AxialPositions<D> {
    /// Loads `{prefix}.weights.0` (`[s0, 1, d0]`) and `{prefix}.weights.1` (`[1, s1, d1]`), e.g.
    /// `prefix = "reformer.embeddings.position_embeddings"`.
    ///
    /// # Panics
    ///
    /// If `dims` do not add up to `D` (a bug in the caller, not in the file).
    pub fn load(loader: &mut WeightLoader, prefix: &str, shape: [usize; 2], dims: [usize; 2]) -> Self {
        assert_eq!(dims[0] + dims[1], D, "axial position dims {dims:?} must add up to {D}");
        let first = loader.take(&format!("{prefix}.weights.0"), &[shape[0], 1, dims[0]]);
        let second = loader.take(&format!("{prefix}.weights.1"), &[1, shape[1], dims[1]]);
        Self { shape, first_dim: dims[0], first, second }
    }

    /// Number of positions (`s0 · s1`).
    pub fn max_positions(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    /// `out += axial(position)`.
    ///
    /// # Panics
    ///
    /// If `position >= max_positions()` (validate the batch against it first).
    pub fn add_row(&self, position: usize, out: &mut [f32; D]) {
        assert!(
            position < self.max_positions(),
            "axial positions: position {position} outside the {}×{} table",
            self.shape[0],
            self.shape[1]
        );
        let (d0, d1) = (self.first_dim, D - self.first_dim);
        let (row, col) = (position / self.shape[1], position % self.shape[1]);
        let (head, tail) = out.split_at_mut(d0);
        for (o, w) in head.iter_mut().zip(&self.first[row * d0..(row + 1) * d0]) {
            *o += w;
        }
        for (o, w) in tail.iter_mut().zip(&self.second[col * d1..(col + 1) * d1]) {
            *o += w;
        }
    }
}

/// One reversible layer in eval (HF `ReformerLayer.forward`): `x1 += f(x2)`, then `x2 += g(x1)`,
/// in place. `f` is the attention sublayer (LayerNorm, attention, output projection), `g` the
/// feed-forward (LayerNorm, dense, activation, dense); each writes its output rows into the
/// second argument (`scratch`, as many rows as the streams).
///
/// The streams start as two copies of the embeddings (HF `torch.cat([h, h], -1)` split into
/// `hidden_states` = X2 and `attn_output` = X1).
pub fn reversible_layer<const D: usize>(
    x1: &mut [[f32; D]],
    x2: &mut [[f32; D]],
    scratch: &mut [[f32; D]],
    f: impl FnOnce(&[[f32; D]], &mut [[f32; D]]),
    g: impl FnOnce(&[[f32; D]], &mut [[f32; D]]),
) {
    assert!(x1.len() == x2.len() && x2.len() == scratch.len(), "reversible layer: row counts differ");
    f(x2, scratch);
    super::residual_add(x1, scratch);
    g(x1, scratch);
    super::residual_add(x2, scratch);
}

/// `out[i] = [y1[i] | y2[i]]`: the streams side by side (`W = 2·D`), as HF's
/// `torch.cat([attn_output, hidden_states], -1)` before the final LayerNorm over `2·hidden`.
pub fn concat_streams<const D: usize, const W: usize>(
    y1: &[[f32; D]],
    y2: &[[f32; D]],
    out: &mut [[f32; W]],
) {
    const { assert!(W == 2 * D, "concat_streams: W must be 2·D") };
    assert!(y1.len() == y2.len() && y2.len() == out.len(), "concat_streams: row counts differ");
    for ((o, a), b) in out.iter_mut().zip(y1).zip(y2) {
        let (left, right) = o.split_at_mut(D);
        left.copy_from_slice(a);
        right.copy_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_length_follows_hf() {
        // lsh 8 + local 8: multiples of 8 stay, longer ones round up, one chunk or less stays.
        assert_eq!(padded_length(27, &[8, 8]), 32);
        assert_eq!(padded_length(32, &[8]), 32);
        assert_eq!(padded_length(6, &[8]), 6);
        assert_eq!(padded_length(8, &[8]), 8);
        // lcm(8, 4) = 8; 5 > min(8, 4) = 4, so it pads (to 8) although 5 < 8.
        assert_eq!(padded_length(5, &[8, 4]), 8);
        assert_eq!(padded_length(4, &[8, 4]), 4);
        assert_eq!(padded_length(13, &[6, 4]), 24);
    }

    #[test]
    fn reversible_layer_is_the_revnet_recurrence() {
        let mut x1 = vec![[1.0f32, 2.0]; 3];
        let mut x2 = vec![[10.0f32, 20.0]; 3];
        let mut scratch = vec![[0.0f32; 2]; 3];
        let double = |x: &[[f32; 2]], out: &mut [[f32; 2]]| {
            for (o, r) in out.iter_mut().zip(x) {
                *o = r.map(|v| 2.0 * v);
            }
        };
        let negate = |x: &[[f32; 2]], out: &mut [[f32; 2]]| {
            for (o, r) in out.iter_mut().zip(x) {
                *o = r.map(|v| -v);
            }
        };
        reversible_layer(&mut x1, &mut x2, &mut scratch, double, negate);
        // y1 = x1 + 2·x2 = [21, 42]; y2 = x2 − y1 = [−11, −22].
        assert_eq!(x1[2], [21.0, 42.0]);
        assert_eq!(x2[2], [-11.0, -22.0]);
        let mut out = vec![[0.0f32; 4]; 3];
        concat_streams(&x1, &x2, &mut out);
        assert_eq!(out[0], [21.0, 42.0, -11.0, -22.0]);
    }
}
