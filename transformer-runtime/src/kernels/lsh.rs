//! Reformer's chunked attentions for one (sequence, head): LSH attention ([`lsh_attention`],
//! Kitaev et al. 2020) and local attention ([`local_attention`]), computed the way Hugging Face
//! `transformers` computes them (`models/reformer/modeling_reformer.py`, `LSHSelfAttention` and
//! `LocalSelfAttention`), with a literal twin of that code for the tests
//! ([`lsh_attention_naive`], [`local_attention_naive`]).
//!
//! **LSH attention.** Queries and keys share one projection `qk`. Each of `hashes` rounds hashes
//! every position with a random rotation `R` (`[head_dim, buckets/2]` per round): the bucket is
//! the argmax over `[x·R, −x·R]`, and padding gets an extra bucket of its own. Per round, positions
//! are stably sorted by bucket; the rounds' sorted lists, concatenated, are cut into chunks of
//! `chunk` slots, and each chunk attends to itself and `chunks_before` / `chunks_after` neighbour
//! chunks, *circularly over all rounds' chunks* (chunk 0 of round 1 sees the last chunk of round
//! 0, as HF's `_look_adjacent` wraps). Queries are the raw `qk`; keys are
//! `qk · rsqrt(mean(qk²) + 1e-6) / √head_dim`, and the scores `q·k` are not scaled again.
//!
//! **Masks, as values, not as skips.** A key hidden by padding or (causal) lying after the query
//! gets the score [`MASK_VALUE`] (−1e9); then every key slot at the query's own *position* gets
//! [`SELF_MASK_VALUE`] (−1e5) whatever its mask, so a query attends to itself only when nothing
//! else is visible. Each slot's query then has `lse = max + ln Σ exp(s − max)` and probabilities
//! `exp(s − lse)` (not renormalised), exactly as `torch.logsumexp` and `exp(dots − logits)`. The
//! rounds of a position are combined with weights `exp(lse_r − logsumexp_r(lse_r))`.
//!
//! **Why float32 matters near −1e5.** Both logsumexps are kept in f32 as HF keeps them. Where a
//! round saw only the query itself, `lse_r = −1e5 (+ ln copies)`, and f32's spacing there is 2⁻⁷,
//! so the combination weights of such a position sum to `1 − O(1e-3)` (position 0 of a causal
//! model with two rounds: 0.4989 each). Computing them in f64 would "fix" this and miss HF's
//! logits by ~1e-2; see `scripts/reference/reformer.py` (`f32_lse`).
//!
//! **Cost.** The optimised path hashes (`O(S·hashes·buckets·head_dim)`), counting-sorts each round
//! (stable, `O(S + buckets)`), gathers `qk`, normalised keys and values into slot order, and runs
//! every chunk against its window with the keys transposed (`[head_dim][window]`, so the score and
//! `p·v` loops are vertical multiply-adds), scattering each slot's output back to its position. No
//! `S×S` (or `S×window`) buffer exists: the working memory is `O(hashes·S·head_dim)` for the
//! gathered rows plus `O(window·head_dim)` per chunk, held in an [`LshScratch`] that can be reused.
//!
//! **Local attention** is the same chunk loop over positions in order (one round, no hashing, no
//! self mask), with separate query, key and value projections and keys divided by `√head_dim`.
//!
//! Sequences of at most `chunk` positions are not chunked (HF's `do_standard_self_attention`): all
//! positions attend to all, in one round and without hashing. Longer sequences must be a multiple
//! of `chunk` (HF pads the input to a multiple of the chunk lengths; see
//! [`padded_length`](crate::layers::lsh::padded_length)).

/// Score of a masked key (padding, or a future key under a causal mask): HF's
/// `mask_value_float32`.
pub const MASK_VALUE: f32 = -1e9;
/// Score of a key at the query's own position (LSH only): HF's `self_mask_value_float32`.
pub const SELF_MASK_VALUE: f32 = -1e5;
/// The epsilon of the LSH key normalisation `x · rsqrt(mean(x²) + ε)` (HF `_len_norm`).
pub const KEY_NORM_EPS: f32 = 1e-6;

/// The geometry of an LSH attention layer (HF `ReformerConfig` names in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LshShape {
    /// Attention heads (`num_attention_heads`).
    pub heads: usize,
    /// Hashing rounds (`num_hashes`).
    pub hashes: usize,
    /// Buckets per round, even (`num_buckets` as an int; the factorised `[a, b]` form and
    /// HF's `None`, chosen from the sequence length, are not supported). Padding goes to one
    /// extra bucket, `buckets`.
    pub buckets: usize,
    /// Slots per chunk (`lsh_attn_chunk_length`).
    pub chunk: usize,
    /// Neighbour chunks attended before / after (`lsh_num_chunks_before` / `_after`).
    pub chunks_before: usize,
    pub chunks_after: usize,
    /// Keys after the query are masked (`is_decoder`).
    pub causal: bool,
}

impl LshShape {
    /// Shape of one layer's rotations as HF draws them: `[heads, head_dim, hashes, buckets / 2]`.
    /// Round `r` of head `h` projects with `rotations[h][..][r][..]`.
    pub const fn rotations_shape(&self, head_dim: usize) -> [usize; 4] {
        [self.heads, head_dim, self.hashes, self.buckets / 2]
    }

    /// Number of floats of one layer's rotations.
    pub const fn rotations_len(&self, head_dim: usize) -> usize {
        self.heads * head_dim * self.hashes * (self.buckets / 2)
    }

    /// Asserts the shape is usable (a model's configuration, validated before any input).
    pub fn check(&self) {
        assert!(self.heads > 0, "LSH attention: heads must be positive");
        assert!(self.hashes > 0, "LSH attention: hashes (num_hashes) must be positive");
        assert!(
            self.buckets >= 2 && self.buckets.is_multiple_of(2),
            "LSH attention: buckets (num_buckets) = {} must be even and at least 2",
            self.buckets
        );
        assert!(self.chunk > 0, "LSH attention: chunk (lsh_attn_chunk_length) must be positive");
    }
}

/// The geometry of a local (chunked) attention layer (HF `ReformerConfig` names in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalShape {
    /// Attention heads (`num_attention_heads`).
    pub heads: usize,
    /// Positions per chunk (`local_attn_chunk_length`).
    pub chunk: usize,
    /// Neighbour chunks attended before / after (`local_num_chunks_before` / `_after`).
    pub chunks_before: usize,
    pub chunks_after: usize,
    /// Keys after the query are masked (`is_decoder`).
    pub causal: bool,
}

impl LocalShape {
    /// Asserts the shape is usable.
    pub fn check(&self) {
        assert!(self.heads > 0, "local attention: heads must be positive");
        assert!(self.chunk > 0, "local attention: chunk (local_attn_chunk_length) must be positive");
    }
}

/// Asserts that `seq` positions can be chunked by `chunk` (HF pads to a multiple first).
fn check_seq(what: &str, seq: usize, chunk: usize) {
    assert!(
        seq <= chunk || seq.is_multiple_of(chunk),
        "{what}: a sequence of {seq} positions is longer than one chunk ({chunk}) and not a multiple of \
         it; pad it as HF does (layers::lsh::padded_length)"
    );
}

/// Reusable working memory of [`lsh_attention`] and [`local_attention`] (grows to the largest
/// call; nothing in it outlives a call).
#[derive(Clone, Debug, Default)]
pub struct LshScratch {
    buckets: Vec<u32>,
    counts: Vec<usize>,
    /// Position of each slot (rounds' sorted lists, concatenated).
    slot_pos: Vec<u32>,
    /// Slot of each (round, position): the inverse of `slot_pos` per round.
    slot_of: Vec<u32>,
    queries: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    slot_out: Vec<f32>,
    slot_lse: Vec<f32>,
    /// One position's projections in one round (`buckets / 2`).
    rotated: Vec<f32>,
    window: Window,
}

/// One chunk's window: its keys transposed (`[HD][width]`), values (`[width][HD]`), positions,
/// visibility and a score row.
#[derive(Clone, Debug, Default)]
struct Window {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    pos: Vec<u32>,
    valid: Vec<bool>,
    scores: Vec<f32>,
}

/// `v` resized to `n` (contents unspecified: every caller overwrites what it reads).
fn sized<T: Clone + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.resize(n, T::default());
    &mut v[..n]
}

/// The bucket of every (round, position) of one head: `out[r * S + t]`, in `0..buckets`, or
/// `buckets` for padding (`valid[t] == false`).
///
/// `rotations` is this head's `[HD, hashes, buckets / 2]` block of the layer's rotations; round
/// `r` projects `x` to `y[k] = Σ_d x[d]·rotations[d][r][k]` and picks the first maximum of
/// `[y, −y]` (index `buckets/2 + k` is `−y[k]`), as `torch.argmax(cat([y, −y]))`.
pub fn lsh_buckets<const HD: usize>(
    qk: &[[f32; HD]],
    valid: &[bool],
    rotations: &[f32],
    hashes: usize,
    buckets: usize,
    out: &mut [u32],
) {
    lsh_buckets_with(qk, valid, rotations, hashes, buckets, out, &mut Vec::new());
}

/// [`lsh_buckets`] with the projections' buffer `y` reused (no allocation once it holds
/// `buckets / 2` floats).
fn lsh_buckets_with<const HD: usize>(
    qk: &[[f32; HD]],
    valid: &[bool],
    rotations: &[f32],
    hashes: usize,
    buckets: usize,
    out: &mut [u32],
    y: &mut Vec<f32>,
) {
    let (seq, half) = (qk.len(), buckets / 2);
    assert_eq!(valid.len(), seq, "LSH buckets: {} mask flags for {seq} positions", valid.len());
    assert_eq!(
        rotations.len(),
        HD * hashes * half,
        "LSH buckets: rotations are not [{HD}, {hashes}, {half}]"
    );
    assert_eq!(out.len(), hashes * seq, "LSH buckets: output is not hashes × positions");
    let pad = u32::try_from(buckets).expect("bucket count fits u32");
    let y = sized(y, half);
    for (t, x) in qk.iter().enumerate() {
        for r in 0..hashes {
            out[r * seq + t] = if valid[t] {
                y.fill(0.0);
                for (d, &xd) in x.iter().enumerate() {
                    let row = &rotations[(d * hashes + r) * half..][..half];
                    for (acc, &w) in y.iter_mut().zip(row) {
                        *acc += xd * w;
                    }
                }
                argmax_signed(y)
            } else {
                pad
            };
        }
    }
}

/// First index of the maximum of `[y, −y]`.
fn argmax_signed(y: &[f32]) -> u32 {
    let (mut best, mut at) = (f32::NEG_INFINITY, 0usize);
    let signed = y.iter().copied().chain(y.iter().map(|&v| -v));
    for (i, v) in signed.enumerate() {
        if v > best {
            (best, at) = (v, i);
        }
    }
    at as u32
}

/// HF's key normalisation: `x · rsqrt(mean(x²) + 1e-6) / √HD`.
#[inline]
fn normalised_key<const HD: usize>(x: &[f32; HD]) -> [f32; HD] {
    let variance = x.iter().map(|v| v * v).sum::<f32>() / HD as f32;
    let inv = 1.0 / (variance + KEY_NORM_EPS).sqrt();
    let sqrt_d = (HD as f32).sqrt();
    x.map(|v| v * inv / sqrt_d)
}

/// LSH self-attention of one head of one sequence: `out[t]` for every position `t` (padding
/// included, computed as HF computes it).
///
/// `qk` and `v` are the head's shared query/key and value rows, `valid[t]` whether position `t` is
/// a real token, `rotations` the head's `[HD, hashes, buckets / 2]` block (see [`lsh_buckets`]).
/// Panics if the lengths disagree or if `qk.len()` exceeds `shape.chunk` without being a multiple
/// of it. `shape.heads` is not used (one head).
pub fn lsh_attention<const HD: usize>(
    qk: &[[f32; HD]],
    v: &[[f32; HD]],
    valid: &[bool],
    rotations: &[f32],
    shape: &LshShape,
    scratch: &mut LshScratch,
    out: &mut [[f32; HD]],
) {
    shape.check();
    let seq = qk.len();
    assert!(v.len() == seq && valid.len() == seq && out.len() == seq, "LSH attention: lengths differ");
    check_seq("LSH attention", seq, shape.chunk);
    if seq == 0 {
        return;
    }
    // HF's standard path: one round, identity order, one chunk holding everything.
    let chunked = seq > shape.chunk;
    let (rounds, chunk, before, after) = if chunked {
        (shape.hashes, shape.chunk, shape.chunks_before, shape.chunks_after)
    } else {
        (1, seq, 0, 0)
    };
    let slots = rounds * seq;
    let LshScratch {
        buckets,
        counts,
        slot_pos,
        slot_of,
        queries,
        keys,
        values,
        slot_out,
        slot_lse,
        rotated,
        window,
    } = scratch;

    // Hash and stably sort each round by bucket (counting sort; ties keep position order).
    let slot_pos = sized(slot_pos, slots);
    if chunked {
        let buckets = sized(buckets, slots);
        lsh_buckets_with(qk, valid, rotations, rounds, shape.buckets, buckets, rotated);
        let counts = sized(counts, shape.buckets + 1);
        for r in 0..rounds {
            let round = &buckets[r * seq..(r + 1) * seq];
            counts.fill(0);
            for &b in round {
                counts[b as usize] += 1;
            }
            let mut start = r * seq;
            for c in counts.iter_mut() {
                (*c, start) = (start, start + *c);
            }
            for (t, &b) in round.iter().enumerate() {
                slot_pos[counts[b as usize]] = t as u32;
                counts[b as usize] += 1;
            }
        }
    } else {
        for (s, p) in slot_pos.iter_mut().enumerate() {
            *p = s as u32;
        }
    }
    let slot_of = sized(slot_of, slots);
    for (s, &p) in slot_pos.iter().enumerate() {
        slot_of[(s / seq) * seq + p as usize] = s as u32;
    }

    // Gather queries, normalised keys and values into slot order.
    let (queries, keys, values) =
        (sized(queries, slots * HD), sized(keys, slots * HD), sized(values, slots * HD));
    let (queries, keys, values) =
        (queries.as_chunks_mut::<HD>().0, keys.as_chunks_mut::<HD>().0, values.as_chunks_mut::<HD>().0);
    for (s, &p) in slot_pos.iter().enumerate() {
        let p = p as usize;
        queries[s] = qk[p];
        keys[s] = normalised_key(&qk[p]);
        values[s] = v[p];
    }

    let slot_out = sized(slot_out, slots * HD).as_chunks_mut::<HD>().0;
    let slot_lse = sized(slot_lse, slots);
    let rows = SlotRows { queries, keys, values, pos: slot_pos, valid };
    let plan = ChunkPlan { chunk, before, after, causal: shape.causal, self_mask: true };
    chunked_attention(&rows, &plan, window, slot_out, slot_lse);

    // Undo the sort and combine the rounds: w_r = exp(lse_r − logsumexp_r lse_r), all in f32.
    for (t, o) in out.iter_mut().enumerate() {
        let slot = |r: usize| slot_of[r * seq + t] as usize;
        let max = (0..rounds).map(|r| slot_lse[slot(r)]).fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = (0..rounds).map(|r| (slot_lse[slot(r)] - max).exp()).sum();
        let total = max + sum.ln();
        *o = [0.0; HD];
        for r in 0..rounds {
            let w = (slot_lse[slot(r)] - total).exp();
            for (acc, &x) in o.iter_mut().zip(&slot_out[slot(r)]) {
                *acc += x * w;
            }
        }
    }
}

/// Local (chunked) self-attention of one head of one sequence: `out[t]` for every position.
///
/// `q`, `k`, `v` are the head's rows; keys are divided by `√HD`; position chunk `g` attends to
/// chunks `g − chunks_before ..= g + chunks_after` modulo the chunk count, with [`MASK_VALUE`] on
/// padding and (causal) future keys and no self mask. Panics like (`lsh_attention`).
pub fn local_attention<const HD: usize>(
    q: &[[f32; HD]],
    k: &[[f32; HD]],
    v: &[[f32; HD]],
    valid: &[bool],
    shape: &LocalShape,
    scratch: &mut LshScratch,
    out: &mut [[f32; HD]],
) {
    shape.check();
    let seq = q.len();
    assert!(
        k.len() == seq && v.len() == seq && valid.len() == seq && out.len() == seq,
        "local attention: lengths differ"
    );
    check_seq("local attention", seq, shape.chunk);
    if seq == 0 {
        return;
    }
    let (chunk, before, after) =
        if seq > shape.chunk { (shape.chunk, shape.chunks_before, shape.chunks_after) } else { (seq, 0, 0) };
    let LshScratch { slot_pos, keys, slot_lse, window, .. } = scratch;
    let pos = sized(slot_pos, seq);
    for (t, p) in pos.iter_mut().enumerate() {
        *p = t as u32;
    }
    let keys = sized(keys, seq * HD).as_chunks_mut::<HD>().0;
    let sqrt_d = (HD as f32).sqrt();
    for (scaled, key) in keys.iter_mut().zip(k) {
        *scaled = key.map(|x| x / sqrt_d);
    }
    let rows = SlotRows { queries: q, keys, values: v, pos, valid };
    let plan = ChunkPlan { chunk, before, after, causal: shape.causal, self_mask: false };
    chunked_attention(&rows, &plan, window, out, sized(slot_lse, seq));
}

/// Rows in slot order and each slot's position; `valid` is indexed by position.
struct SlotRows<'a, const HD: usize> {
    queries: &'a [[f32; HD]],
    keys: &'a [[f32; HD]],
    values: &'a [[f32; HD]],
    pos: &'a [u32],
    valid: &'a [bool],
}

/// How slots are chunked and masked.
struct ChunkPlan {
    chunk: usize,
    before: usize,
    after: usize,
    causal: bool,
    self_mask: bool,
}

/// Every chunk of slots against its (circular) window: `out[s]` and `lse[s]` per slot.
fn chunked_attention<const HD: usize>(
    rows: &SlotRows<'_, HD>,
    plan: &ChunkPlan,
    window: &mut Window,
    out: &mut [[f32; HD]],
    lse: &mut [f32],
) {
    let slots = rows.queries.len();
    let chunk = plan.chunk;
    let n_chunks = slots / chunk;
    let width = (plan.before + 1 + plan.after) * chunk;
    let keys_t = sized(&mut window.keys_t, HD * width);
    let win_values = sized(&mut window.values, width * HD).as_chunks_mut::<HD>().0;
    let win_pos = sized(&mut window.pos, width);
    let win_valid = sized(&mut window.valid, width);
    let scores = sized(&mut window.scores, width);
    for g in 0..n_chunks {
        // The window, in HF's order: chunks g − before, …, g, …, g + after (mod n_chunks).
        for w in 0..plan.before + 1 + plan.after {
            let c = window_chunk(g, w, plan.before, n_chunks);
            for i in 0..chunk {
                let (j, s) = (w * chunk + i, c * chunk + i);
                let p = rows.pos[s];
                win_pos[j] = p;
                win_valid[j] = rows.valid[p as usize];
                for d in 0..HD {
                    keys_t[d * width + j] = rows.keys[s][d];
                }
                win_values[j] = rows.values[s];
            }
        }
        for s in g * chunk..(g + 1) * chunk {
            let (q, qpos) = (&rows.queries[s], rows.pos[s]);
            scores.fill(0.0);
            for (d, &qd) in q.iter().enumerate() {
                for (acc, &kd) in scores.iter_mut().zip(&keys_t[d * width..(d + 1) * width]) {
                    *acc += qd * kd;
                }
            }
            for ((score, &kpos), &kvalid) in scores.iter_mut().zip(win_pos.iter()).zip(win_valid.iter()) {
                if !kvalid || (plan.causal && kpos > qpos) {
                    *score = MASK_VALUE;
                }
                if plan.self_mask && kpos == qpos {
                    *score = SELF_MASK_VALUE;
                }
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = scores.iter().map(|&x| super::exp_f32(x - max)).sum();
            let l = max + sum.ln();
            lse[s] = l;
            let o = &mut out[s];
            *o = [0.0; HD];
            for (&x, value) in scores.iter().zip(win_values.iter()) {
                // Masked keys (−1e9) underflow to exactly 0 here: the window always holds the
                // query's own slot, so `l ≥ −1e5`.
                let p = super::exp_f32(x - l);
                if p == 0.0 {
                    continue;
                }
                for (acc, &vd) in o.iter_mut().zip(value) {
                    *acc += p * vd;
                }
            }
        }
    }
}

/// Chunk index of window entry `w` of chunk `g`: `(g − before + w) mod n_chunks`.
#[inline]
fn window_chunk(g: usize, w: usize, before: usize, n_chunks: usize) -> usize {
    (g + n_chunks * (before / n_chunks + 1) + w - before) % n_chunks
}

// ------------------------------------------------------------------------------------------------
// Naive twins: literal translations of HF's tensor code, every intermediate materialised.
// ------------------------------------------------------------------------------------------------

/// [`lsh_attention`] written as HF writes it: buckets offset by `round · (buckets [+1 if the
/// sequence has padding])`, one stable argsort of all rounds by `N·bucket + index`, the undo
/// permutation, gathered (expanded) vectors, `_look_adjacent`'s shifted concatenations, the full
/// `[chunks, chunk, window]` score tensor, `torch.where` masks, logsumexp, the reverse sort and
/// the rounds' combination. f32 throughout, plain sequential sums. For tests.
#[doc(hidden)]
pub fn lsh_attention_naive<const HD: usize>(
    qk: &[[f32; HD]],
    v: &[[f32; HD]],
    valid: &[bool],
    rotations: &[f32],
    shape: &LshShape,
    out: &mut [[f32; HD]],
) {
    let seq = qk.len();
    if seq <= shape.chunk {
        let idx: Vec<usize> = (0..seq).collect();
        let keys: Vec<[f32; HD]> = qk.iter().map(normalised_key).collect();
        let (o, _) = naive_window_attention(qk, &keys, v, &idx, &idx, valid, shape.causal, true);
        out.copy_from_slice(&o);
        return;
    }
    let (rounds, half, nb) = (shape.hashes, shape.buckets / 2, shape.buckets);
    let n = rounds * seq;
    let per_round = if valid.contains(&false) { nb + 1 } else { nb };
    // _hash_vectors: rotated [rounds, seq, half] -> argmax -> padding bucket -> offsets.
    let mut offset_buckets = vec![0usize; n];
    for r in 0..rounds {
        for t in 0..seq {
            let mut y = vec![0.0f32; half];
            for (d, &xd) in qk[t].iter().enumerate() {
                for k in 0..half {
                    y[k] += xd * rotations[(d * rounds + r) * half + k];
                }
            }
            let full: Vec<f32> = y.iter().copied().chain(y.iter().map(|x| -x)).collect();
            let mut bucket = 0;
            for i in 1..full.len() {
                if full[i] > full[bucket] {
                    bucket = i;
                }
            }
            if !valid[t] {
                bucket = nb;
            }
            offset_buckets[r * seq + t] = bucket + r * per_round;
        }
    }
    // _stable_argsort and the undo permutation.
    let mut sorted: Vec<usize> = (0..n).collect();
    sorted.sort_by_key(|&i| n * offset_buckets[i] + i % n);
    let mut undo = vec![0usize; n];
    for (i, &s) in sorted.iter().enumerate() {
        undo[s] = i;
    }
    let per_hash: Vec<usize> = sorted.iter().map(|&s| s % seq).collect();
    // _gather_by_expansion; keys normalised after the gather, as HF does.
    let q_sorted: Vec<[f32; HD]> = per_hash.iter().map(|&p| qk[p]).collect();
    let k_sorted: Vec<[f32; HD]> = q_sorted.iter().map(normalised_key).collect();
    let v_sorted: Vec<[f32; HD]> = per_hash.iter().map(|&p| v[p]).collect();
    let c = shape.chunk;
    let n_chunks = n / c;
    let adjacent = look_adjacent(n_chunks, c, shape.chunks_before, shape.chunks_after);
    let mut out_sorted = vec![[0.0f32; HD]; n];
    let mut logits_sorted = vec![0.0f32; n];
    for g in 0..n_chunks {
        let q_idx: Vec<usize> = (g * c..(g + 1) * c).collect();
        let (o, l) = naive_chunk(
            &q_sorted,
            &k_sorted,
            &v_sorted,
            &per_hash,
            &q_idx,
            &adjacent[g],
            valid,
            shape.causal,
            true,
        );
        for (i, &s) in q_idx.iter().enumerate() {
            out_sorted[s] = o[i];
            logits_sorted[s] = l[i];
        }
    }
    // ReverseSort, then the rounds' combination.
    let out_vectors: Vec<[f32; HD]> = (0..n).map(|i| out_sorted[undo[i]]).collect();
    let logits: Vec<f32> = (0..n).map(|i| logits_sorted[undo[i]]).collect();
    for t in 0..seq {
        let l: Vec<f32> = (0..rounds).map(|r| logits[r * seq + t]).collect();
        let lse = logsumexp(&l);
        let mut o = [0.0f32; HD];
        for r in 0..rounds {
            let w = (l[r] - lse).exp();
            for d in 0..HD {
                o[d] += out_vectors[r * seq + t][d] * w;
            }
        }
        out[t] = o;
    }
}

/// [`local_attention`] written as HF writes it. For tests.
#[doc(hidden)]
pub fn local_attention_naive<const HD: usize>(
    q: &[[f32; HD]],
    k: &[[f32; HD]],
    v: &[[f32; HD]],
    valid: &[bool],
    shape: &LocalShape,
    out: &mut [[f32; HD]],
) {
    let seq = q.len();
    let sqrt_d = (HD as f32).sqrt();
    let keys: Vec<[f32; HD]> = k.iter().map(|x| x.map(|v| v / sqrt_d)).collect();
    let idx: Vec<usize> = (0..seq).collect();
    if seq <= shape.chunk {
        let (o, _) = naive_window_attention(q, &keys, v, &idx, &idx, valid, shape.causal, false);
        out.copy_from_slice(&o);
        return;
    }
    let c = shape.chunk;
    let n_chunks = seq / c;
    let adjacent = look_adjacent(n_chunks, c, shape.chunks_before, shape.chunks_after);
    for g in 0..n_chunks {
        let q_idx: Vec<usize> = (g * c..(g + 1) * c).collect();
        let (o, _) = naive_chunk(q, &keys, v, &idx, &q_idx, &adjacent[g], valid, shape.causal, false);
        out[g * c..(g + 1) * c].copy_from_slice(&o);
    }
}

/// `_look_adjacent` over chunk indices: for each chunk, the slots of
/// `cat([x[:, i:], x[:, :i]])[g]` for `i = −before..=after`, concatenated.
fn look_adjacent(n_chunks: usize, c: usize, before: usize, after: usize) -> Vec<Vec<usize>> {
    let chunks: Vec<Vec<usize>> = (0..n_chunks).map(|g| (g * c..(g + 1) * c).collect()).collect();
    let mut windows = vec![Vec::new(); n_chunks];
    for i in -(before as isize)..=(after as isize) {
        // Rolling the chunk axis left by i (torch.cat of the two slices).
        let shift = i.rem_euclid(n_chunks as isize) as usize;
        let rolled: Vec<&Vec<usize>> = chunks[shift..].iter().chain(&chunks[..shift]).collect();
        for (g, w) in windows.iter_mut().enumerate() {
            w.extend_from_slice(rolled[g]);
        }
    }
    windows
}

/// Queries `q_idx` (slots) against keys `k_idx` (slots) of slot-ordered rows; positions are
/// `pos[slot]`.
fn naive_chunk<const HD: usize>(
    q: &[[f32; HD]],
    k: &[[f32; HD]],
    v: &[[f32; HD]],
    pos: &[usize],
    q_idx: &[usize],
    k_idx: &[usize],
    valid: &[bool],
    causal: bool,
    self_mask: bool,
) -> (Vec<[f32; HD]>, Vec<f32>) {
    let qs: Vec<[f32; HD]> = q_idx.iter().map(|&s| q[s]).collect();
    let ks: Vec<[f32; HD]> = k_idx.iter().map(|&s| k[s]).collect();
    let vs: Vec<[f32; HD]> = k_idx.iter().map(|&s| v[s]).collect();
    let qp: Vec<usize> = q_idx.iter().map(|&s| pos[s]).collect();
    let kp: Vec<usize> = k_idx.iter().map(|&s| pos[s]).collect();
    naive_window_attention(&qs, &ks, &vs, &qp, &kp, valid, causal, self_mask)
}

/// Dots → `where(mask, dots, −1e9)` → `where(self_mask, dots, −1e5)` → logsumexp → probs → `p·v`.
fn naive_window_attention<const HD: usize>(
    q: &[[f32; HD]],
    k: &[[f32; HD]],
    v: &[[f32; HD]],
    qpos: &[usize],
    kpos: &[usize],
    valid: &[bool],
    causal: bool,
    self_mask: bool,
) -> (Vec<[f32; HD]>, Vec<f32>) {
    let mut outs = Vec::with_capacity(q.len());
    let mut lses = Vec::with_capacity(q.len());
    for (qi, &p) in q.iter().zip(qpos) {
        let mut dots: Vec<f32> = k.iter().map(|kj| (0..HD).map(|d| qi[d] * kj[d]).sum()).collect();
        for (x, &j) in dots.iter_mut().zip(kpos) {
            let visible = valid[j] && (!causal || p >= j);
            if !visible {
                *x = MASK_VALUE;
            }
        }
        if self_mask {
            for (x, &j) in dots.iter_mut().zip(kpos) {
                if p == j {
                    *x = SELF_MASK_VALUE;
                }
            }
        }
        let lse = logsumexp(&dots);
        let mut o = [0.0f32; HD];
        for (x, vj) in dots.iter().zip(v) {
            let prob = (x - lse).exp();
            for d in 0..HD {
                o[d] += prob * vj[d];
            }
        }
        outs.push(o);
        lses.push(lse);
    }
    (outs, lses)
}

/// `torch.logsumexp` in f32: `max + ln Σ exp(x − max)`.
fn logsumexp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    const HD: usize = 8;

    /// Random (S, shape, mask, qk, v, rotations): S either at most one chunk or a multiple of it.
    fn lsh_case() -> impl Strategy<Value = (LshShape, Vec<bool>, Vec<f32>, Vec<f32>, Vec<f32>)> {
        (1usize..=4, 1usize..=4, 1usize..=8, 0usize..=2, 0usize..=2, any::<bool>(), 1usize..=6, any::<bool>())
            .prop_flat_map(|(hashes, half, chunk, before, after, causal, n_chunks, short)| {
                let shape = LshShape {
                    heads: 1,
                    hashes,
                    buckets: 2 * half,
                    chunk,
                    chunks_before: before,
                    chunks_after: after,
                    causal,
                };
                let seq_range = if short { 1..=chunk } else { chunk * n_chunks..=chunk * n_chunks };
                (Just(shape), seq_range).prop_flat_map(move |(shape, seq)| {
                    (
                        Just(shape),
                        prop::collection::vec(prop::bool::weighted(0.8), seq),
                        prop::collection::vec(-2.0f32..2.0, seq * HD),
                        prop::collection::vec(-2.0f32..2.0, seq * HD),
                        prop::collection::vec(-1.5f32..1.5, HD * shape.hashes * (shape.buckets / 2)),
                    )
                })
            })
    }

    fn rows(x: &[f32]) -> &[[f32; HD]] {
        x.as_chunks::<HD>().0
    }

    /// Largest |a − b| over all elements.
    fn max_diff(a: &[[f32; HD]], b: &[[f32; HD]]) -> f32 {
        a.as_flattened().iter().zip(b.as_flattened()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    proptest! {
        #![proptest_config(Config::with_cases(256))]

        /// The optimised path equals the literal HF translation. Both run in f32 with the same
        /// buckets (the hash arithmetic is the same sequence of operations), so what remains is
        /// the summation order of the dot products and sums: outputs are convex combinations of
        /// values in [-2, 2] (up to the f32 self-mask weight loss), so 1e-5 is ~50 ulps, while any
        /// wrong window, mask, sort or weight moves an output by O(0.1).
        #[test]
        fn lsh_matches_naive((shape, valid, qk, v, rot) in lsh_case()) {
            let (qk, v) = (rows(&qk), rows(&v));
            let mut fast = vec![[0.0; HD]; qk.len()];
            let mut naive = vec![[0.0; HD]; qk.len()];
            lsh_attention(qk, v, &valid, &rot, &shape, &mut LshScratch::default(), &mut fast);
            lsh_attention_naive(qk, v, &valid, &rot, &shape, &mut naive);
            let diff = max_diff(&fast, &naive);
            prop_assert!(diff <= 1e-5, "max diff {diff} for {shape:?}, seq {}", qk.len());
        }

        /// Local attention against its literal twin (same tolerance argument).
        #[test]
        fn local_matches_naive((shape, valid, q, v, _rot) in lsh_case(), seed in 0u32..1000) {
            let local = LocalShape {
                heads: 1, chunk: shape.chunk, chunks_before: shape.chunks_before,
                chunks_after: shape.chunks_after, causal: shape.causal,
            };
            let k: Vec<f32> = q.iter().enumerate().map(|(i, x)| (x * 1.3 + (i as u32 ^ seed) as f32 * 0.01).sin()).collect();
            let (q, k, v) = (rows(&q), rows(&k), rows(&v));
            let mut fast = vec![[0.0; HD]; q.len()];
            let mut naive = vec![[0.0; HD]; q.len()];
            local_attention(q, k, v, &valid, &local, &mut LshScratch::default(), &mut fast);
            local_attention_naive(q, k, v, &valid, &local, &mut naive);
            let diff = max_diff(&fast, &naive);
            prop_assert!(diff <= 1e-5, "max diff {diff} for {local:?}, seq {}", q.len());
        }

        /// Buckets against an f64 argmax, wherever the top two of [y, −y] are more than 1e-4
        /// apart (closer ones may round either way in f32).
        #[test]
        fn buckets_match_f64((shape, valid, qk, _v, rot) in lsh_case()) {
            let qk = rows(&qk);
            let (seq, half) = (qk.len(), shape.buckets / 2);
            let mut got = vec![0u32; shape.hashes * seq];
            lsh_buckets(qk, &valid, &rot, shape.hashes, shape.buckets, &mut got);
            for r in 0..shape.hashes {
                for t in 0..seq {
                    let b = got[r * seq + t] as usize;
                    if !valid[t] {
                        prop_assert_eq!(b, shape.buckets);
                        continue;
                    }
                    let y: Vec<f64> = (0..half)
                        .map(|k| (0..HD).map(|d| qk[t][d] as f64 * rot[(d * shape.hashes + r) * half + k] as f64).sum())
                        .collect();
                    let full: Vec<f64> = y.iter().copied().chain(y.iter().map(|x| -x)).collect();
                    let mut sorted = full.clone();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    if sorted[0] - sorted[1] > 1e-4 {
                        prop_assert_eq!(full[b], sorted[0], "round {} position {}", r, t);
                    }
                }
            }
        }
    }

    /// Position 0 of a causal model sees only itself in every round: each round's lse is −1e5 and
    /// the two rounds' weights are exp(−1e5 − f32(−1e5 + ln 2)) = exp(−0.6953125) ≈ 0.49890 each,
    /// as in HF's float32 (not 0.5).
    #[test]
    fn lone_query_keeps_hf_float32_weights() {
        let shape = LshShape {
            heads: 1,
            hashes: 2,
            buckets: 2,
            chunk: 2,
            chunks_before: 1,
            chunks_after: 0,
            causal: true,
        };
        let qk: Vec<[f32; HD]> = (0..4).map(|t| [0.3 * t as f32 + 0.1; HD]).collect();
        let v: Vec<[f32; HD]> = (0..4).map(|t| [t as f32 + 1.0; HD]).collect();
        let rot = vec![1.0; HD * 2];
        let mut out = vec![[0.0; HD]; 4];
        lsh_attention(&qk, &v, &[true; 4], &rot, &shape, &mut LshScratch::default(), &mut out);
        let total = -1e5f32 + 2.0f32.ln();
        let w = (-1e5f32 - total).exp();
        // −1e5 + ln 2 rounded to f32's 2⁻⁷ grid there.
        assert_eq!(f64::from(total), -99_999.304_687_5);
        assert!((out[0][0] - 2.0 * w).abs() < 1e-6, "{} vs {}", out[0][0], 2.0 * w);
        assert!((out[0][0] - 1.0).abs() > 1e-3);
    }

    /// A window wider than all chunks repeats chunks (HF's `_look_adjacent` does not deduplicate).
    #[test]
    fn window_wider_than_sequence_repeats_chunks() {
        let shape = LshShape {
            heads: 1,
            hashes: 1,
            buckets: 2,
            chunk: 2,
            chunks_before: 2,
            chunks_after: 2,
            causal: false,
        };
        let qk: Vec<[f32; HD]> = (0..4).map(|t| [(t as f32 * 0.7).sin(); HD]).collect();
        let v: Vec<[f32; HD]> = (0..4).map(|t| [t as f32; HD]).collect();
        let rot = vec![0.5; HD];
        let (mut fast, mut naive) = (vec![[0.0; HD]; 4], vec![[0.0; HD]; 4]);
        lsh_attention(&qk, &v, &[true; 4], &rot, &shape, &mut LshScratch::default(), &mut fast);
        lsh_attention_naive(&qk, &v, &[true; 4], &rot, &shape, &mut naive);
        assert!(max_diff(&fast, &naive) <= 1e-6);
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn unpadded_length_panics() {
        let shape = LshShape {
            heads: 1,
            hashes: 1,
            buckets: 2,
            chunk: 4,
            chunks_before: 1,
            chunks_after: 0,
            causal: true,
        };
        let x = vec![[0.0; HD]; 6];
        let mut out = vec![[0.0; HD]; 6];
        lsh_attention(&x, &x, &[true; 6], &[0.0; HD], &shape, &mut LshScratch::default(), &mut out);
    }
}
