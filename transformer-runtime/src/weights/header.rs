//! Parsing and validating a safetensors header into a table of byte ranges.
//!
//! The parsing proper is safetensors' own ([`SafeTensors::read_metadata`]), which checks the header
//! length against the buffer, the JSON, that the data offsets tile the data section exactly and
//! that each tensor's byte count matches its dtype and shape. Around it this module adds:
//!
//! - a scan run *before* it that rejects integers too large to be an offset or a dimension: with
//!   offsets near `usize::MAX` the parser's final size check overflows, which panics in builds with
//!   overflow checks (tests, debug);
//! - a scan for tensor names given twice (a JSON object may repeat a key, and a map keeps only
//!   the last, which would silently drop a tensor the file claims to hold);
//! - a re-check of every tensor's range against the real buffer, with checked arithmetic, after
//!   it, so the slicing done by the loader never depends on the parser's guarantees alone.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

/// Length of the little-endian header-size prefix.
const PREFIX: usize = 8;

/// One tensor of the file: its storage type, shape and absolute byte range in the buffer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Which file of a sharded checkpoint holds it (0 for a single file).
    pub(crate) shard: usize,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Parses and validates the header of `bytes`; on failure returns the reason, for
/// [`WeightError::Format`](super::WeightError::Format).
pub(crate) fn parse(bytes: &[u8]) -> Result<BTreeMap<String, Entry>, String> {
    reject_huge_integers(bytes)?;
    reject_duplicate_names(bytes)?;
    let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let data_start = header_len.checked_add(PREFIX).ok_or_else(|| "invalid header length".to_string())?;

    let mut table = BTreeMap::new();
    for (name, info) in metadata.tensors() {
        let (from, to) = info.data_offsets;
        let range = data_start
            .checked_add(from)
            .zip(data_start.checked_add(to))
            .filter(|&(start, end)| start <= end && end <= bytes.len());
        let Some((start, end)) = range else {
            return Err(format!(
                "data offsets [{from}, {to}] of tensor `{}` lie outside the file",
                name.escape_debug()
            ));
        };
        let byte_len = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .map(|bits| bits.div_ceil(8));
        if byte_len != Some(end - start) {
            return Err(format!(
                "tensor `{}`: {} bytes do not hold a {} tensor of shape {:?}",
                name.escape_debug(),
                end - start,
                info.dtype,
                info.shape
            ));
        }
        table.insert(name, Entry { shard: 0, dtype: info.dtype, shape: info.shape.clone(), start, end });
    }
    Ok(table)
}

/// Rejects a header that names one tensor twice. Headers that are not readable JSON are left to
/// the parser to report.
fn reject_duplicate_names(bytes: &[u8]) -> Result<(), String> {
    let Some(header) = header_bytes(bytes) else {
        return Ok(());
    };
    let mut duplicate = None;
    let mut deserializer = serde_json::Deserializer::from_slice(header);
    // A parse failure here is reported by the real parser, with its own reason.
    let _ = serde::Deserializer::deserialize_map(&mut deserializer, FirstDuplicate(&mut duplicate));
    match duplicate {
        Some(name) => Err(format!("tensor `{}` is named twice in the header", name.escape_debug())),
        None => Ok(()),
    }
}

/// A map visitor that records the first key it sees twice.
struct FirstDuplicate<'a>(&'a mut Option<String>);

impl<'de> serde::de::Visitor<'de> for FirstDuplicate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            if !seen.insert(name.clone()) {
                *self.0 = Some(name);
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The JSON header of a safetensors buffer, if its length prefix fits the buffer.
fn header_bytes(bytes: &[u8]) -> Option<&[u8]> {
    let prefix = bytes.get(..PREFIX)?;
    let mut len_bytes = [0u8; PREFIX];
    len_bytes.copy_from_slice(prefix);
    let header_len = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
    bytes.get(PREFIX..PREFIX.checked_add(header_len)?)
}

/// Rejects a header whose JSON holds, outside strings, an integer literal above `isize::MAX`.
///
/// No real offset or dimension is that large (no buffer can be), and keeping every offset at or
/// below it keeps `offset + 8 + header length` (header length ≤ 100 MB) from overflowing in the
/// parser. Headers that are too short, not UTF-8 or not JSON are left to the parser to report.
fn reject_huge_integers(bytes: &[u8]) -> Result<(), String> {
    let Some(header) = header_bytes(bytes) else {
        return Ok(());
    };

    let limit = isize::MAX as u64;
    let mut in_string = false;
    let mut escaped = false;
    // The value of the digit run being read (0 between runs).
    let mut number: u64 = 0;
    for &b in header {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b.is_ascii_digit() {
            number = number
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .filter(|&n| n <= limit)
                .ok_or_else(|| {
                    "the header holds an integer too large for any offset or dimension".to_string()
                })?;
        } else {
            number = 0;
            in_string = b == b'"';
        }
    }
    Ok(())
}
