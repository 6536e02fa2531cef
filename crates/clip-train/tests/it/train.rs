//! The trainer end to end on the tiny model and synthetic data (CPU, fp32): exact resume from
//! several stop points, a preemption signal, a corrupt newest checkpoint, run-directory rules.
use crate::common::{
    assert_bitwise_equal, cli, ok, resume_latest, run, signal, stopped_copy, tempdir, wait_until,
    SIGUSR1,
};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    cli(
        "--dataset-type synthetic --train-num-samples 64 --batch-size 8 --epochs 2 \
         --model clip_tiny_test --lr 1e-3 --warmup 3 --grad-clip-norm 1.0 \
         --save-every-n-steps 3 --log-every-n-steps 4 --seed 3",
        name,
        logs,
        extra,
    )
}

#[test]
fn resume_latest_from_any_step_is_bitwise_the_uninterrupted_run() {
    let logs = tempdir("resume");
    ok(&args(&logs, "full", &[]));
    let full = logs.join("full");
    let last = full.join("checkpoints/epoch_2.safetensors");
    assert!(last.exists());
    let log = std::fs::read_to_string(full.join("out.log")).unwrap();
    assert!(log.contains("Train Epoch: 1 [64/64 (100%)]"), "{log}");
    // 16 steps; checkpoints every 3 steps and at each epoch end (step 8 is one).
    for step in [3, 6, 8, 12, 15] {
        let name = format!("stop{step}");
        stopped_copy(&full, &logs.join(&name), step);
        ok(&args(&logs, &name, &["--resume", "latest"]));
        assert_bitwise_equal(
            &logs.join(&name).join("checkpoints/epoch_2.safetensors"),
            &last,
        );
        let log = std::fs::read_to_string(logs.join(&name).join("out.log")).unwrap();
        assert!(
            log.contains(&format!("step {step})")),
            "resumed from step {step}: {log}"
        );
    }
    // A corrupt newest checkpoint (a crash mid-write of a non-atomic writer, a bad disk) is
    // skipped with a warning: resume from the one before.
    stopped_copy(&full, &logs.join("corrupt"), 12);
    let newest = logs.join("corrupt/checkpoints/step_12.safetensors");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() - 1000]).unwrap();
    let out = run(&args(&logs, "corrupt", &["--resume", "latest"]));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipping checkpoint") && err.contains("step_12"),
        "{err}"
    );
    assert!(err.contains("step 9)"), "{err}");
    assert_bitwise_equal(&logs.join("corrupt/checkpoints/epoch_2.safetensors"), &last);
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn preemption_signal_checkpoints_and_exits_75_then_resume_finishes_identically() {
    let logs = tempdir("signal");
    // Slow enough to be signalled mid-run: many steps.
    let pre = args(&logs, "pre", &["--train-num-samples", "400"]);
    ok(&args(&logs, "ref", &["--train-num-samples", "400"]));
    let child = crate::procs::Guarded::spawn(
        Command::new(BIN)
            .args(&pre)
            .stderr(std::process::Stdio::piped()),
    );
    // Wait until training has started (first log line), then signal.
    let ckpts = logs.join("pre/checkpoints");
    wait_until("step_3", || ckpts.join("step_3.safetensors").exists());
    signal(&child, SIGUSR1);
    let out = child.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("Preemption signal"), "{err}");
    ok(&resume_latest(&pre));
    assert_bitwise_equal(
        &logs.join("pre/checkpoints/epoch_2.safetensors"),
        &logs.join("ref/checkpoints/epoch_2.safetensors"),
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn existing_run_dir_needs_resume_and_missing_resume_path_writes_nothing() {
    let logs = tempdir("rundir");
    let short = args(&logs, "r", &["--epochs", "1"]);
    ok(&short);
    let out = run(&short);
    // A refusal of the command line like any other: exit 2, checked before anything is written.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let nope = logs.join("nope.safetensors").display().to_string();
    let out = run(&args(&logs, "m", &["--resume", &nope]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("nope.safetensors"), "{err}");
    assert!(!logs.join("m").exists(), "nothing written");

    // --report-to tensorboard writes event files TensorBoard reads (format: tests/tensorboard.rs).
    let tb = args(
        &logs,
        "tb",
        &["--epochs", "1", "--report-to", "tensorboard"],
    );
    ok(&tb);
    let events: Vec<_> = std::fs::read_dir(logs.join("tb/tensorboard"))
        .unwrap()
        .collect();
    assert_eq!(events.len(), 1);
    // A reporter clip-train does not know is refused, not ignored (wandb: tests/wandb.rs).
    let out = run(&args(&logs, "w", &["--report-to", "mlflow"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--report-to mlflow"));
    assert!(!logs.join("w").exists());

    let _ = std::fs::remove_dir_all(&logs);
}
