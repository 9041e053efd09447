//! Checkpoints as Hugging Face saves them: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (`{"metadata": …, "weight_map": {tensor: shard file}}`).
//!
//! The index is as untrusted as the shards: shard names must be plain file names beside the index
//! (no directories, no `..`), and the index and the shards' own headers must agree exactly — a
//! tensor listed under one shard but stored in another, stored twice, or stored without being
//! listed is a format error naming both, never a silently chosen copy.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::header::{self, Entry};
use super::{Storage, WeightError, WeightLoader};

/// The single-file name Hugging Face saves.
pub const SINGLE: &str = "model.safetensors";
/// The index of a sharded save.
pub const INDEX: &str = "model.safetensors.index.json";

pub(super) fn open_dir(dir: &Path) -> Result<WeightLoader, WeightError> {
    let (single, index) = (dir.join(SINGLE), dir.join(INDEX));
    if single.is_file() {
        WeightLoader::open(single)
    } else if index.is_file() {
        open_index(&index)
    } else {
        Err(WeightError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the directory has neither `{SINGLE}` nor `{INDEX}`"),
            ),
        })
    }
}

pub(super) fn open_index(index: &Path) -> Result<WeightLoader, WeightError> {
    let format = |reason: String| WeightError::Format { path: index.to_path_buf(), reason };
    let text = std::fs::read_to_string(index)
        .map_err(|source| WeightError::Io { path: index.to_path_buf(), source })?;
    let weight_map = weight_map(&text).map_err(format)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    // Shards in first-mention order of the index, each opened once.
    let mut files: Vec<&str> = Vec::new();
    for file in weight_map.values() {
        if !files.contains(&file.as_str()) {
            files.push(file);
        }
    }
    let mut shards = Vec::with_capacity(files.len());
    let mut tensors: BTreeMap<String, Entry> = BTreeMap::new();
    for (shard, &file) in files.iter().enumerate() {
        let path = dir.join(file);
        let storage = map(&path)?;
        let table = header::parse(storage.bytes())
            .map_err(|reason| WeightError::Format { path: path.clone(), reason })?;
        for (name, mut entry) in table {
            match weight_map.get(&name) {
                Some(listed) if listed == file => {}
                Some(listed) => {
                    return Err(format(format!(
                        "tensor `{name}` is stored in `{file}` but the index lists it under `{listed}`"
                    )))
                }
                None => {
                    return Err(format(format!(
                        "shard `{file}` stores tensor `{name}`, which the index does not list"
                    )))
                }
            }
            entry.shard = shard;
            if tensors.insert(name.clone(), entry).is_some() {
                return Err(format(format!("tensor `{name}` is stored in more than one shard")));
            }
        }
        shards.push(storage);
    }
    if let Some((name, file)) = weight_map.iter().find(|(name, _)| !tensors.contains_key(*name)) {
        return Err(format(format!(
            "the index lists tensor `{name}` under `{file}`, which does not store it"
        )));
    }
    Ok(WeightLoader::from_shards(index.to_path_buf(), shards, tensors))
}

/// The index's `weight_map`, its shard names checked to be plain file names.
fn weight_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the index is not JSON: {e}"))?;
    let map = value
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or("the index has no `weight_map` object")?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| format!("`weight_map` entry `{name}` is not a file name"))?;
        if !is_plain_file_name(file) {
            return Err(format!(
                "`weight_map` entry `{name}` names `{file}`: shards must be file names beside the index"
            ));
        }
        out.insert(name.clone(), file.to_string());
    }
    if out.is_empty() {
        return Err("the index's `weight_map` is empty".into());
    }
    Ok(out)
}

fn is_plain_file_name(file: &str) -> bool {
    let path = PathBuf::from(file);
    !file.is_empty()
        && file != "."
        && file != ".."
        && path.file_name().is_some_and(|n| n == file)
        && !file.contains(['/', '\\'])
}

fn map(path: &Path) -> Result<Storage, WeightError> {
    let io = |source| WeightError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    // SAFETY: as in `WeightLoader::open`: the map is only read as plain bytes, every read is
    // bounds-checked, and the documented contract is that the files are not modified while the
    // loader is alive.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Storage::Mapped(map))
}
