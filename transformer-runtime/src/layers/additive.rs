//! Additive and location attention as an encoder-decoder's cross-attention sublayer, over a padded
//! batch of targets and the encoded batch of sources they attend to:
//!
//! - [`Bahdanau`]: `e_j = energyᵀ tanh(W_q s + W_k h_j + b)`;
//! - [`LuongLocation`]: `α = softmax(W_a s + b_a)` over a fixed maximum source length, restricted
//!   to each sequence's real positions and renormalised over them;
//! - [`LocationSensitive`]: Bahdanau's scores plus `U f_j`, `f = conv(previous alignment [,
//!   cumulative alignment])` (Chorowski et al. 2015; Tacotron 2 with the cumulative channel),
//!   whose alignment recurs over target positions and is carried in an [`AlignmentState`].
//!
//! Each kind has `load(loader, prefix)` (checkpoint names under `prefix`, as
//! `scripts/reference/additive.py` names them), `forward` (teacher-forced, every target row) and
//! `step` (one new row per sequence, for generation); the additive kinds also have
//! `project_memory`, run once per source like cross-attention K/V. Outputs go to caller buffers:
//! `alignments` (`rows × sources.seq_len()`, zeros at padding) and `context` (`rows` rows of the
//! memory width `M`: `Σ α_j h_j`, the raw memory rows).
//!
//! **No value projection.** Bahdanau's context is the raw memory (annotations); a value
//! projection `W_v h_j + b_v` would give `W_v c + b_v` because the weights sum to 1, so a model
//! that has one applies it to the context (one row per query, not one per memory row) with a
//! plain [`Linear`] after this layer, as the reference does with `cross_out`.
//!
//! Target rows after a sequence's last real token (right padding) get zero context and zero
//! alignment and, for [`LocationSensitive`], do not advance its alignment.

use crate::kernels::additive::{
    additive_attention, location_attention, location_sensitive_attention, LocationFilters,
};
use crate::layers::{into_array, Linear};
use crate::{Activation, Batch, Threads, WeightLoader};

/// The memory one batch of targets attends to: the encoder's rows for a batch of sources
/// (`sources.rows()` rows of `M`, right-padded as `sources` says).
#[derive(Clone, Copy, Debug)]
pub struct Memory<'a, const M: usize> {
    rows: &'a [[f32; M]],
    sources: &'a Batch,
}

impl<'a, const M: usize> Memory<'a, M> {
    /// # Panics
    ///
    /// If `rows` is not one row per source position.
    pub fn new(rows: &'a [[f32; M]], sources: &'a Batch) -> Self {
        assert_eq!(
            rows.len(),
            sources.rows(),
            "additive attention: {} memory rows for a source batch of {} × {}",
            rows.len(),
            sources.batch_size(),
            sources.seq_len()
        );
        Self { rows, sources }
    }

    /// The encoded sources.
    pub fn sources(&self) -> &'a Batch {
        self.sources
    }

    /// Sequence `b`'s memory rows up to its last real one, and their mask.
    fn of(&self, b: usize) -> (&'a [[f32; M]], &'a [bool]) {
        let (seq, extent) = (self.sources.seq_len(), self.sources.extent_of(b));
        (&self.rows[b * seq..b * seq + extent], &self.sources.mask_of(b)[..extent])
    }
}

/// The target rows of a call: `forward`'s padded batch, or `step`'s one row per sequence.
#[derive(Clone, Copy)]
enum Targets<'a> {
    Batch(&'a Batch),
    Step(usize),
}

impl Targets<'_> {
    fn batch_size(&self) -> usize {
        match self {
            Targets::Batch(b) => b.batch_size(),
            Targets::Step(n) => *n,
        }
    }

    fn seq_len(&self) -> usize {
        match self {
            Targets::Batch(b) => b.seq_len(),
            Targets::Step(_) => 1,
        }
    }

    /// Rows of sequence `b` that are real (the rest are right padding).
    fn extent_of(&self, b: usize) -> usize {
        match self {
            Targets::Batch(batch) => batch.extent_of(b),
            Targets::Step(_) => 1,
        }
    }
}

/// Asserts the buffers of a call: `queries`, `scratch` and `context` one row per target row,
/// `alignments` `rows × sources.seq_len()`, as many target sequences as sources.
fn check_call(
    what: &str,
    targets: Targets<'_>,
    sources: &Batch,
    lens: [(&str, usize); 3],
    alignments: usize,
) {
    assert_eq!(
        targets.batch_size(),
        sources.batch_size(),
        "{what}: {} target sequences but {} sources",
        targets.batch_size(),
        sources.batch_size()
    );
    let rows = targets.batch_size() * targets.seq_len();
    for (name, len) in lens {
        assert_eq!(len, rows, "{what}: {name} has {len} rows, the targets have {rows}");
    }
    assert_eq!(
        alignments,
        rows * sources.seq_len(),
        "{what}: alignments hold {alignments} floats, expected target rows × source length = {rows} × {}",
        sources.seq_len()
    );
}

/// Runs `row(b, t, alignment, context)` for every real target row `t` of every sequence `b`,
/// sequences in parallel; zeroes the alignment and context of padding rows.
fn per_row<const M: usize>(
    targets: Targets<'_>,
    source_len: usize,
    alignments: &mut [f32],
    context: &mut [[f32; M]],
    threads: &Threads,
    row: impl Fn(usize, usize, &mut [f32], &mut [f32; M]) + Send + Sync,
) {
    let seq = targets.seq_len();
    threads.for_each_chunk_pair(alignments, seq * source_len, context, seq, |b, al_seq, ctx_seq| {
        let extent = targets.extent_of(b);
        for (t, (al, ctx)) in al_seq.chunks_exact_mut(source_len).zip(ctx_seq.iter_mut()).enumerate() {
            al.fill(0.0);
            if t < extent {
                row(b, t, al, ctx);
            } else {
                ctx.fill(0.0);
            }
        }
    });
}

/// Bahdanau's additive attention: `e_j = energyᵀ tanh(W_q s + W_k h_j + b)` over the real source
/// positions. `D`: the query (decoder state) width, `M`: the memory width, `A`: the attention
/// width.
#[derive(Clone, Debug)]
pub struct Bahdanau<const D: usize, const M: usize, const A: usize> {
    /// `{prefix}.query.weight` `[A, D]`, no bias.
    query: Linear<D, A>,
    /// `{prefix}.key.weight` `[A, M]` and `{prefix}.key.bias` `[A]`: the bias `b` of the
    /// scores, paid once per source.
    key: Linear<M, A>,
    /// `{prefix}.energy.weight` `[1, A]` (a bias there would shift every score alike: none).
    energy: Box<[f32; A]>,
}

impl<const D: usize, const M: usize, const A: usize> Bahdanau<D, M, A> {
    /// Loads `{prefix}.query.weight`, `{prefix}.key.{weight,bias}` and `{prefix}.energy.weight`.
    pub fn load(loader: &mut WeightLoader, prefix: &str) -> Self {
        Self {
            query: Linear::load(loader, &format!("{prefix}.query"), false),
            key: Linear::load(loader, &format!("{prefix}.key"), true),
            energy: into_array(loader.take(&format!("{prefix}.energy.weight"), &[1, A])),
        }
    }

    /// `keys[r] = W_k·memory[r] + b` for every memory row: once per batch of sources.
    pub fn project_memory(&self, memory: &[[f32; M]], keys: &mut [[f32; A]], threads: &Threads) {
        assert_eq!(
            keys.len(),
            memory.len(),
            "Bahdanau: {} key rows for {} memory rows",
            keys.len(),
            memory.len()
        );
        self.key.forward(memory, keys, Activation::Identity, threads);
    }

    /// Teacher-forced: every row of the right-padded `targets` (`queries`: `targets.rows()`
    /// decoder states) attends to its source's memory. `keys` from [`project_memory`]; `scratch`
    /// receives the projected queries.
    ///
    /// [`project_memory`]: Self::project_memory
    pub fn forward(
        &self,
        queries: &[[f32; D]],
        targets: &Batch,
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        self.attend(queries, Targets::Batch(targets), memory, keys, scratch, alignments, context, threads);
    }

    /// One generation step: one query row per sequence (`queries.len() == sources`).
    pub fn step(
        &self,
        queries: &[[f32; D]],
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        let targets = Targets::Step(queries.len());
        self.attend(queries, targets, memory, keys, scratch, alignments, context, threads);
    }

    fn attend(
        &self,
        queries: &[[f32; D]],
        targets: Targets<'_>,
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        let sources = memory.sources();
        let lens = [("queries", queries.len()), ("scratch", scratch.len()), ("context", context.len())];
        check_call("Bahdanau", targets, sources, lens, alignments.len());
        assert_eq!(
            keys.len(),
            sources.rows(),
            "Bahdanau: {} keys for {} memory rows",
            keys.len(),
            sources.rows()
        );
        self.query.forward(queries, scratch, Activation::Identity, threads);
        let (scratch, seq, mseq) = (&*scratch, targets.seq_len(), sources.seq_len());
        per_row(targets, mseq, alignments, context, threads, |b, t, al, ctx| {
            let (rows, valid) = memory.of(b);
            let keys = &keys[b * mseq..b * mseq + rows.len()];
            additive_attention(
                &scratch[b * seq + t],
                keys,
                rows,
                valid,
                &self.energy,
                &mut al[..rows.len()],
                ctx,
            );
        });
    }
}

/// Luong's "location" attention: `α = softmax(W_a s + b_a)` with `W_a` `[S_MAX, D]`, one logit per
/// source position up to `S_MAX`; each sequence keeps the logits of its real positions and
/// renormalises over them (positions past its length, and padding, get weight 0).
#[derive(Clone, Debug)]
pub struct LuongLocation<const D: usize, const M: usize, const S_MAX: usize> {
    /// `{prefix}.location.weight` `[S_MAX, D]` and `{prefix}.location.bias` `[S_MAX]`.
    location: Linear<D, S_MAX>,
}

impl<const D: usize, const M: usize, const S_MAX: usize> LuongLocation<D, M, S_MAX> {
    /// Loads `{prefix}.location.weight` and `{prefix}.location.bias`.
    pub fn load(loader: &mut WeightLoader, prefix: &str) -> Self {
        Self { location: Linear::load(loader, &format!("{prefix}.location"), true) }
    }

    /// Teacher-forced: every row of the right-padded `targets` attends to its source's memory;
    /// `scratch` receives the location logits. Sources longer than `S_MAX` are a caller bug
    /// (asserted): validate them against the model's maximum source length first.
    pub fn forward(
        &self,
        queries: &[[f32; D]],
        targets: &Batch,
        memory: Memory<'_, M>,
        scratch: &mut [[f32; S_MAX]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        self.attend(queries, Targets::Batch(targets), memory, scratch, alignments, context, threads);
    }

    /// One generation step: one query row per sequence.
    pub fn step(
        &self,
        queries: &[[f32; D]],
        memory: Memory<'_, M>,
        scratch: &mut [[f32; S_MAX]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        self.attend(queries, Targets::Step(queries.len()), memory, scratch, alignments, context, threads);
    }

    fn attend(
        &self,
        queries: &[[f32; D]],
        targets: Targets<'_>,
        memory: Memory<'_, M>,
        scratch: &mut [[f32; S_MAX]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        let sources = memory.sources();
        let lens = [("queries", queries.len()), ("scratch", scratch.len()), ("context", context.len())];
        check_call("Luong location", targets, sources, lens, alignments.len());
        assert!(
            sources.seq_len() <= S_MAX,
            "Luong location: sources of {} positions, the location layer scores at most {S_MAX}",
            sources.seq_len()
        );
        self.location.forward(queries, scratch, Activation::Identity, threads);
        let (scratch, seq, mseq) = (&*scratch, targets.seq_len(), sources.seq_len());
        per_row(targets, mseq, alignments, context, threads, |b, t, al, ctx| {
            let (rows, valid) = memory.of(b);
            location_attention(&scratch[b * seq + t], rows, valid, &mut al[..rows.len()], ctx);
        });
    }
}

/// Which alignments the location filters read: Chorowski et al.'s previous alignment, or
/// Tacotron 2's previous and cumulative alignments as two channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlignmentChannels {
    Previous,
    PreviousAndCumulative,
}

impl AlignmentChannels {
    fn count(self) -> usize {
        match self {
            AlignmentChannels::Previous => 1,
            AlignmentChannels::PreviousAndCumulative => 2,
        }
    }
}

/// What a [`LocationSensitive`] layer carries between target positions, per source sequence: the
/// previous alignment and the cumulative one (both zero before the first position). Allocated
/// once per batch of sources; `forward` resets it and leaves it after each sequence's last real
/// target row, so `step` continues a teacher-forced prefix.
#[derive(Clone, Debug)]
pub struct AlignmentState {
    /// Per sequence `[previous (seq) | cumulative (seq)]`.
    data: Vec<f32>,
    batch: usize,
    seq: usize,
}

impl AlignmentState {
    /// Zero alignments for `sources` (its batch size and padded length).
    pub fn new(sources: &Batch) -> Self {
        let (batch, seq) = (sources.batch_size(), sources.seq_len());
        Self { data: vec![0.0; batch * 2 * seq], batch, seq }
    }

    /// Zeroed and shaped for `sources`, in this state's memory (no allocation when it is as large).
    pub fn reshape(&mut self, sources: &Batch) {
        let (batch, seq) = (sources.batch_size(), sources.seq_len());
        self.data.clear();
        self.data.resize(batch * 2 * seq, 0.0);
        (self.batch, self.seq) = (batch, seq);
    }

    /// Back to before the first target position.
    pub fn reset(&mut self) {
        self.data.fill(0.0);
    }

    /// Sequence `b` back to before its first target position.
    ///
    /// # Panics
    ///
    /// If `b` is not a sequence of the state.
    pub fn reset_sequence(&mut self, b: usize) {
        assert!(b < self.batch, "alignment state: sequence {b} of {}", self.batch);
        self.data[b * 2 * self.seq..(b + 1) * 2 * self.seq].fill(0.0);
    }

    /// Whether the state has the shape of `sources` (batch size and padded length).
    pub fn fits(&self, sources: &Batch) -> bool {
        self.batch == sources.batch_size() && self.seq == sources.seq_len()
    }

    /// Padded source length the state was made for.
    pub fn source_len(&self) -> usize {
        self.seq
    }

    /// Sequence `b`'s alignment of its last attended target row (zeros before any).
    pub fn previous(&self, b: usize) -> &[f32] {
        &self.data[b * 2 * self.seq..][..self.seq]
    }

    /// Sequence `b`'s sum of all its alignments so far.
    pub fn cumulative(&self, b: usize) -> &[f32] {
        &self.data[(b * 2 + 1) * self.seq..][..self.seq]
    }
}

/// Alignment states a location-sensitive model keeps for its teacher-forced passes, one set per
/// concurrent caller, so that repeated passes reuse their memory (like
/// [`crate::workspace::WorkspacePool`]).
#[derive(Debug, Default)]
pub struct AlignmentPool {
    free: std::sync::Mutex<Vec<Vec<AlignmentState>>>,
}

impl AlignmentPool {
    /// `layers` zeroed states shaped for `sources`, in the memory of a set given back earlier
    /// (allocated only when none is free or it is too small).
    pub fn take(&self, layers: usize, sources: &Batch) -> Vec<AlignmentState> {
        // States hold nothing a panic could leave half-valid (each is reshaped before use), so a
        // poisoned lock is still usable.
        let mut states = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        states.resize_with(layers, || AlignmentState::new(sources));
        for state in &mut states {
            state.reshape(sources);
        }
        states
    }

    /// Gives a set back for later passes.
    pub fn put(&self, states: Vec<AlignmentState>) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(states);
    }
}

/// Location-sensitive attention (Chorowski et al. 2015; Tacotron 2): `e_j = energyᵀ tanh(W_q s +
/// W_k h_j + b + U f_j)`, `f = conv(previous [, cumulative])` with `F` filters of an odd width
/// (zero padding centred). After each target row the state takes `previous = α`,
/// `cumulative += α`.
#[derive(Clone, Debug)]
pub struct LocationSensitive<const D: usize, const M: usize, const A: usize, const F: usize> {
    scores: Bahdanau<D, M, A>,
    /// `{prefix}.location_conv.weight` `[F, channels, kernel]`, no bias.
    conv: Vec<f32>,
    /// `{prefix}.location_dense.weight` `[A, F]` (no bias), stored transposed `[F, A]`.
    dense_t: Vec<f32>,
    channels: AlignmentChannels,
    kernel: usize,
}

impl<const D: usize, const M: usize, const A: usize, const F: usize> LocationSensitive<D, M, A, F> {
    /// Loads [`Bahdanau`]'s tensors plus `{prefix}.location_conv.weight` and
    /// `{prefix}.location_dense.weight`.
    ///
    /// # Panics
    ///
    /// If `kernel` is even (the model's declaration is wrong, not the file).
    pub fn load(loader: &mut WeightLoader, prefix: &str, channels: AlignmentChannels, kernel: usize) -> Self {
        assert!(kernel % 2 == 1, "location-sensitive attention: kernel width {kernel} is not odd (centred)");
        let conv = loader.take(&format!("{prefix}.location_conv.weight"), &[F, channels.count(), kernel]);
        let dense = loader.take(&format!("{prefix}.location_dense.weight"), &[A, F]);
        let dense_t = (0..F * A).map(|i| dense[(i % A) * F + i / A]).collect();
        Self { scores: Bahdanau::load(loader, prefix), conv, dense_t, channels, kernel }
    }

    /// `keys[r] = W_k·memory[r] + b`, once per batch of sources.
    pub fn project_memory(&self, memory: &[[f32; M]], keys: &mut [[f32; A]], threads: &Threads) {
        self.scores.project_memory(memory, keys, threads);
    }

    /// Teacher-forced: resets `state`, then runs every sequence's real target rows in order
    /// (each row's alignment feeds the next row's location features); leaves `state` after each
    /// sequence's last real row.
    pub fn forward(
        &self,
        queries: &[[f32; D]],
        targets: &Batch,
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        state: &mut AlignmentState,
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        state.reset();
        self.attend(
            queries,
            Targets::Batch(targets),
            memory,
            keys,
            state,
            scratch,
            alignments,
            context,
            threads,
        );
    }

    /// Cached decoding: every real row of the right-padded `targets` (new tokens of each
    /// sequence) continues `state` where the previous call left it, so a prefix run by
    /// [`forward`](Self::forward) and then continued row by row, or in several batches, gives
    /// the alignments of one teacher-forced run.
    pub fn forward_continued(
        &self,
        queries: &[[f32; D]],
        targets: &Batch,
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        state: &mut AlignmentState,
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        self.attend(
            queries,
            Targets::Batch(targets),
            memory,
            keys,
            state,
            scratch,
            alignments,
            context,
            threads,
        );
    }

    /// One generation step: one query row per sequence, continuing `state`.
    pub fn step(
        &self,
        queries: &[[f32; D]],
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        state: &mut AlignmentState,
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        let targets = Targets::Step(queries.len());
        self.attend(queries, targets, memory, keys, state, scratch, alignments, context, threads);
    }

    fn attend(
        &self,
        queries: &[[f32; D]],
        targets: Targets<'_>,
        memory: Memory<'_, M>,
        keys: &[[f32; A]],
        state: &mut AlignmentState,
        scratch: &mut [[f32; A]],
        alignments: &mut [f32],
        context: &mut [[f32; M]],
        threads: &Threads,
    ) {
        let sources = memory.sources();
        let what = "location-sensitive attention";
        let lens = [("queries", queries.len()), ("scratch", scratch.len()), ("context", context.len())];
        check_call(what, targets, sources, lens, alignments.len());
        assert_eq!(
            keys.len(),
            sources.rows(),
            "{what}: {} keys for {} memory rows",
            keys.len(),
            sources.rows()
        );
        assert!(
            state.batch == sources.batch_size() && state.seq == sources.seq_len(),
            "{what}: alignment state for {} × {} sources, the memory has {} × {}",
            state.batch,
            state.seq,
            sources.batch_size(),
            sources.seq_len()
        );
        self.scores.query.forward(queries, scratch, Activation::Identity, threads);
        let (scratch, seq, mseq) = (&*scratch, targets.seq_len(), sources.seq_len());
        let filters = LocationFilters::<F> {
            conv: &self.conv,
            dense_t: &self.dense_t,
            channels: self.channels.count(),
            kernel: self.kernel,
        };
        let cumulative = self.channels == AlignmentChannels::PreviousAndCumulative;
        let run = |b: usize, st: &mut [f32], al_seq: &mut [f32], ctx_seq: &mut [[f32; M]]| {
            let (rows, valid) = memory.of(b);
            let (n, extent) = (rows.len(), targets.extent_of(b));
            let keys = &keys[b * mseq..b * mseq + n];
            let (previous, cum) = st.split_at_mut(mseq);
            for (t, (al, ctx)) in al_seq.chunks_exact_mut(mseq).zip(ctx_seq.iter_mut()).enumerate() {
                al.fill(0.0);
                if t >= extent {
                    ctx.fill(0.0);
                    continue;
                }
                let cum_in = cumulative.then_some(&cum[..n]);
                let (energy, q) = (&self.scores.energy, &scratch[b * seq + t]);
                let al = &mut al[..n];
                location_sensitive_attention(
                    q,
                    keys,
                    rows,
                    valid,
                    energy,
                    filters,
                    &previous[..n],
                    cum_in,
                    al,
                    ctx,
                );
                previous[..n].copy_from_slice(al);
                for (c, a) in cum[..n].iter_mut().zip(al.iter()) {
                    *c += a;
                }
            }
        };
        for_each_sequence(threads, &mut state.data, 2 * mseq, alignments, seq * mseq, context, seq, &run);
    }
}

/// Runs `f(b, a_b, b_b, c_b)` over the `i`-th chunks of three slices (chunk lengths `a_len`,
/// `b_len`, `c_len`), halving the range under [`Threads::join`]: parallel over sequences without
/// allocating a task list.
fn for_each_sequence<X: Send, Y: Send, Z: Send>(
    threads: &Threads,
    a: &mut [X],
    a_len: usize,
    b: &mut [Y],
    b_len: usize,
    c: &mut [Z],
    c_len: usize,
    f: &(impl Fn(usize, &mut [X], &mut [Y], &mut [Z]) + Sync),
) {
    fn go<X: Send, Y: Send, Z: Send>(
        threads: &Threads,
        first: usize,
        n: usize,
        (a, b, c): (&mut [X], &mut [Y], &mut [Z]),
        lens: (usize, usize, usize),
        f: &(impl Fn(usize, &mut [X], &mut [Y], &mut [Z]) + Sync),
    ) {
        if n == 1 || threads.count() == 1 {
            for i in 0..n {
                let (ra, rb, rc) = (
                    i * lens.0..(i + 1) * lens.0,
                    i * lens.1..(i + 1) * lens.1,
                    i * lens.2..(i + 1) * lens.2,
                );
                f(first + i, &mut a[ra], &mut b[rb], &mut c[rc]);
            }
            return;
        }
        let half = n / 2;
        let (a0, a1) = a.split_at_mut(half * lens.0);
        let (b0, b1) = b.split_at_mut(half * lens.1);
        let (c0, c1) = c.split_at_mut(half * lens.2);
        threads.join(
            || go(threads, first, half, (a0, b0, c0), lens, f),
            || go(threads, first + half, n - half, (a1, b1, c1), lens, f),
        );
    }
    let n = c.len() / c_len.max(1);
    if n > 0 {
        go(threads, 0, n, (a, b, c), (a_len, b_len, c_len), f);
    }
}
