//! Helpers shared by clip-train's integration tests.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tch::Tensor;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with OpenCLIP: `$CLIP_PYTHON`, else the project venv's.
pub fn python() -> PathBuf {
    std::env::var_os("CLIP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// A fresh, empty folder for one test.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clip-train-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tensor named `name` (shared storage).
pub fn get(tensors: &[(String, Tensor)], name: &str) -> Tensor {
    tensors
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
        .shallow_clone()
}
