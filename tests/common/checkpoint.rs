//! A checkpoint directory with its config.json changed, for tests of the config checks. Kept out
//! of `common/mod.rs`, which the fuzz targets include (they have no `serde_json`).
#![allow(dead_code)]

/// A copy of the checkpoint directory `from` under the system temp dir (removed when dropped) whose
/// config.json has `patch`'s keys set (a `null` removes the key): the same weights, a config that
/// says something else.
pub struct PatchedCheckpoint(pub std::path::PathBuf);

impl PatchedCheckpoint {
    pub fn new(from: &std::path::Path, name: &str, patch: serde_json::Value) -> Self {
        let dir = std::env::temp_dir().join(format!("transformer-patched-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        for entry in std::fs::read_dir(from).expect("the fixture directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(path.file_name().expect("a file name"))).expect("copy");
            }
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).expect("the fixture has a config.json");
        let mut config: serde_json::Value = serde_json::from_str(&text).expect("config.json parses");
        let object = config.as_object_mut().expect("config.json is an object");
        for (key, value) in patch.as_object().expect("the patch is an object") {
            if value.is_null() {
                object.remove(key);
            } else {
                object.insert(key.clone(), value.clone());
            }
        }
        std::fs::write(&config_path, config.to_string()).expect("write config.json");
        PatchedCheckpoint(dir)
    }
}

impl Drop for PatchedCheckpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of a config mismatch error after its first (one per differing key).
pub fn config_differences(error: &transformer::Error) -> Vec<String> {
    error.to_string().lines().skip(1).map(|l| l.trim_start_matches("  - ").to_string()).collect()
}
