//! clip-train's command line against OpenCLIP's own argparse, and bad flags.
use crate::common::tempdir;
use crate::golden::{golden, run_python, script_inputs};
use serde_json::Value;
use std::ffi::OsStr;
use std::process::Command;

/// Equal as Python's `==` sees the parsed JSON: numbers by value (`1 == 1.0`), containers
/// element by element.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(Some(x), Some(y)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same(Some(v), y.get(k)))
        }
        (a, b) => a == b,
    }
}

/// OpenCLIP's parse of every case in scripts/compare-flags.py (cached), against
/// `clip-train CASE --print-params`: every value OpenCLIP has, equal (flags only clip-train has
/// aside).
#[test]
fn parses_every_case_as_openclip_does() {
    let inputs = script_inputs("compare-flags.py");
    let Some(dir) = golden("flags", &inputs, &[], |out| {
        let parsed = run_python([inputs[0].as_os_str(), OsStr::new("--openclip")]);
        std::fs::write(out.join("openclip.json"), parsed).unwrap();
    }) else {
        return;
    };
    let gold: Value =
        serde_json::from_slice(&std::fs::read(dir.join("openclip.json")).unwrap()).unwrap();
    let ours_only: Vec<&str> = gold["ours_only"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let cases = gold["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "{gold}");
    let mut failures = Vec::new();
    for case in cases {
        let argv: Vec<&str> = case["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_clip-train"))
            .args(&argv)
            .arg("--print-params")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "clip-train rejected {argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (theirs, ours) = (
            case["openclip"].as_object().unwrap(),
            ours.as_object().unwrap(),
        );
        let keys = theirs
            .keys()
            .chain(ours.keys().filter(|k| !ours_only.contains(&k.as_str())));
        for k in keys {
            if !same(theirs.get(k), ours.get(k)) {
                failures.push(format!(
                    "{argv:?} {k}: openclip={:?} clip-train={:?}",
                    theirs.get(k),
                    ours.get(k)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs clip-train in an empty folder; returns (status, stderr, files left there).
fn run_in_empty_dir(args: &[&str]) -> (i32, String, usize) {
    let dir = tempdir("flags");
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
