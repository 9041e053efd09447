//! `y = act(x·Wᵀ + b)` with static widths: a packed-weights GEMM whose bias + activation epilogue is
//! fused into the output pass, run in row blocks across threads — or, when there are too few rows
//! for that (a decode step), in column-panel ranges across threads.

use std::ops::Range;

use crate::kernels::activation::Activation;
use crate::kernels::gemm::{matmul_packed, matmul_packed_cols, Epilogue, GemmIsa, PackedB};
use crate::{Threads, WeightLoader};

/// Rows per GEMM task: a multiple of every microkernel's tile height except AVX2's 6 (whose blocks
/// end in one 4-row tile), large enough to amortise streaming the packed weight through cache once
/// per block, small enough that a 128-token sequence still splits across two cores.
const ROW_BLOCK: usize = 64;

/// Up to this many rows (exactly the counts for which the row split makes a single task), a
/// multi-threaded forward splits the output columns instead. Bounds the stack arrays of row
/// sub-slices [`split_columns`] builds (16 bytes each).
const COL_SPLIT_MAX_ROWS: usize = ROW_BLOCK;

/// A linear layer from `IN` to `OUT` features.
#[derive(Clone, Debug)]
pub struct Linear<const IN: usize, const OUT: usize> {
    /// Wᵀ (`[IN, OUT]`), packed once at load into the column panels the GEMM microkernel of this
    /// CPU streams.
    weight: PackedB,
    bias: Option<Vec<f32>>,
}

impl<const IN: usize, const OUT: usize> Linear<IN, OUT> {
    /// Loads `{prefix}.weight` (`[OUT, IN]`, as `nn.Linear` stores it) and, if `bias`, `{prefix}.bias`.
    pub fn load(loader: &mut WeightLoader, prefix: &str, bias: bool) -> Self {
        Self::load_fused(loader, &[prefix], bias)
    }

    /// Loads several `nn.Linear`s with the same input and concatenates their outputs, e.g. the query,
    /// key and value projections into one `[IN, 3·D]` GEMM. Each part has `OUT / parts` outputs.
    pub fn load_fused(loader: &mut WeightLoader, prefixes: &[&str], bias: bool) -> Self {
        assert!(
            !prefixes.is_empty() && OUT.is_multiple_of(prefixes.len()),
            "{OUT} outputs cannot be split into {} equal parts",
            prefixes.len()
        );
        let part = OUT / prefixes.len();
        let mut weights = Vec::with_capacity(prefixes.len());
        let mut fused_bias = bias.then(|| Vec::with_capacity(OUT));
        for prefix in prefixes {
            weights.push(loader.take(&format!("{prefix}.weight"), &[part, IN]));
            if let Some(b) = &mut fused_bias {
                b.extend(loader.take(&format!("{prefix}.bias"), &[part]));
            }
        }
        // Output column o is row o % part of part o / part's `[part, IN]` weight; packed straight
        // from that layout, without materialising the transpose.
        let weight =
            PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| weights[o / part][(o % part) * IN + i]);
        Self { weight, bias: fused_bias }
    }

    /// Loads several `nn.Linear`s with the same input and outputs of the given sizes, concatenated:
    /// grouped-query attention's Q (`heads·HD`), K and V (`kv_heads·HD` each) as one GEMM.
    pub fn load_concat(loader: &mut WeightLoader, parts: &[(&str, usize)], bias: bool) -> Self {
        assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), OUT, "parts must add up to {OUT} outputs");
        // Output column o belongs to the part whose range holds it; `starts[p]` is part p's first.
        let starts: Vec<usize> =
            parts.iter().scan(0, |acc, p| Some(std::mem::replace(acc, *acc + p.1))).collect();
        let weights: Vec<Vec<f32>> = parts
            .iter()
            .map(|&(prefix, rows)| loader.take(&format!("{prefix}.weight"), &[rows, IN]))
            .collect();
        let bias = bias.then(|| {
            parts.iter().flat_map(|&(prefix, rows)| loader.take(&format!("{prefix}.bias"), &[rows])).collect()
        });
        let part_of = |o: usize| starts.iter().rposition(|&s| s <= o).expect("o < OUT lies in some part");
        let weight = PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| {
            let p = part_of(o);
            weights[p][(o - starts[p]) * IN + i]
        });
        Self { weight, bias }
    }

    /// Loads GPT-2's `Conv1D`: `{prefix}.weight` stored `[IN, OUT]` (already the GEMM's
    /// orientation) and, if `bias`, `{prefix}.bias`.
    pub fn load_conv1d(loader: &mut WeightLoader, prefix: &str, bias: bool) -> Self {
        let weight = loader.take(&format!("{prefix}.weight"), &[IN, OUT]);
        let bias = bias.then(|| loader.take(&format!("{prefix}.bias"), &[OUT]));
        Self { weight: PackedB::pack(&weight, IN, OUT), bias }
    }

    /// Loads a patch embedding's `Conv2d(kernel = stride = patch)`: `{prefix}.weight` stored
    /// `[OUT, channels, patch, patch]`, which is `nn.Linear`'s `[OUT, IN]` over patches unfolded in
    /// (channel, row, column) order, and `{prefix}.bias`.
    pub fn load_conv2d(
        loader: &mut WeightLoader,
        prefix: &str,
        channels: usize,
        patch: usize,
        bias: bool,
    ) -> Self {
        assert_eq!(channels * patch * patch, IN, "a {channels}×{patch}×{patch} patch is not {IN} inputs");
        let weight = loader.take(&format!("{prefix}.weight"), &[OUT, channels, patch, patch]);
        let bias = bias.then(|| loader.take(&format!("{prefix}.bias"), &[OUT]));
        Self { weight: PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| weight[o * IN + i]), bias }
    }

    /// Loads BLOOM's fused `{prefix}.query_key_value`-style projection, whose `[OUT, IN]` rows are
    /// ordered `[heads, 3, head_dim]` (each head's query, key and value rows together), as the
    /// `[Q | K | V]` columns the attention reads: output `t·(OUT/3) + h·hd + d` is row
    /// `h·3·hd + t·hd + d`.
    pub fn load_head_interleaved(loader: &mut WeightLoader, prefix: &str, heads: usize, bias: bool) -> Self {
        assert!(
            heads > 0 && OUT.is_multiple_of(3 * heads),
            "{OUT} outputs do not split into 3 × {heads} heads"
        );
        let (width, hd) = (OUT / 3, OUT / 3 / heads);
        let row = |o: usize| {
            let (t, h, d) = (o / width, (o % width) / hd, o % hd);
            h * 3 * hd + t * hd + d
        };
        let weight = loader.take(&format!("{prefix}.weight"), &[OUT, IN]);
        let bias = bias.then(|| {
            let b = loader.take(&format!("{prefix}.bias"), &[OUT]);
            (0..OUT).map(|o| b[row(o)]).collect()
        });
        let weight = PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| weight[row(o) * IN + i]);
        Self { weight, bias }
    }

    /// Loads rows `first..first + OUT` of `nn.MultiheadAttention`'s packed projection:
    /// `{prefix}_weight` (`[total, IN]`: Q, K and V stacked) and, if `bias`, `{prefix}_bias`
    /// (`[total]`). A cross-attention takes its query (`first = 0`) and its keys and values
    /// (`first = d`) from the same tensors.
    pub fn load_in_proj(
        loader: &mut WeightLoader,
        prefix: &str,
        total: usize,
        first: usize,
        bias: bool,
    ) -> Self {
        assert!(first + OUT <= total, "rows {first}..{} lie outside the {total} packed rows", first + OUT);
        let weight = loader.take(&format!("{prefix}_weight"), &[total, IN]);
        let bias =
            bias.then(|| loader.take(&format!("{prefix}_bias"), &[total])[first..first + OUT].to_vec());
        let weight = PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| weight[(first + o) * IN + i]);
        Self { weight, bias }
    }

    /// Loads `{prefix}.weight` (`[OUT, IN]`) with the bias taken from another tensor stored
    /// `[1, OUT]`: BART's head, tied to the shared embeddings, plus its `final_logits_bias`.
    pub fn load_bias_at(loader: &mut WeightLoader, prefix: &str, bias: &str) -> Self {
        let weight = loader.take(&format!("{prefix}.weight"), &[OUT, IN]);
        let bias = loader.take(bias, &[1, OUT]);
        Self {
            weight: PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| weight[o * IN + i]),
            bias: Some(bias),
        }
    }

    /// Loads the tensor `weight` (`[OUT, IN]`) with the bias stored under another name, `bias`
    /// (`[OUT]`): Reformer's head, whose bias `lm_head.bias` is saved beside
    /// `lm_head.decoder.weight`.
    pub fn load_with_bias(loader: &mut WeightLoader, weight: &str, bias: &str) -> Self {
        let weight = loader.take(weight, &[OUT, IN]);
        let bias = loader.take(bias, &[OUT]);
        Self {
            weight: PackedB::from_fn(GemmIsa::detected(), IN, OUT, |i, o| weight[o * IN + i]),
            bias: Some(bias),
        }
    }

    /// From a `[IN, OUT]` row-major matrix (already transposed) and an optional bias; for tests and
    /// weights built in code.
    pub fn from_parts(weight_t: Vec<f32>, bias: Option<Vec<f32>>) -> Self {
        assert_eq!(weight_t.len(), IN * OUT, "weight must be [IN = {IN}, OUT = {OUT}]");
        if let Some(b) = &bias {
            assert_eq!(b.len(), OUT, "bias must have OUT = {OUT} elements");
        }
        Self { weight: PackedB::pack(&weight_t, IN, OUT), bias }
    }

    /// `out[r] = act(x[r]·Wᵀ + b)` for every row. Allocates nothing.
    ///
    /// Many rows are split into blocks of [`ROW_BLOCK`] across threads. With at most one block's
    /// worth (decoding: m = batch) and more than one thread, the column panels of W are split
    /// instead, so every thread streams a disjoint part of the weights; see [`split_columns`].
    /// Both splits give bit-identical results.
    pub fn forward(&self, x: &[[f32; IN]], out: &mut [[f32; OUT]], act: Activation, threads: &Threads) {
        assert_eq!(x.len(), out.len(), "linear {IN}->{OUT}: input and output row counts differ");
        let m = out.len();
        let x = x.as_flattened();
        let epilogue = Epilogue::new(self.bias.as_deref(), act);
        let tasks = threads.count();
        if tasks > 1 && (1..=COL_SPLIT_MAX_ROWS).contains(&m) && self.weight.panel_count() > 1 {
            let mut rows: [&mut [f32]; COL_SPLIT_MAX_ROWS] = std::array::from_fn(|_| Default::default());
            for (slot, row) in rows.iter_mut().zip(out.iter_mut()) {
                *slot = row;
            }
            let panels = 0..self.weight.panel_count();
            split_columns(threads, tasks, x, &self.weight, panels, &mut rows[..m], epilogue);
            return;
        }
        threads.for_each_chunk(out.as_flattened_mut(), ROW_BLOCK * OUT, |block, out| {
            let rows = out.len() / OUT;
            let x = &x[block * ROW_BLOCK * IN..][..rows * IN];
            matmul_packed(x, rows, &self.weight, out, epilogue);
        });
    }
}

/// Computes the columns of `panels` for all rows of `x` into `rows` (one slice per output row,
/// holding exactly those columns) as `tasks` parallel tasks over disjoint, contiguous panel ranges.
///
/// Safe and allocation-free: the range is halved recursively, every row slice is split with
/// `split_at_mut` at the matching column into two stack arrays of sub-slices, and the halves run
/// under [`Threads::join`]; a leaf hands its sub-slices to [`matmul_packed_cols`].
fn split_columns(
    threads: &Threads,
    tasks: usize,
    x: &[f32],
    weight: &PackedB,
    panels: Range<usize>,
    rows: &mut [&mut [f32]],
    epilogue: Epilogue<'_>,
) {
    let m = rows.len();
    if tasks <= 1 || panels.len() <= 1 {
        matmul_packed_cols(x, m, weight, panels, rows, epilogue);
        return;
    }
    let left_tasks = tasks / 2;
    let mid = panels.start + panels.len() * left_tasks / tasks;
    let split = weight.panel_cols(panels.start..mid).len();
    let mut left: [&mut [f32]; COL_SPLIT_MAX_ROWS] = std::array::from_fn(|_| Default::default());
    let mut right: [&mut [f32]; COL_SPLIT_MAX_ROWS] = std::array::from_fn(|_| Default::default());
    for ((row, l), r) in rows.iter_mut().zip(&mut left).zip(&mut right) {
        (*l, *r) = std::mem::take(row).split_at_mut(split);
    }
    threads.join(
        || split_columns(threads, left_tasks, x, weight, panels.start..mid, &mut left[..m], epilogue),
        || split_columns(threads, tasks - left_tasks, x, weight, mid..panels.end, &mut right[..m], epilogue),
    );
}
