//! Loading model weights by name from a safetensors file (e.g. a Hugging Face checkpoint).
//!
//! The file is untrusted: its header is validated before any tensor is read, every byte range is
//! checked against the real buffer, nothing is allocated from a size the header claims that was not
//! first matched against the bytes actually present, and nothing in here panics on bad input.
//!
//! A model's `load` asks the [`WeightLoader`] for each of its tensors with [`WeightLoader::take`];
//! problems (missing tensors, wrong shapes, unsupported types, NaNs, leftover tensors) are recorded
//! rather than returned one at a time, and [`WeightLoader::finish`] reports them all in one
//! [`WeightError::Problems`]:
//!
//! ```no_run
//! # use transformer_runtime::weights::{WeightError, WeightLoader};
//! # fn main() -> Result<(), WeightError> {
//! let mut weights = WeightLoader::open("model.safetensors")?;
//! weights.ignore("embeddings.position_ids");
//! let word_embeddings = weights.take("embeddings.word_embeddings.weight", &[30522, 384]);
//! let pooler_bias = weights.take_optional("pooler.dense.bias", &[384]);
//! weights.finish()?; // every problem at once, each naming its tensor
//! # let _ = (word_embeddings, pooler_bias);
//! # Ok(())
//! # }
//! ```

mod error;
mod header;
mod sharded;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

pub use error::{WeightError, WeightProblem};
use header::Entry;

/// The bytes of the file: memory-mapped, or owned (for [`WeightLoader::from_bytes`]).
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// Reads tensors by name from a memory-mapped safetensors file, converting to f32, and records every
/// problem instead of stopping at the first, so a model's `load` can ask for all its tensors and the
/// user sees every mismatch in one error.
///
/// Supported storage types are F32, F16 and BF16 (all converted to f32, little-endian, row-major).
pub struct WeightLoader {
    /// The file, or a sharded checkpoint's index.
    source: PathBuf,
    /// The file's bytes, or each shard's in the index's order.
    shards: Vec<Storage>,
    /// Every tensor of the file(s) by name, with its shard and validated absolute byte range.
    tensors: BTreeMap<String, Entry>,
    /// Names taken (successfully or not) or ignored: not reported as unexpected.
    used: BTreeSet<String>,
    problems: Vec<WeightProblem>,
    allow_non_finite: bool,
    /// Names read under another name ([`WeightLoader::rename`]): ours → the file's, for messages.
    renamed: BTreeMap<String, String>,
}

impl fmt::Debug for WeightLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightLoader")
            .field("source", &self.source)
            .field("bytes", &self.shards.iter().map(|s| s.bytes().len()).sum::<usize>())
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .field("used", &self.used.len())
            .field("problems", &self.problems)
            .field("allow_non_finite", &self.allow_non_finite)
            .finish()
    }
}

impl WeightLoader {
    /// Memory-maps the file at `path` and validates its header (offsets, overlaps, byte counts).
    ///
    /// Fails with [`WeightError::Io`] if the file cannot be opened or mapped and with
    /// [`WeightError::Format`] if it is not a well-formed safetensors file.
    ///
    /// The file must not be modified while the loader is alive (tensors are copied out by
    /// [`take`](Self::take), so only loading itself is concerned).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let io = |source| WeightError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is only ever read as plain bytes, every value of which is valid, and
        // every read is bounds-checked against the map's length. What remains is the hazard of any
        // file-backed map, another process truncating or rewriting the file meanwhile; the
        // documented contract is that the weight file is not modified while the loader is alive.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::new(Storage::Mapped(map), path.to_path_buf())
    }

    /// Opens a checkpoint as Hugging Face saves it in a directory: `model.safetensors`, or the
    /// shards a `model.safetensors.index.json` lists (each shard's header validated, every tensor
    /// in exactly the shard the index names). With neither file, [`WeightError::Io`] names both.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self, WeightError> {
        sharded::open_dir(dir.as_ref())
    }

    /// Opens a sharded checkpoint from its `model.safetensors.index.json` (`weight_map`: tensor
    /// name → shard file beside the index). The index is untrusted like the shards: a shard name
    /// that is not a plain file name, a tensor in another shard than the index says or in two
    /// shards, or a shard with a tensor the index does not list is [`WeightError::Format`].
    pub fn open_sharded(index: impl AsRef<Path>) -> Result<Self, WeightError> {
        sharded::open_index(index.as_ref())
    }

    /// A loader over shards already opened and checked (see [`sharded`]).
    fn from_shards(source: PathBuf, shards: Vec<Storage>, tensors: BTreeMap<String, Entry>) -> Self {
        WeightLoader {
            source,
            shards,
            tensors,
            used: BTreeSet::new(),
            problems: Vec::new(),
            allow_non_finite: false,
            renamed: BTreeMap::new(),
        }
    }

    /// Same as [`open`](Self::open) from bytes already in memory (tests, fuzzing); `label` stands
    /// in for the path in messages.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<Self, WeightError> {
        Self::new(Storage::Owned(bytes), PathBuf::from(label))
    }

    fn new(storage: Storage, source: PathBuf) -> Result<Self, WeightError> {
        match header::parse(storage.bytes()) {
            Ok(tensors) => Ok(Self::from_shards(source, vec![storage], tensors)),
            Err(reason) => Err(WeightError::Format { path: source, reason }),
        }
    }

    /// Reads a checkpoint saved with another generation of module names under the names the model
    /// asks for (transformers 5 renamed ViT's `encoder.layer.{i}.attention.attention.query` to
    /// `layers.{i}.attention.q_proj`). A file is one generation or the other: a tensor present
    /// under both names is [`WeightProblem::TwoNames`]. Messages about a renamed tensor give the
    /// file's name.
    pub fn rename(&mut self, rules: &[Rename]) {
        for rule in rules {
            match *rule {
                Rename::Segments { theirs, ours } => {
                    let names: Vec<String> = self.tensors.keys().cloned().collect();
                    for name in names {
                        if let Some(to) = replace_segments(&name, theirs, ours) {
                            self.move_tensor(&name, to);
                        }
                    }
                }
                Rename::Prefer { theirs, ours } => {
                    if self.tensors.contains_key(theirs) {
                        // The file's own `ours` is a leftover the model it came from never reads.
                        self.tensors.remove(ours);
                        self.move_tensor(theirs, ours.to_string());
                    }
                }
            }
        }
    }

    fn move_tensor(&mut self, from: &str, to: String) {
        if self.tensors.contains_key(&to) {
            record(&mut self.problems, WeightProblem::TwoNames { name: from.to_owned(), other: to });
            return;
        }
        if let Some(entry) = self.tensors.remove(from) {
            let original = self.renamed.remove(from).unwrap_or_else(|| from.to_owned());
            self.renamed.insert(to.clone(), original);
            self.tensors.insert(to, entry);
        }
    }

    /// Reject (the default) or allow NaN and infinite values in the tensors taken from now on.
    pub fn allow_non_finite(&mut self, allow: bool) {
        self.allow_non_finite = allow;
    }

    /// The tensor `name` converted to f32 (row-major), if the file has it with exactly `shape`
    /// (no implicit squeeze: `[1, 384]` is not `[384]`) in a supported type and, unless allowed,
    /// without NaN or infinity. Otherwise records the problem(s) and returns zeros of the expected
    /// size, so loading continues and collects every problem.
    ///
    /// Taking the same name twice (tied weights) returns it again.
    ///
    /// # Panics
    ///
    /// If the product of `shape` overflows `usize` (a bug in the caller, not in the file).
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Vec<f32> {
        match self.take_impl(name, shape, true) {
            Some(values) => values,
            None => zeros(shape),
        }
    }

    /// Like [`take`](Self::take), but a tensor absent from the file is not a problem: returns
    /// `None`. A tensor present with a wrong shape, type or value still is a problem, recorded; it
    /// then returns `Some` of zeros like `take`.
    pub fn take_optional(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        self.take_impl(name, shape, false)
    }

    /// Declares a tensor the model knows and deliberately does not use (e.g. BERT's
    /// `embeddings.position_ids` buffer), so it is not reported as unexpected. Absent is fine.
    pub fn ignore(&mut self, name: &str) {
        self.used.insert(name.to_owned());
    }

    /// Ends loading: `Ok` if no problem was recorded, else [`WeightError::Problems`] listing all of
    /// them in the order they were found, followed by a [`WeightProblem::Unexpected`] for every
    /// tensor in the file never taken nor ignored (sorted by name).
    pub fn finish(self) -> Result<(), WeightError> {
        let WeightLoader { source, tensors, used, mut problems, renamed, .. } = self;
        problems.extend(
            tensors
                .into_keys()
                .filter(|name| !used.contains(name))
                .map(|name| WeightProblem::Unexpected { name: renamed.get(&name).cloned().unwrap_or(name) }),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WeightError::Problems { path: source, problems })
        }
    }

    /// Names of all tensors in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// One tensor's storage type (e.g. `"F32"`, `"BF16"`, `"I64"`) and shape, if the file has it.
    pub fn info(&self, name: &str) -> Option<(String, Vec<usize>)> {
        self.tensors.get(name).map(|entry| (entry.dtype.to_string(), entry.shape.clone()))
    }

    /// Whether the file has a tensor named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The problems recorded so far (without the unexpected tensors, which only
    /// [`finish`](Self::finish) knows).
    pub fn problems(&self) -> &[WeightProblem] {
        &self.problems
    }

    /// The path (or label) used in messages.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// `take` (`required`) and `take_optional` (not): `None` only for an absent tensor.
    fn take_impl(&mut self, name: &str, shape: &[usize], required: bool) -> Option<Vec<f32>> {
        let Some(entry) = self.tensors.get(name) else {
            if required {
                record(
                    &mut self.problems,
                    WeightProblem::Missing { name: name.to_owned(), expected_shape: shape.to_vec() },
                );
            }
            return None;
        };
        if !self.used.contains(name) {
            self.used.insert(name.to_owned());
        }
        let file_name = self.renamed.get(name).cloned().unwrap_or_else(|| name.to_owned());

        let mut ok = true;
        if entry.shape != shape {
            ok = false;
            record(
                &mut self.problems,
                WeightProblem::ShapeMismatch {
                    name: file_name.clone(),
                    expected: shape.to_vec(),
                    found: entry.shape.clone(),
                },
            );
        }
        let format = Format::of(entry.dtype);
        if format.is_none() {
            ok = false;
            record(
                &mut self.problems,
                WeightProblem::UnsupportedDtype { name: file_name.clone(), dtype: entry.dtype.to_string() },
            );
        }
        let (Some(format), true) = (format, ok) else {
            return Some(zeros(shape));
        };

        // The header check guarantees the range is in the buffer and holds exactly the shape's
        // elements; `get` and the length check keep this path panic-free regardless.
        let values = self
            .shards
            .get(entry.shard)
            .and_then(|shard| shard.bytes().get(entry.start..entry.end))
            .map(|bytes| format.to_f32(bytes))
            .filter(|values| values.len() == element_count(shape));
        let Some(values) = values else {
            return Some(zeros(shape));
        };

        if !self.allow_non_finite {
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                record(&mut self.problems, WeightProblem::NonFinite { name: file_name, index });
                return Some(zeros(shape));
            }
        }
        Some(values)
    }
}

/// A rule of [`WeightLoader::rename`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rename {
    /// A name with the dot-separated segments `theirs` (`"layers"`, `"attention.q_proj"`) is
    /// read with `ours` there instead (`"encoder.layer"`, `"attention.attention.query"`).
    Segments { theirs: &'static str, ours: &'static str },
    /// When the file has the tensor `theirs`, it is the one the model reads as `ours`, and the
    /// file's own `ours` is a leftover (the Reformer's head bias as transformers 5 saves it).
    Prefer { theirs: &'static str, ours: &'static str },
}

/// `name` with its first run of segments equal to `theirs` replaced by `ours`, if it has one.
fn replace_segments(name: &str, theirs: &str, ours: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let pattern: Vec<&str> = theirs.split('.').collect();
    let at = parts.windows(pattern.len()).position(|w| w == pattern.as_slice())?;
    let mut out: Vec<&str> = parts[..at].to_vec();
    out.extend(ours.split('.'));
    out.extend(&parts[at + pattern.len()..]);
    Some(out.join("."))
}

/// Records `problem` unless the same one already is (a tied weight taken twice with the same
/// wrong shape is one problem).
fn record(problems: &mut Vec<WeightProblem>, problem: WeightProblem) {
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

fn element_count(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .expect("the expected shape's element count overflows usize")
}

fn zeros(shape: &[usize]) -> Vec<f32> {
    vec![0.0; element_count(shape)]
}

/// The storage types converted to f32.
#[derive(Debug, Clone, Copy)]
enum Format {
    F32,
    F16,
    Bf16,
}

impl Format {
    fn of(dtype: Dtype) -> Option<Format> {
        match dtype {
            Dtype::F32 => Some(Format::F32),
            Dtype::F16 => Some(Format::F16),
            Dtype::BF16 => Some(Format::Bf16),
            _ => None,
        }
    }

    /// Little-endian elements to f32, byte by byte (the data need not be aligned).
    fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Format::F32 => {
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Format::F16 => {
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            Format::Bf16 => {
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
        }
    }
}

/// A checkpoint name from a module prefix and a relative name: `join("encoder.layer.0", "output")`
/// is `encoder.layer.0.output`; an empty side is left out (no stray dots).
pub fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

/// The first of `roots` under which the file has any tensor (checkpoints of one family are saved
/// with or without a wrapper prefix, e.g. `transformer.` for `GPT2LMHeadModel`), or the last root
/// when none matches (so the missing-tensor report names the plainest layout).
pub fn detect_root<'r>(loader: &WeightLoader, roots: &[&'r str]) -> &'r str {
    let names = loader.names();
    roots
        .iter()
        .copied()
        .find(|root| root.is_empty() || names.iter().any(|n| n.starts_with(&format!("{root}."))))
        .or_else(|| roots.last().copied())
        .unwrap_or("")
}
