//! Checkpoint writes under fire: a SIGKILL in the middle of one, a second preemption signal
//! during the save the first one started, a background write that fails. None may leave a
//! checkpoint that `--resume latest` trips over, and a resumed run must still end bitwise equal
//! to an uninterrupted one.
//!
//! The signal lands inside the write every time: the trainer's test hook
//! (`CLIP_TRAIN_TEST_SIGNAL_IN_CHECKPOINT_WRITE`, in `checkpoint::Snapshot::write`) makes the process
//! kill or stop itself once the temporary file is written, before its fsync and rename.
use crate::common::{
    assert_bitwise_equal, cli, ok, resume_latest, signal, tempdir, wait_until, SIGCONT, SIGKILL,
    SIGSTOP, SIGTERM, SIGUSR1,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");
const HOOK: &str = "CLIP_TRAIN_TEST_SIGNAL_IN_CHECKPOINT_WRITE";

/// The tiny model on 10 steps of synthetic data.
fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --train-num-samples 80 --batch-size 8 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --warmup 5 --log-every-n-steps 1 --seed 9";
    cli(flags, name, logs, extra)
}

/// The unfinished checkpoint write in `dir`, if any.
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
    let every_step = ["--save-every-n-steps", "1"];
    let ckpts = logs.join("victim/checkpoints");
    // Killed while writing step 4, after steps 1 to 3 landed.
    let out = Command::new(BIN)
        .args(args(&logs, "victim", &every_step))
        .env(HOOK, format!("step_4.safetensors:{SIGKILL}"))
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(SIGKILL), "{out:?}");
    let tmp = temp_file(&ckpts).expect("the killed write's temporary file");
    assert!(tmp.to_string_lossy().contains(".step_4.safetensors.tmp-"));
    assert_eq!(every_checkpoint_verifies(&ckpts), 3);

    let out = ok(&resume_latest(&args(&logs, "victim", &every_step)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a checkpoint write that never finished"),
        "{err}"
    );
    assert!(err.contains("step 3)"), "resumed from step 3: {err}");
    assert!(
        temp_file(&ckpts).is_none(),
        "the stale temp file is removed"
    );
    assert_bitwise_equal(&ckpts.join("epoch_1.safetensors"), &reference);
    let _ = std::fs::remove_dir_all(&logs);
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "PID (COMM) STATE …": the state follows the last parenthesis.
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .starts_with('T')
}

/// SIGUSR1 arrives during a scheduled save (step 3), the preemption save follows at the next
/// step boundary, and SIGTERM + SIGUSR1 arrive during that one: it finishes, and the run exits 75
/// having written nothing more.
#[test]
fn a_second_signal_during_the_preemption_save_changes_nothing() {
    let logs = tempdir("twosignals");
    ok(&args(&logs, "ref", &[]));
    let reference = logs.join("ref/checkpoints/epoch_1.safetensors");
    let ckpts = logs.join("pre/checkpoints");
    let every_3 = ["--save-every-n-steps", "3"];
    // Every step_N write stops the process inside it.
    let child = crate::procs::Guarded::spawn(
        Command::new(BIN)
            .args(args(&logs, "pre", &every_3))
            .env(HOOK, format!("step_:{SIGSTOP}"))
            .stderr(Stdio::piped()),
    );
    let writing = || stopped(child.id()) && temp_file(&ckpts).is_some();
    wait_until("the step 3 save to stop itself", writing);
    signal(&child, SIGUSR1);
    signal(&child, SIGCONT);
    // Stopped again with step 3 in place: inside the preemption save.
    wait_until("the preemption save to stop itself", || {
        ckpts.join("step_3.safetensors").exists() && writing()
    });
    signal(&child, SIGTERM);
    signal(&child, SIGUSR1);
    signal(&child, SIGCONT);
    let out = child.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert_eq!(
        err.matches("Preemption signal: checkpointed step").count(),
        1,
        "{err}"
    );
    assert!(temp_file(&ckpts).is_none());
    assert!(
        !ckpts.join("epoch_1.safetensors").exists(),
        "stopped mid-epoch"
    );
    every_checkpoint_verifies(&ckpts);
    ok(&resume_latest(&args(&logs, "pre", &every_3)));
    assert_bitwise_equal(&ckpts.join("epoch_1.safetensors"), &reference);
    let _ = std::fs::remove_dir_all(&logs);
}

/// A background checkpoint write that fails (here: a directory squats the file's name, so the
/// final rename fails) is an error in the log naming the checkpoint that stays the newest;
/// training goes on and the later checkpoints are written.
#[test]
fn a_failed_background_write_is_logged_and_training_goes_on() {
    let logs = tempdir("failed-write");
    let ckpts = logs.join("w/checkpoints");
    let squat = ckpts.join("step_4.safetensors");
    std::fs::create_dir_all(&squat).unwrap();
    std::fs::write(squat.join("in-the-way"), b"x").unwrap();
    let out = ok(&args(&logs, "w", &["--save-every-n-steps", "2"]));
    let log = std::fs::read_to_string(logs.join("w/out.log")).unwrap();
    let line = format!(
        "checkpoint {} was not written: writing {}",
        squat.display(),
        squat.display()
    );
    let still = format!(
        "the newest checkpoint is still {}",
        ckpts.join("step_2.safetensors").display()
    );
    let failed: Vec<&str> = log.lines().filter(|l| l.contains(&line)).collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("| ERROR |") && failed[0].contains(&still),
        "{log}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&line));
    // Nothing half-written is left, and the run's other checkpoints are all there and verify.
    assert_eq!(temp_file(&ckpts), None);
    assert_eq!(every_checkpoint_verifies(&ckpts), 5, "{log}");
    for n in [2, 6, 8, 10] {
        assert!(ckpts.join(format!("step_{n}.safetensors")).is_file());
    }
    let _ = std::fs::remove_dir_all(&logs);
}
