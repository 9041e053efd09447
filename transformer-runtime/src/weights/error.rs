//! The problems a weight file can have, and the error that lists them.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem with one tensor (or with the file's tensor set).
#[derive(Debug, Clone, PartialEq)]
pub enum WeightProblem {
    /// The model asked for the tensor (with [`WeightLoader::take`](super::WeightLoader::take))
    /// and the file does not have it.
    Missing { name: String, expected_shape: Vec<usize> },
    /// The file has the tensor, with another shape than the model's.
    ShapeMismatch { name: String, expected: Vec<usize>, found: Vec<usize> },
    /// The tensor is stored in a type other than F32, F16 or BF16.
    UnsupportedDtype { name: String, dtype: String },
    /// In the file, never asked for nor ignored.
    Unexpected { name: String },
    /// A NaN or infinite value, at this flat (row-major) index: the first offending one.
    NonFinite { name: String, index: usize },
    /// The file has the tensor under two generations of names (see
    /// [`WeightLoader::rename`](super::WeightLoader::rename)): `name` would be read as `other`,
    /// which the file also has.
    TwoNames { name: String, other: String },
}

impl WeightProblem {
    /// The name of the tensor the problem is about.
    pub fn name(&self) -> &str {
        match self {
            WeightProblem::Missing { name, .. }
            | WeightProblem::ShapeMismatch { name, .. }
            | WeightProblem::UnsupportedDtype { name, .. }
            | WeightProblem::Unexpected { name }
            | WeightProblem::NonFinite { name, .. }
            | WeightProblem::TwoNames { name, .. } => name,
        }
    }
}

impl fmt::Display for WeightProblem {
    /// One line, e.g. "tensor `pooler.dense.bias`: missing (expected shape [384])".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor `{}`: ", Escaped(self.name()))?;
        match self {
            WeightProblem::Missing { expected_shape, .. } => {
                write!(f, "missing (expected shape {expected_shape:?})")
            }
            WeightProblem::ShapeMismatch { expected, found, .. } => {
                write!(f, "expected shape {expected:?}, found {found:?}")
            }
            WeightProblem::UnsupportedDtype { dtype, .. } => {
                write!(f, "unsupported dtype {} (supported: F32, F16, BF16)", Escaped(dtype))
            }
            WeightProblem::Unexpected { .. } => f.write_str("in the file but not used by this model"),
            WeightProblem::NonFinite { index, .. } => {
                write!(f, "non-finite value (NaN or infinity) at flat index {index}")
            }
            WeightProblem::TwoNames { other, .. } => write!(
                f,
                "the file also has `{}`, the same tensor under the other generation of names: a checkpoint uses one",
                Escaped(other)
            ),
        }
    }
}

/// Everything wrong with a weight file, listed together.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be opened or memory-mapped.
    #[error("cannot read weight file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a well-formed safetensors file (header, offsets, sizes).
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    /// Display: a first line "N problems with the weights in <path>:" then one line per problem,
    /// e.g. "  - tensor `encoder.layer.0.attention.self.query.weight`: expected shape [384, 384], found [384, 383]"
    ///      "  - tensor `pooler.dense.bias`: missing (expected shape [384])"
    ///      "  - tensor `foo`: in the file but not used by this model"
    #[error("{}", display_problems(.path, .problems))]
    Problems { path: PathBuf, problems: Vec<WeightProblem> },
}

impl WeightError {
    /// The problems listed by a [`WeightError::Problems`]; empty for the other variants.
    pub fn problems(&self) -> &[WeightProblem] {
        match self {
            WeightError::Problems { problems, .. } => problems,
            _ => &[],
        }
    }

    /// The file (or label) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            WeightError::Io { path, .. }
            | WeightError::Format { path, .. }
            | WeightError::Problems { path, .. } => path,
        }
    }
}

fn display_problems(path: &Path, problems: &[WeightProblem]) -> String {
    use fmt::Write as _;
    let n = problems.len();
    let mut out =
        format!("{n} problem{} with the weights in {}:", if n == 1 { "" } else { "s" }, path.display());
    for problem in problems {
        // Writing to a String cannot fail.
        let _ = write!(out, "\n  - {problem}");
    }
    out
}

/// Displays a string from the (untrusted) file with control characters escaped, so a tensor
/// name cannot break the one-line-per-problem layout of the message.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}
