//! Checkpoint writes under fire: a SIGKILL in the middle of one, and a second preemption signal
//! during the save the first one started. Neither may leave a checkpoint that `--resume latest`
//! trips over, and the resumed run must still end bitwise equal to an uninterrupted one.
mod common;
use common::{assert_bitwise_equal, ok, signal, tempdir, SIGKILL, SIGTERM, SIGUSR1};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");
/// `clip_tiny` (its 49408-token embedding makes a ~20 MB checkpoint, slow enough to be caught
/// mid-write) on 50 steps of synthetic data.
fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    common::run_args(
        &[
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "400",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--lr",
            "1e-3",
            "--warmup",
            "5",
            "--log-every-n-steps",
            "1",
            "--seed",
            "9",
            "--model",
            "clip_tiny",
        ],
        name,
        logs,
        extra,
    )
}

/// The unfinished checkpoint write in `dir`, if one is in progress.
fn temp_file(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with('.')
                && p.to_string_lossy().contains(".tmp-")
        })
}

/// Polls `dir` until a checkpoint write is in progress or the child exits.
fn wait_for_write(child: &mut Child, dir: &Path) -> Option<PathBuf> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(300) {
        if let Some(t) = temp_file(dir) {
            return Some(t);
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!("no checkpoint write within 300 s");
}

fn every_checkpoint_verifies(dir: &Path) -> usize {
    let found = clip_train::checkpoint::candidates(dir);
    for p in &found {
        clip_train::checkpoint::load(p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
    }
    found.len()
}

#[test]
fn sigkill_during_a_checkpoint_write_then_resume_is_exact() {
    let logs = tempdir("sigkill");
    ok(&args(&logs, "ref", &[]));
    let reference = logs.join("ref/checkpoints/epoch_1.safetensors");
    // Retry until the kill lands inside a write (the temp file survives it).
    for attempt in 0..8 {
        let name = format!("victim{attempt}");
        let ckpts = logs.join(&name).join("checkpoints");
        let mut child = Command::new(BIN)
            .args(args(&logs, &name, &["--save-every-n-steps", "1"]))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let a few checkpoints land first, then kill during the next write.
        let t0 = Instant::now();
        while !ckpts.join("step_3.safetensors").exists() {
            assert!(t0.elapsed().as_secs() < 300, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        let Some(_) = wait_for_write(&mut child, &ckpts) else {
            continue;
        };
        signal(&child, SIGKILL);
        child.wait().unwrap();
        if temp_file(&ckpts).is_none() {
            continue; // the rename won the race
        }
        assert!(every_checkpoint_verifies(&ckpts) >= 3);
        let mut resume = args(&logs, &name, &["--save-every-n-steps", "1"]);
        resume.extend(["--resume".into(), "latest".into()]);
        let out = ok(&resume);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("a checkpoint write that never finished"),
            "{err}"
        );
        assert!(
            temp_file(&ckpts).is_none(),
            "the stale temp file is removed"
        );
        assert_bitwise_equal(&ckpts.join("epoch_1.safetensors"), &reference);
        let _ = std::fs::remove_dir_all(&logs);
        return;
    }
    panic!("never killed the process inside a checkpoint write in 8 attempts");
}

#[test]
fn a_second_signal_during_the_preemption_save_changes_nothing() {
    let logs = tempdir("twosignals");
    ok(&args(&logs, "ref", &[]));
    let reference = logs.join("ref/checkpoints/epoch_1.safetensors");
    for attempt in 0..8 {
        let name = format!("pre{attempt}");
        let run_dir = logs.join(&name);
        let mut child = Command::new(BIN)
            .args(args(&logs, &name, &[]))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !std::fs::read_to_string(run_dir.join("out.log"))
            .unwrap_or_default()
            .contains("Train Epoch: 0 [ 24/400")
        {
            assert!(t0.elapsed().as_secs() < 300, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, SIGUSR1);
        let caught = wait_for_write(&mut child, &run_dir.join("checkpoints")).is_some();
        if caught {
            signal(&child, SIGTERM);
            signal(&child, SIGUSR1);
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{err}");
        assert_eq!(every_checkpoint_verifies(&run_dir.join("checkpoints")), 1);
        assert!(temp_file(&run_dir.join("checkpoints")).is_none());
        if !caught {
            continue;
        }
        let mut resume = args(&logs, &name, &[]);
        resume.extend(["--resume".into(), "latest".into()]);
        ok(&resume);
        assert_bitwise_equal(&run_dir.join("checkpoints/epoch_1.safetensors"), &reference);
        let _ = std::fs::remove_dir_all(&logs);
        return;
    }
    panic!("never signalled the process inside its preemption save in 8 attempts");
}
