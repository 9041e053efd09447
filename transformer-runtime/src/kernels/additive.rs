//! Additive and location attention for one query row against one sequence's memory: Bahdanau's
//! additive scores ([`additive_attention`]), Luong's "location" scores ([`location_attention`])
//! and the location-sensitive scores of Chorowski et al. 2015 / Tacotron 2
//! ([`location_sensitive_attention`]), each with a literal float64 twin for the tests
//! (`*_naive`).
//!
//! Every kernel takes the query already projected (the layer runs one GEMM over all query rows),
//! writes the row's alignment `α` over the memory positions and the context `c = Σ α_j h_j` over
//! the raw memory rows. Padding positions (`valid[j] == false`) get `α_j = 0` exactly and are
//! never read: the softmax is over the real positions only, so it is renormalised over them.
//!
//! **Cost.** Additive scores cost `O(S·A)` per query (one `tanh` per position and attention
//! dim; std's `tanh`, vectorisable around it); the location-sensitive features add
//! `O(S·(C·K·F + F·A))` (the convolution of the previous alignment and its projection, computed
//! per position on the stack: no `S × F` buffer). The softmax uses the crate's branch-free
//! [`exp_f32`](super::exp_f32).

use super::exp_f32;

/// The location features of Chorowski et al. / Tacotron 2: a 1-D convolution over memory positions
/// of `channels` alignment rows (the previous alignment, and optionally the cumulative one), with
/// `F` filters of odd width `kernel`, zero padding `(kernel − 1) / 2` on both sides (centred) and no
/// bias, followed by a projection of the `F` filter outputs to the attention width (no bias).
#[derive(Clone, Copy, Debug)]
pub struct LocationFilters<'a, const F: usize> {
    /// `[F, channels, kernel]`, as `nn.Conv1d` stores its weight.
    pub conv: &'a [f32],
    /// `[F, A]`: the projection `nn.Linear(F, A)` transposed, so that adding `f_k · row_k` for
    /// every filter builds the `A`-wide feature with vertical multiply-adds.
    pub dense_t: &'a [f32],
    /// 1 (previous alignment) or 2 (previous and cumulative, Tacotron 2).
    pub channels: usize,
    /// Odd filter width.
    pub kernel: usize,
}

impl<const F: usize> LocationFilters<'_, F> {
    fn check(&self, attention_dim: usize) {
        assert!(
            self.kernel % 2 == 1,
            "location filters: the kernel width must be odd (centred), got {}",
            self.kernel
        );
        assert!(
            self.channels == 1 || self.channels == 2,
            "location filters: 1 or 2 alignment channels, got {}",
            self.channels
        );
        assert_eq!(
            self.conv.len(),
            F * self.channels * self.kernel,
            "location filters: conv weight is not [filters = {F}, channels = {}, kernel = {}]",
            self.channels,
            self.kernel
        );
        assert_eq!(
            self.dense_t.len(),
            F * attention_dim,
            "location filters: dense weight is not [filters = {F}] × [attention = {attention_dim}]"
        );
    }
}

/// Asserts the per-row buffers of one query against one sequence's memory.
fn check_row(what: &str, memory: usize, valid: usize, alignment: usize) {
    assert_eq!(valid, memory, "{what}: mask of {valid} positions for {memory} memory rows");
    assert_eq!(alignment, memory, "{what}: alignment of {alignment} floats for {memory} memory rows");
    assert!(memory > 0, "{what}: empty memory");
}

/// `e_j = energyᵀ tanh(query + keys[j])` for every real position (padding left untouched).
fn additive_scores<const A: usize>(
    query: &[f32; A],
    keys: &[[f32; A]],
    valid: &[bool],
    energy: &[f32; A],
    scores: &mut [f32],
) {
    for ((score, key), _) in scores.iter_mut().zip(keys).zip(valid).filter(|(_, &v)| v) {
        *score = energy_of(query, key, None, energy);
    }
}

/// `energyᵀ tanh(query + key [+ location])`.
#[inline]
fn energy_of<const A: usize>(
    query: &[f32; A],
    key: &[f32; A],
    location: Option<&[f32; A]>,
    energy: &[f32; A],
) -> f32 {
    let mut pre = [0.0f32; A];
    for a in 0..A {
        pre[a] = query[a] + key[a];
    }
    if let Some(loc) = location {
        for a in 0..A {
            pre[a] += loc[a];
        }
    }
    let mut acc = [0.0f32; super::LANES];
    for (a, p) in pre.iter().enumerate() {
        acc[a % super::LANES] += energy[a] * p.tanh();
    }
    super::reduce_lanes(acc)
}

/// Softmax in place over the real positions; padding gets exactly 0.
fn masked_softmax(scores: &mut [f32], valid: &[bool]) {
    let max = scores.iter().zip(valid).filter(|(_, &v)| v).map(|(&s, _)| s).fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (s, &v) in scores.iter_mut().zip(valid) {
        *s = if v { exp_f32(*s - max) } else { 0.0 };
        sum += *s;
    }
    // At least one position is real (asserted by the callers), and it has exp(0) = 1: sum ≥ 1.
    let inv = 1.0 / sum;
    scores.iter_mut().for_each(|s| *s *= inv);
}

/// `context = Σ_j α_j memory[j]` over the real positions.
fn weighted_rows<const M: usize>(alpha: &[f32], memory: &[[f32; M]], valid: &[bool], context: &mut [f32; M]) {
    context.fill(0.0);
    for ((&a, row), _) in alpha.iter().zip(memory).zip(valid).filter(|(_, &v)| v) {
        for (c, h) in context.iter_mut().zip(row) {
            *c += a * h;
        }
    }
}

/// Bahdanau's additive attention for one query row: `e_j = energyᵀ tanh(query + keys[j])`,
/// `α = softmax` over the real positions, `context = Σ α_j memory[j]`.
///
/// `query` is `W_q·s`, `keys[j]` is `W_k·h_j + b` (projected once per source), `memory[j]` is
/// `h_j`; `valid`, `keys`, `memory` and `alignment` have one entry per memory position.
///
/// # Panics
///
/// On lengths that differ, an empty memory, or a mask with no real position.
pub fn additive_attention<const M: usize, const A: usize>(
    query: &[f32; A],
    keys: &[[f32; A]],
    memory: &[[f32; M]],
    valid: &[bool],
    energy: &[f32; A],
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    check_row("additive attention", memory.len(), valid.len(), alignment.len());
    assert_eq!(
        keys.len(),
        memory.len(),
        "additive attention: {} keys for {} memory rows",
        keys.len(),
        memory.len()
    );
    assert!(valid.contains(&true), "additive attention: no real memory position");
    additive_scores(query, keys, valid, energy, alignment);
    masked_softmax(alignment, valid);
    weighted_rows(alignment, memory, valid, context);
}

/// Luong's "location" attention for one query row: `logits = W_a·s (+ b)` over a fixed maximum
/// source length; `α_j = exp(logits_j) / Σ_{i real} exp(logits_i)` for the real positions `j` of
/// this sequence (`valid`, whose length is the sequence's memory length `≤ logits.len()`), 0 for
/// padding, and `context = Σ α_j memory[j]`. The logits of positions at or past the memory length
/// are dropped, not softmaxed and cut: the weights always sum to 1.
///
/// # Panics
///
/// On lengths that differ, a memory longer than the logits, or no real position.
pub fn location_attention<const M: usize>(
    logits: &[f32],
    memory: &[[f32; M]],
    valid: &[bool],
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    check_row("location attention", memory.len(), valid.len(), alignment.len());
    assert!(
        memory.len() <= logits.len(),
        "location attention: {} memory rows but the location layer scores only {} positions (max_source)",
        memory.len(),
        logits.len()
    );
    assert!(valid.contains(&true), "location attention: no real memory position");
    alignment.copy_from_slice(&logits[..memory.len()]);
    masked_softmax(alignment, valid);
    weighted_rows(alignment, memory, valid, context);
}

/// The location-sensitive attention of Chorowski et al. 2015 (Tacotron 2 with a cumulative
/// channel) for one query row: `f = conv([previous, cumulative])`, `e_j = energyᵀ tanh(query +
/// keys[j] + dense·f_j)`, `α = softmax` over the real positions, `context = Σ α_j memory[j]`.
///
/// `previous` is the alignment of the sequence's previous target position (zeros before the
/// first), `cumulative` the sum of all earlier alignments (`Some` iff `filters.channels == 2`);
/// both are zero at padding positions, and the convolution reads zeros outside `0..memory.len()`.
/// Updating them after the row (`previous = α`, `cumulative += α`) is the caller's: see
/// [`AlignmentState`](crate::layers::additive::AlignmentState).
///
/// # Panics
///
/// On lengths that differ, bad filters ([`LocationFilters`]), or no real position.
pub fn location_sensitive_attention<const M: usize, const A: usize, const F: usize>(
    query: &[f32; A],
    keys: &[[f32; A]],
    memory: &[[f32; M]],
    valid: &[bool],
    energy: &[f32; A],
    filters: LocationFilters<'_, F>,
    previous: &[f32],
    cumulative: Option<&[f32]>,
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    let s = memory.len();
    check_row("location-sensitive attention", s, valid.len(), alignment.len());
    filters.check(A);
    assert_eq!(keys.len(), s, "location-sensitive attention: {} keys for {s} memory rows", keys.len());
    assert_eq!(
        previous.len(),
        s,
        "location-sensitive attention: previous alignment of {} for {s}",
        previous.len()
    );
    assert_eq!(
        cumulative.is_some(),
        filters.channels == 2,
        "location-sensitive attention: a cumulative alignment goes with exactly 2 filter channels"
    );
    if let Some(cum) = cumulative {
        assert_eq!(
            cum.len(),
            s,
            "location-sensitive attention: cumulative alignment of {} for {s}",
            cum.len()
        );
    }
    assert!(valid.contains(&true), "location-sensitive attention: no real memory position");
    let (k, half) = (filters.kernel, filters.kernel / 2);
    for j in (0..s).filter(|&j| valid[j]) {
        // Filter outputs at position j: input position j + t − half for tap t (zeros outside).
        let t_lo = half.saturating_sub(j);
        let t_hi = k.min(s + half - j);
        let mut f = [0.0f32; F];
        for (fo, taps) in f.iter_mut().zip(filters.conv.chunks_exact(filters.channels * k)) {
            let mut acc = 0.0f32;
            for (c, input) in std::iter::once(previous).chain(cumulative).enumerate() {
                let w = &taps[c * k..(c + 1) * k];
                for t in t_lo..t_hi {
                    acc += w[t] * input[j + t - half];
                }
            }
            *fo = acc;
        }
        let mut location = [0.0f32; A];
        for (&fo, row) in f.iter().zip(filters.dense_t.chunks_exact(A)) {
            for (l, w) in location.iter_mut().zip(row) {
                *l += fo * w;
            }
        }
        alignment[j] = energy_of(query, &keys[j], Some(&location), energy);
    }
    masked_softmax(alignment, valid);
    weighted_rows(alignment, memory, valid, context);
}

/// The literal float64 form of [`additive_attention`], for the tests.
pub fn additive_attention_naive<const M: usize, const A: usize>(
    query: &[f32; A],
    keys: &[[f32; A]],
    memory: &[[f32; M]],
    valid: &[bool],
    energy: &[f32; A],
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    let scores: Vec<f64> = keys
        .iter()
        .map(|key| (0..A).map(|a| energy[a] as f64 * (query[a] as f64 + key[a] as f64).tanh()).sum())
        .collect();
    naive_finish(&scores, memory, valid, alignment, context);
}

/// The literal float64 form of [`location_attention`], for the tests.
pub fn location_attention_naive<const M: usize>(
    logits: &[f32],
    memory: &[[f32; M]],
    valid: &[bool],
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    let scores: Vec<f64> = logits[..memory.len()].iter().map(|&l| l as f64).collect();
    naive_finish(&scores, memory, valid, alignment, context);
}

/// The literal float64 form of [`location_sensitive_attention`], for the tests: the convolution
/// over an explicitly zero-padded copy of the alignment channels, the projection as a matrix
/// product over `[F, A]`.
pub fn location_sensitive_attention_naive<const M: usize, const A: usize, const F: usize>(
    query: &[f32; A],
    keys: &[[f32; A]],
    memory: &[[f32; M]],
    valid: &[bool],
    energy: &[f32; A],
    filters: LocationFilters<'_, F>,
    previous: &[f32],
    cumulative: Option<&[f32]>,
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    let (s, k, ch) = (memory.len(), filters.kernel, filters.channels);
    let pad = (k - 1) / 2;
    let inputs: Vec<&[f32]> = std::iter::once(previous).chain(cumulative).collect();
    let padded: Vec<Vec<f64>> = inputs
        .iter()
        .map(|x| {
            let mut p = vec![0.0f64; s + 2 * pad];
            for (i, &v) in x.iter().enumerate() {
                p[pad + i] = v as f64;
            }
            p
        })
        .collect();
    let scores: Vec<f64> = (0..s)
        .map(|j| {
            let f: Vec<f64> = (0..F)
                .map(|o| {
                    let mut acc = 0.0;
                    for c in 0..ch {
                        for t in 0..k {
                            acc += filters.conv[(o * ch + c) * k + t] as f64 * padded[c][j + t];
                        }
                    }
                    acc
                })
                .collect();
            (0..A)
                .map(|a| {
                    let loc: f64 = (0..F).map(|o| f[o] * filters.dense_t[o * A + a] as f64).sum();
                    energy[a] as f64 * (query[a] as f64 + keys[j][a] as f64 + loc).tanh()
                })
                .sum()
        })
        .collect();
    naive_finish(&scores, memory, valid, alignment, context);
}

/// Masked softmax of `scores` (−∞ at padding) and the weighted sum, in f64.
fn naive_finish<const M: usize>(
    scores: &[f64],
    memory: &[[f32; M]],
    valid: &[bool],
    alignment: &mut [f32],
    context: &mut [f32; M],
) {
    let masked: Vec<f64> =
        scores.iter().zip(valid).map(|(&s, &v)| if v { s } else { f64::NEG_INFINITY }).collect();
    let max = masked.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = masked.iter().map(|&s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    for (a, e) in alignment.iter_mut().zip(&exps) {
        *a = (e / sum) as f32;
    }
    for (m, c) in context.iter_mut().enumerate() {
        *c = exps.iter().zip(memory).map(|(e, row)| e / sum * row[m] as f64).sum::<f64>() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    const M: usize = 5;
    const A: usize = 11;
    const F: usize = 3;

    fn rows<const N: usize>(x: &[f32]) -> &[[f32; N]] {
        x.as_chunks::<N>().0
    }

    /// (mask, memory `[s, M]`, keys `[s, A]`, query `[A]`, energy `[A]`).
    type MemoryCase = (Vec<bool>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

    /// A memory of `s` rows, its mask (at least one real position), and per-row vectors.
    fn memory_case() -> impl Strategy<Value = MemoryCase> {
        (1usize..=24).prop_flat_map(|s| {
            (
                prop::collection::vec(prop::bool::weighted(0.8), s).prop_map(|mut v| {
                    v[0] = true;
                    v
                }),
                prop::collection::vec(-2.0f32..2.0, s * M),
                prop::collection::vec(-2.0f32..2.0, s * A),
                prop::collection::vec(-2.0f32..2.0, A),
                prop::collection::vec(-2.0f32..2.0, A),
            )
        })
    }

    /// Largest |a − b|.
    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn arr<const N: usize>(v: &[f32]) -> [f32; N] {
        v.try_into().expect("length N")
    }

    proptest! {
        #![proptest_config(Config::with_cases(256))]

        /// The f32 kernel equals the f64 formula. Scores are sums of A terms bounded by |energy|
        /// (≤ 2·11), so f32 rounding and exp_f32's 2 ulp leave alignment errors of a few 1e-6
        /// and contexts (convex combinations of values in [−2, 2]) within 1e-5; a wrong mask,
        /// sign or index moves them by O(0.1).
        #[test]
        fn additive_matches_naive((valid, memory, keys, query, energy) in memory_case()) {
            let s = valid.len();
            let (memory, keys) = (rows::<M>(&memory), rows::<A>(&keys));
            let (query, energy) = (arr::<A>(&query), arr::<A>(&energy));
            let (mut al, mut al_naive) = (vec![0.0; s], vec![0.0; s]);
            let (mut c, mut c_naive) = ([0.0; M], [0.0; M]);
            additive_attention(&query, keys, memory, &valid, &energy, &mut al, &mut c);
            additive_attention_naive(&query, keys, memory, &valid, &energy, &mut al_naive, &mut c_naive);
            prop_assert!(max_diff(&al, &al_naive) <= 1e-5, "{al:?} vs {al_naive:?}");
            prop_assert!(max_diff(&c, &c_naive) <= 1e-5, "{c:?} vs {c_naive:?}");
            for (a, v) in al.iter().zip(&valid) {
                prop_assert!(*v || *a == 0.0, "padding got weight {a}");
            }
        }

        #[test]
        fn location_matches_naive(
            (valid, memory, _keys, _q, _e) in memory_case(),
            extra in 0usize..4,
            seed in prop::collection::vec(-4.0f32..4.0, 28),
        ) {
            let s = valid.len();
            let logits = &seed[..s + extra];
            let memory = rows::<M>(&memory);
            let (mut al, mut al_naive) = (vec![0.0; s], vec![0.0; s]);
            let (mut c, mut c_naive) = ([0.0; M], [0.0; M]);
            location_attention(logits, memory, &valid, &mut al, &mut c);
            location_attention_naive(logits, memory, &valid, &mut al_naive, &mut c_naive);
            prop_assert!(max_diff(&al, &al_naive) <= 1e-5);
            prop_assert!(max_diff(&c, &c_naive) <= 1e-5);
            prop_assert!((al.iter().sum::<f32>() - 1.0).abs() <= 1e-5, "renormalised over real positions");
        }

        #[test]
        fn location_sensitive_matches_naive(
            (valid, memory, keys, query, energy) in memory_case(),
            half in 0usize..4,
            cumulative in any::<bool>(),
            weights in prop::collection::vec(-1.0f32..1.0, F * 2 * 7 + F * A),
            alignments in prop::collection::vec(0.0f32..1.0, 2 * 24),
        ) {
            let (s, kernel, channels) = (valid.len(), 2 * half + 1, 1 + cumulative as usize);
            let (memory, keys) = (rows::<M>(&memory), rows::<A>(&keys));
            let (query, energy) = (arr::<A>(&query), arr::<A>(&energy));
            let conv = &weights[..F * channels * kernel];
            let filters = LocationFilters::<F> { conv, dense_t: &weights[F * 2 * 7..], channels, kernel };
            // Zero at padding, as the alignment state keeps them.
            let zeroed = |x: &[f32]| -> Vec<f32> { x.iter().zip(&valid).map(|(&a, &v)| if v { a } else { 0.0 }).collect() };
            let previous = zeroed(&alignments[..s]);
            let cum = zeroed(&alignments[24..24 + s]);
            let cum = cumulative.then_some(&cum[..]);
            let (mut al, mut al_naive) = (vec![0.0; s], vec![0.0; s]);
            let (mut c, mut c_naive) = ([0.0; M], [0.0; M]);
            location_sensitive_attention(&query, keys, memory, &valid, &energy, filters, &previous, cum, &mut al, &mut c);
            location_sensitive_attention_naive(
                &query, keys, memory, &valid, &energy, filters, &previous, cum, &mut al_naive, &mut c_naive,
            );
            prop_assert!(max_diff(&al, &al_naive) <= 1e-5, "{al:?} vs {al_naive:?}");
            prop_assert!(max_diff(&c, &c_naive) <= 1e-5, "{c:?} vs {c_naive:?}");
        }
    }

    /// Numerical stability: scores far apart (softmax of [1234, 0]) and a lone real position.
    #[test]
    fn extreme_scores_and_single_position() {
        let memory = [[1.0f32; M], [2.0; M]];
        let (mut al, mut c) = ([0.0f32; 2], [0.0f32; M]);
        location_attention(&[1234.0, 0.0], &memory, &[true, true], &mut al, &mut c);
        assert_eq!(al, [1.0, 0.0]);
        assert_eq!(c, [1.0; M]);
        location_attention(&[1234.0, 0.0], &memory, &[false, true], &mut al, &mut c);
        assert_eq!(al, [0.0, 1.0]);
        assert_eq!(c, [2.0; M]);
    }

    /// A centred conv: the feature at j reads j − 1, j, j + 1 for kernel 3 (a one-hot previous
    /// alignment at position 1 shows up at positions 0, 1, 2 with the taps reversed).
    #[test]
    fn location_conv_is_centred() {
        const A1: usize = 1;
        let conv = [1.0f32, 10.0, 100.0]; // one filter, one channel, taps t = 0, 1, 2
        let filters = LocationFilters::<1> { conv: &conv, dense_t: &[1.0], channels: 1, kernel: 3 };
        let memory = [[0.0f32; M]; 3];
        let keys = [[0.0f32; A1]; 3];
        let previous = [0.0, 1.0, 0.0];
        let (mut al, mut c) = ([0.0f32; 3], [0.0f32; M]);
        // energy 1 and tanh: scores tanh(f_j) with f = [100 (t = 2 reads j + 1), 10, 1].
        location_sensitive_attention(
            &[0.0],
            &keys,
            &memory,
            &[true; 3],
            &[1.0],
            filters,
            &previous,
            None,
            &mut al,
            &mut c,
        );
        let e = [100f32.tanh(), 10f32.tanh(), 1f32.tanh()].map(f32::exp);
        let sum: f32 = e.iter().sum();
        for (a, e) in al.iter().zip(e) {
            assert!((a - e / sum).abs() < 1e-6, "{al:?}");
        }
    }
}
