//! Embedding tables: rows looked up by id and summed into the hidden state.

use crate::WeightLoader;

/// A `[rows, D]` lookup table (token, position or token-type embeddings).
#[derive(Clone, Debug)]
pub struct Embedding<const D: usize> {
    table: Vec<f32>,
}

impl<const D: usize> Embedding<D> {
    /// Loads `{name}` of shape `[rows, D]`.
    pub fn load(loader: &mut WeightLoader, name: &str, rows: usize) -> Self {
        Self { table: loader.take(name, &[rows, D]) }
    }

    /// Loads `{name}` stored with the checkpoint's own `shape` (e.g. ViT's `cls_token` `[1, 1, D]`
    /// or `position_embeddings` `[1, N + 1, D]`) and keeps it as a `[rows, D]` table. The shape is
    /// checked exactly by the loader (a `[1, N + 1, D]` tensor is not accepted for `[N + 1, D]`).
    ///
    /// # Panics
    ///
    /// If the product of `shape` is not `rows·D` (a bug in the caller, not in the file).
    pub fn load_shaped(loader: &mut WeightLoader, name: &str, rows: usize, shape: &[usize]) -> Self {
        let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(
            elements,
            rows.checked_mul(D),
            "tensor `{name}` of shape {shape:?} cannot be viewed as a [{rows}, {D}] table"
        );
        Self { table: loader.take(name, shape) }
    }

    /// Row `id` of the table.
    ///
    /// # Panics
    ///
    /// If `id` is not below [`rows`](Self::rows).
    pub fn row(&self, id: usize) -> &[f32; D] {
        &self.table.as_chunks::<D>().0[id]
    }

    /// Number of rows in the table.
    pub fn rows(&self) -> usize {
        self.table.len() / D
    }

    /// `out = table[id]`. The id was validated against the table size with the batch.
    pub fn copy_row(&self, id: usize, out: &mut [f32; D]) {
        *out = *self.row(id);
    }

    /// `out += table[id]`.
    pub fn add_row(&self, id: usize, out: &mut [f32; D]) {
        for (o, t) in out.iter_mut().zip(self.row(id)) {
            *o += t;
        }
    }
}

/// The fixed sine/cosine position table of "Attention Is All You Need", computed at load:
/// `PE[p, 2i] = sin(p / 10000^(2i/D))`, `PE[p, 2i+1] = cos(p / 10000^(2i/D))`.
#[derive(Clone, Debug)]
pub struct SinusoidalPositions<const D: usize> {
    table: Embedding<D>,
}

impl<const D: usize> SinusoidalPositions<D> {
    /// The table for positions `0..max_positions`.
    pub fn new(max_positions: usize) -> Self {
        let mut table = vec![0.0f32; max_positions * D];
        for p in 0..max_positions {
            for i in 0..D {
                // Computed in f64 so long positions keep their precision.
                let freq = (10000f64).powf(-((i - i % 2) as f64) / D as f64);
                let angle = p as f64 * freq;
                table[p * D + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
            }
        }
        Self { table: Embedding { table } }
    }

    /// `out += PE[position]`.
    pub fn add_row(&self, position: usize, out: &mut [f32; D]) {
        self.table.add_row(position, out);
    }
}
