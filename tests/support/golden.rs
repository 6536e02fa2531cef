//! Shared by the integration tests that compare with OpenCLIP (included with `#[path]`, next to
//! `skip.rs`): goldens that Python makes are cached under `.deps/golden/`, keyed by what makes
//! them, so a routine run needs no Python and no OpenCLIP.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::skip::skip;

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

/// Runs `python ARGS`; its stdout, or a panic showing its stderr.
pub fn run_python<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let out = Command::new(python())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `scripts/NAME` and what the golden scripts read beside it (`openclip_tiny_inputs`).
pub fn script_inputs(name: &str) -> Vec<PathBuf> {
    [
        vec![root().join("scripts").join(name)],
        openclip_tiny_inputs(),
    ]
    .concat()
}

/// What `import openclip_tiny` reads: the module and the tiny model configs it registers.
pub fn openclip_tiny_inputs() -> Vec<PathBuf> {
    [
        "scripts/openclip_tiny.py",
        "configs/clip_tiny_test.json",
        "configs/clip_tiny.json",
        "configs/vit_tiny_test.json",
    ]
    .iter()
    .map(|p| root().join(p))
    .collect()
}

/// The folder of golden `name`: `$CLIP_GOLDEN_DIR` (default `.deps/golden`)`/NAME-HASH`, where
/// HASH is the SHA-256 of the contents of `inputs` (the scripts that make it and the files they
/// read), of `scripts/requirements.txt` (the pinned OpenCLIP and torch) and of `args`. Made by
/// `make(folder)` (which runs Python) only when missing, then kept: a change to any of those makes
/// it again, anything else reuses it. `None` (after a loud skip) when it is missing and there is
/// no Python to make it.
pub fn golden(
    name: &str,
    inputs: &[PathBuf],
    args: &[&str],
    make: impl FnOnce(&Path),
) -> Option<PathBuf> {
    let mut h = Sha256::new();
    for path in inputs
        .iter()
        .chain([&root().join("scripts/requirements.txt")])
    {
        let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Lengths first: no two different input lists hash the same bytes.
        h.update(f.metadata().unwrap().len().to_le_bytes());
        std::io::copy(&mut f, &mut h).unwrap();
    }
    for a in args {
        h.update((a.len() as u64).to_le_bytes());
        h.update(a.as_bytes());
    }
    let hash: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = std::env::var_os("CLIP_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/golden"));
    let done = dir.join(format!("{name}-{hash}"));
    if done.is_dir() {
        return Some(done);
    }
    // One golden made at a time in this process: two tests of one binary asking for the same
    // missing golden would otherwise share the temporary folder below (named by the process),
    // one renaming it away under the other. The second waits, then finds it made.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if done.is_dir() {
        return Some(done);
    }
    if !python().exists() {
        skip(&format!(
            "golden {} is not cached and there is no Python at {} to make it (set CLIP_PYTHON, or \
             run scripts/setup.sh)",
            done.display(),
            python().display()
        ));
        return None;
    }
    eprintln!("golden {}: not cached, made by Python", done.display());
    // Made aside and renamed into place: an interrupted or failed `make` leaves nothing that
    // a later run would take for the golden.
    let tmp = dir.join(format!(".{name}-{hash}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    make(&tmp);
    if std::fs::rename(&tmp, &done).is_err() {
        // Another test process made it meanwhile: theirs is the same.
        assert!(done.is_dir(), "cannot move {} into place", tmp.display());
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Some(done)
}
