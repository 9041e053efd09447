//! Every trainable tensor of a model in one flat buffer, under its checkpoint name.
//!
//! A generated trainer lays its parameters out once, at compile time: each tensor has a fixed
//! offset, its gradient sits at the same offset of a second buffer of the same length, and the
//! optimizer's moments follow the same order ([`ParamTable::optimizer_specs`]). Tensors that a
//! fused layer reads together (BERT's query, key and value; LLaMA's gate and up projections) are
//! laid out one after another, weights first and biases after, so the fused `[Q | K | V]` weight is
//! one contiguous `[out, in]` slice. A tied head has no tensor of its own: it reads the token
//! embeddings' slice and its gradient accumulates there.
//!
//! Tensors are held as the layers compute with them (`[out, in]` for a linear); a checkpoint that
//! stores one transposed (GPT-2's `Conv1D`, `[in, out]`) is transposed at load and back at save, so
//! a saved model loads in Hugging Face transformers under the names it was read from.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::optim::ParamSpec;
use crate::weights::{WeightError, WeightLoader};
use crate::Result;

/// How a checkpoint stores a tensor relative to the trainer's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The same shape and order.
    AsIs,
    /// A 2-D tensor stored transposed: the trainer's `[rows, cols]` is the checkpoint's
    /// `[cols, rows]` (GPT-2's `Conv1D`).
    Transposed,
}

/// How a tensor starts when a model is trained from scratch: as Hugging Face's `_init_weights`
/// does for GPT-2, LLaMA and BERT (`initializer_range` 0.02).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation (matrices and embeddings).
    Normal(f32),
    /// All zeros (biases, LayerNorm shifts).
    Zeros,
    /// All ones (norm scales).
    Ones,
}

/// One trainable tensor: its checkpoint name, its shape in the trainer's layout, how the
/// checkpoint stores it, whether weight decay applies (matrices and embeddings, not norms or
/// biases) and how it starts from scratch.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub stored: Stored,
    pub decay: bool,
    pub init: Init,
}

impl TensorSpec {
    pub fn new(name: String, shape: &[usize], stored: Stored, decay: bool, init: Init) -> Self {
        TensorSpec { name, shape: shape.to_vec(), stored, decay, init }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape the checkpoint stores.
    pub fn stored_shape(&self) -> Vec<usize> {
        match self.stored {
            Stored::AsIs => self.shape.clone(),
            Stored::Transposed => self.shape.iter().rev().copied().collect(),
        }
    }

    /// Values as the checkpoint stores them (`stored_shape`) in the trainer's layout.
    pub fn from_stored(&self, stored: Vec<f32>) -> Vec<f32> {
        match self.stored {
            Stored::AsIs => stored,
            Stored::Transposed => transpose(&stored, self.shape[1], self.shape[0]),
        }
    }

    /// Values in the trainer's layout as the checkpoint stores them.
    pub fn to_stored(&self, values: &[f32]) -> Vec<f32> {
        match self.stored {
            Stored::AsIs => values.to_vec(),
            Stored::Transposed => transpose(values, self.shape[0], self.shape[1]),
        }
    }
}

/// A row-major `[rows, cols]` matrix as `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(data.len(), rows * cols, "transpose: {} values are not [{rows}, {cols}]", data.len());
    (0..cols).flat_map(|c| (0..rows).map(move |r| data[r * cols + c])).collect()
}

/// The layout of a model's parameters: each tensor's spec and offset in the flat buffers.
#[derive(Clone, Debug)]
pub struct ParamTable {
    specs: Vec<TensorSpec>,
    offsets: Vec<usize>,
    len: usize,
}

impl ParamTable {
    /// The tensors in order; each starts where the previous one ends.
    pub fn new(specs: Vec<TensorSpec>) -> Self {
        let mut offsets = Vec::with_capacity(specs.len());
        let mut len = 0;
        for spec in &specs {
            offsets.push(len);
            len += spec.len();
        }
        ParamTable { specs, offsets, len }
    }

    /// Values in the flat buffers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// The range of the tensor named `name` in the flat buffers.
    pub fn range_of(&self, name: &str) -> Option<Range<usize>> {
        let i = self.specs.iter().position(|s| s.name == name)?;
        Some(self.offsets[i]..self.offsets[i] + self.specs[i].len())
    }

    /// Every tensor's name and range, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (&str, Range<usize>)> {
        self.specs.iter().zip(&self.offsets).map(|(s, &o)| (s.name.as_str(), o..o + s.len()))
    }

    /// The optimizer's view: one [`ParamSpec`] per tensor, in the decay group or not.
    pub fn optimizer_specs(&self) -> Vec<ParamSpec> {
        self.specs
            .iter()
            .map(|s| {
                if s.decay {
                    ParamSpec::decay(&s.name, s.len())
                } else {
                    ParamSpec::no_decay(&s.name, s.len())
                }
            })
            .collect()
    }

    /// Takes every tensor from `loader` into one flat buffer, transposing those stored transposed.
    /// Problems are recorded in `loader` (call `loader.finish()`); a missing tensor reads as zeros.
    pub fn load(&self, loader: &mut WeightLoader) -> Vec<f32> {
        let mut data = Vec::with_capacity(self.len);
        for spec in &self.specs {
            // `take` gives the stored shape's values even for a missing tensor (zeros).
            data.extend(spec.from_stored(loader.take(&spec.name, &spec.stored_shape())));
        }
        data
    }

    /// Every tensor drawn as its [`Init`] says, from a generator seeded with `seed` (the same seed
    /// gives the same parameters on every machine).
    pub fn init(&self, seed: u64) -> Vec<f32> {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Box–Muller: two uniforms in (0, 1] give one standard normal (the second is dropped to
        // keep the stream simple).
        let mut standard_normal = move || {
            let (u1, u2): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let mut data = Vec::with_capacity(self.len);
        for spec in &self.specs {
            match spec.init {
                Init::Zeros => data.resize(data.len() + spec.len(), 0.0),
                Init::Ones => data.resize(data.len() + spec.len(), 1.0),
                Init::Normal(std) => data.extend((0..spec.len()).map(|_| std * standard_normal())),
            }
        }
        data
    }

    /// `data` (this layout) as a safetensors file under the checkpoint's names and shapes.
    pub fn to_safetensors(&self, data: &[f32], metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        assert_eq!(
            data.len(),
            self.len,
            "parameter buffer of {} values for a table of {}",
            data.len(),
            self.len
        );
        let stored: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .ranges()
            .zip(&self.specs)
            .map(|((name, range), spec)| {
                let bytes = spec.to_stored(&data[range]).iter().flat_map(|x| x.to_le_bytes()).collect();
                (name.to_string(), spec.stored_shape(), bytes)
            })
            .collect();
        let views = stored
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes).map(|view| (name.as_str(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(unsaveable)?;
        safetensors::serialize(views, metadata).map_err(unsaveable)
    }

    /// Writes `data` to `path` as [`Self::to_safetensors`] does, with `{"format": "pt"}` metadata
    /// (what transformers' `save_pretrained` writes).
    pub fn save(&self, data: &[f32], path: &Path) -> Result<()> {
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        let bytes = self.to_safetensors(data, Some(metadata))?;
        std::fs::write(path, bytes).map_err(|source| WeightError::Io { path: path.into(), source }.into())
    }
}

/// A serialisation failure (a shape that does not match its bytes: a bug of the table).
fn unsaveable(e: safetensors::SafeTensorError) -> crate::Error {
    WeightError::Format { path: "(parameters to save)".into(), reason: e.to_string() }.into()
}

/// Two disjoint ranges of `buffer`, mutably (a linear's weight and bias gradients). Panics when
/// they overlap: the generated layout never makes them.
pub fn two_mut(buffer: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&mut [f32], &mut [f32]) {
    assert!(a.end <= b.start || b.end <= a.start, "ranges {a:?} and {b:?} overlap");
    if a.start < b.start {
        let (lo, hi) = buffer.split_at_mut(b.start);
        (&mut lo[a], &mut hi[..b.end - b.start])
    } else {
        let (lo, hi) = buffer.split_at_mut(a.start);
        let b_part = &mut lo[b];
        (&mut hi[..a.end - a.start], b_part)
    }
}

/// A slice of the flat buffer as the fixed-width array a kernel takes. Panics on a length that is
/// not `N` (the generated offsets make it so).
pub fn array<const N: usize>(slice: &[f32]) -> &[f32; N] {
    let len = slice.len();
    slice.try_into().unwrap_or_else(|_| panic!("{len} parameters where {N} were laid out"))
}

/// [`array`], mutably.
pub fn array_mut<const N: usize>(slice: &mut [f32]) -> &mut [f32; N] {
    let len = slice.len();
    slice.try_into().unwrap_or_else(|_| panic!("{len} gradients where {N} were laid out"))
}
