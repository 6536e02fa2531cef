//! clip-train's command line against OpenCLIP's own argparse, and bad flags.
mod common;
use common::python;
use std::path::Path;
use std::process::Command;

#[test]
fn parses_every_case_as_openclip_does() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/compare-flags.py");
    let out = Command::new(python())
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_clip-train"))
        .output()
        .expect("run compare-flags.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// Runs clip-train in an empty folder; returns (status, stderr, files left there).
fn run_in_empty_dir(args: &[&str]) -> (i32, String, usize) {
    let dir = std::env::temp_dir().join(format!(
        "clip-train-flags-{}-{}",
        std::process::id(),
        args.join("_").len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clip-train"))
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap();
    let left = std::fs::read_dir(&dir).unwrap().count();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        left,
    )
}

#[test]
fn bad_flags_are_one_line_exit_2_and_write_nothing() {
    for (args, culprit) in [
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["--batch-size", "many"], "many"),
        (vec!["--precision", "fp8"], "fp8"),
        (vec!["--aug-cfg", "scale=(0.5, 1.0"], "scale=(0.5, 1.0"),
        (vec!["--aug-cfg", "re_prob"], "re_prob"),
    ] {
        let (code, stderr, left) = run_in_empty_dir(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(culprit),
            "{args:?} should name {culprit}: {stderr}"
        );
        assert_eq!(left, 0, "{args:?} wrote files");
    }
}
