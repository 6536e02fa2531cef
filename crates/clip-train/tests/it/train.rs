//! The trainer end to end on the tiny model and synthetic data (CPU, fp32): exact resume from
//! several stop points, a preemption signal, a corrupt newest checkpoint, run-directory rules.
mod common;
use common::{assert_bitwise_equal, ok, run, stopped_copy, tempdir};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

fn base_args(logs: &Path, name: &str) -> Vec<String> {
    common::run_args(
        &[
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "64",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--model",
            "clip_tiny_test",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--lr",
            "1e-3",
            "--warmup",
            "3",
            "--grad-clip-norm",
            "1.0",
            "--save-every-n-steps",
            "3",
            "--log-every-n-steps",
            "4",
            "--seed",
            "3",
        ],
        name,
        logs,
        &[],
    )
}

#[test]
fn resume_latest_from_any_step_is_bitwise_the_uninterrupted_run() {
    let logs = tempdir("resume");
    ok(&base_args(&logs, "full"));
    let full = logs.join("full");
    let last = full.join("checkpoints/epoch_2.safetensors");
    assert!(last.exists());
    let log = std::fs::read_to_string(full.join("out.log")).unwrap();
    assert!(log.contains("Train Epoch: 1 [64/64 (100%)]"), "{log}");
    // 16 steps; checkpoints every 3 steps and at each epoch end (step 8 is one).
    for step in [3, 6, 8, 12, 15] {
        let name = format!("stop{step}");
        stopped_copy(&full, &logs.join(&name), step);
        let mut args = base_args(&logs, &name);
        args.extend(["--resume".into(), "latest".into()]);
        ok(&args);
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
    let mut args = base_args(&logs, "corrupt");
    args.extend(["--resume".into(), "latest".into()]);
    let out = run(&args);
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
    ok(&base_args(&logs, "ref"));
    let mut args = base_args(&logs, "pre");
    // Slow enough to be signalled mid-run: many steps.
    args.iter_mut().for_each(|a| {
        if a == "64" {
            *a = "400".into()
        }
    });
    let mut reference = base_args(&logs, "ref400");
    reference.iter_mut().for_each(|a| {
        if a == "64" {
            *a = "400".into()
        }
    });
    ok(&reference);
    let child = Command::new(BIN)
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started (first log line), then signal.
    let ckpts = logs.join("pre/checkpoints");
    let t0 = std::time::Instant::now();
    while !ckpts.join("step_3.safetensors").exists() {
        assert!(t0.elapsed().as_secs() < 120, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    common::signal(&child, common::SIGUSR1);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("Preemption signal"), "{err}");
    let mut resume = args.clone();
    resume.extend(["--resume".into(), "latest".into()]);
    ok(&resume);
    assert_bitwise_equal(
        &logs.join("pre/checkpoints/epoch_2.safetensors"),
        &logs.join("ref400/checkpoints/epoch_2.safetensors"),
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn existing_run_dir_needs_resume_and_missing_resume_path_writes_nothing() {
    let logs = tempdir("rundir");
    let mut short = base_args(&logs, "r");
    short.iter_mut().for_each(|a| {
        if a == "2" {
            *a = "1".into()
        }
    });
    ok(&short);
    let out = run(&short);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let mut missing = base_args(&logs, "m");
    missing.extend([
        "--resume".into(),
        logs.join("nope.safetensors").display().to_string(),
    ]);
    let out = run(&missing);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("nope.safetensors"), "{err}");
    assert!(!logs.join("m").exists(), "nothing written");

    // --report-to tensorboard writes event files TensorBoard reads (format: tests/tensorboard.rs).
    let mut tb = base_args(&logs, "tb");
    tb.iter_mut().for_each(|a| {
        if a == "2" {
            *a = "1".into()
        }
    });
    tb.extend(["--report-to".into(), "tensorboard".into()]);
    ok(&tb);
    let events: Vec<_> = std::fs::read_dir(logs.join("tb/tensorboard"))
        .unwrap()
        .collect();
    assert_eq!(events.len(), 1);
    let mut wandb = base_args(&logs, "w");
    wandb.extend(["--report-to".into(), "wandb".into()]);
    let out = run(&wandb);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported yet: --report-to wandb"));

    let mut unsupported = base_args(&logs, "u");
    unsupported.extend(["--lock-image-unlocked-groups".into(), "2".into()]);
    let out = run(&unsupported);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("not supported yet: --lock-image-unlocked-groups"));
    assert!(!logs.join("u").exists());
    let _ = std::fs::remove_dir_all(&logs);
}
