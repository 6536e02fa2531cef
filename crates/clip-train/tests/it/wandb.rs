//! `--report-to wandb` with the real wandb SDK in offline mode (`WANDB_MODE=offline`, files in a
//! temp `WANDB_DIR`), its runs read back with wandb's own record classes
//! (`scripts/wandb-history.py`): the history holds OpenCLIP's keys at OpenCLIP's steps with the
//! values out.log, TensorBoard and results.jsonl hold; a preempted run resumed with `--resume
//! latest` continues the same run id from the resumed step; a Python without wandb is a usage
//! error before anything is written.
use crate::common::{cli, image_shards, signal, tempdir, wait_until, SIGUSR1};
use crate::golden::{python, root, run_python};
use crate::skip::skip;
use image::ImageFormat;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

/// Whether the tests' Python has wandb (else a loud skip).
fn have_wandb() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import wandb, tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!(
            "{} cannot import wandb and tensorboard (pip install -r scripts/requirements.txt)",
            python().display()
        ));
    }
    ok
}

/// clip-train with wandb offline, its files under `wandb_dir`, the tests' Python running it.
fn command(args: &[String], wandb_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("WANDB_MODE", "offline")
        .env("WANDB_DIR", wandb_dir)
        .env("WANDB_SILENT", "true")
        // wandb's temp folders too: a killed wandb process leaves its `tmp…wandb-media` and
        // `tmp…wandb-artifacts` behind.
        .env("TMPDIR", wandb_dir)
        .env("CLIP_TRAIN_PYTHON", python());
    c
}

fn ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "clip-train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The wandb runs under `wandb_dir` as the SDK wrote them, in start order.
fn wandb_runs(wandb_dir: &Path) -> Vec<Value> {
    let script = root().join("scripts/wandb-history.py");
    let out = run_python([script.as_os_str(), wandb_dir.join("wandb").as_os_str()]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["runs"].as_array().unwrap().clone()
}

/// History rows by `_step`.
fn rows(run: &Value) -> BTreeMap<i64, serde_json::Map<String, Value>> {
    run["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["_step"].as_i64().unwrap(), r.as_object().unwrap().clone()))
        .collect()
}

/// TensorBoard's scalars of `dir`: tag → [(step, value)].
fn tensorboard(dir: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
    let code = r#"
import sys, json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = run_python([OsStr::new("-c"), OsStr::new(code), dir.as_os_str()]);
    let v: BTreeMap<String, Vec<(i64, f64)>> = serde_json::from_str(&out).unwrap();
    v.into_iter()
        .map(|(k, s)| (k, s.into_iter().map(|(i, x)| (i, x as f32)).collect()))
        .collect()
}

/// Two epochs of 4 steps, logged at steps 0, 3 (epoch 0) and 4, 7 (epoch 1), evaluated on
/// `--val-data` after each epoch (wandb steps 4 and 8): every value wandb holds is the one
/// TensorBoard, out.log and results.jsonl hold, at OpenCLIP's step. Then an evaluation-only run
/// of its weights.
#[test]
fn wandb_history_holds_the_logged_metrics_at_openclips_steps() {
    if !have_wandb() {
        return;
    }
    let dir = tempdir("wandb");
    let shards = image_shards(&dir.join("val"), 12, 8, 1, 64, ImageFormat::Png);
    let val = format!(
        "{}/{{00000..00001}}.tar",
        shards[0].parent().unwrap().display()
    );
    let flags = "--dataset-type synthetic --train-num-samples 32 --batch-size 8 --epochs 2 \
                 --model clip_tiny --lr 1e-3 --warmup 2 --log-every-n-steps 3 --workers 1 \
                 --val-num-samples 12 --report-to tensorboard,wandb \
                 --wandb-project-name clip-test-project";
    let logs = dir.join("logs");
    let args = cli(
        flags,
        "w",
        &logs,
        &["--val-data", &val, "--wandb-notes", "two epochs, tiny"],
    );
    ok(&mut command(&args, &dir));

    let runs = wandb_runs(&dir);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["id"], "w");
    assert_eq!(run["name"], "w");
    assert_eq!(run["project"], "clip-test-project");
    assert_eq!(run["notes"], "two epochs, tiny");
    assert_eq!(run["exit_code"], 0);
    let config = &run["config"];
    assert_eq!(config["batch_size"], 8);
    assert_eq!(config["lr"], 1e-3);
    assert_eq!(config["report_to"], "tensorboard,wandb");
    assert_eq!(config["wandb"], true);
    assert_eq!(config["train_sz"], 32);
    assert_eq!(config["val_sz"], 12);
    assert_eq!(config["world_size"], 1);
    // OpenCLIP's wandb.save(params_file).
    assert!(
        run["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with("params.txt")),
        "{:?}",
        run["files"]
    );

    let history = rows(run);
    assert_eq!(history.keys().copied().collect::<Vec<_>>(), [0, 3, 4, 7, 8]);
    let train_keys = [
        "train/data_time",
        "train/batch_time",
        "train/samples_per_second",
        "train/samples_per_second_per_gpu",
        "train/scale",
        "train/lr",
        "train/contrastive_loss",
        "train/loss",
    ];
    let tb = tensorboard(&logs.join("w/tensorboard"));
    for key in train_keys {
        let tb_series = &tb[key];
        let steps: Vec<i64> = tb_series.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [0, 3, 4, 7], "{key} in TensorBoard");
        for (step, value) in tb_series {
            let w = history[step][key].as_f64().unwrap();
            // TensorBoard keeps f32; wandb the f64 it was given.
            assert_eq!(w as f32, *value, "{key} at step {step}");
        }
    }
    for step in [0, 3, 4, 7] {
        assert_eq!(history[&step]["step"], step, "OpenCLIP's `step` key");
    }
    // out.log's `Train Epoch:` lines' `Loss: X` (5 significant digits) at the same log steps.
    let losses: Vec<f64> = std::fs::read_to_string(logs.join("w/out.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("Train Epoch:"))
        .filter_map(|l| l.split(" Loss: ").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    for (loss, step) in losses.iter().zip([0, 3, 4, 7]) {
        let w = history[&step]["train/loss"].as_f64().unwrap();
        assert!(
            (w - loss).abs() <= 1e-4 * w.abs(),
            "step {step}: {w} vs {loss}"
        );
    }

    // Evaluations: val/… and `epoch` at steps_per_epoch * epoch, equal to results.jsonl.
    let results = std::fs::read_to_string(logs.join("w/checkpoints/results.jsonl")).unwrap();
    let results: Vec<Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2);
    for (epoch, metrics) in (1..).zip(&results) {
        let row = &history[&(4 * epoch)];
        assert_eq!(row["epoch"], epoch);
        let metrics = metrics.as_object().unwrap();
        assert!(metrics.contains_key("clip_val_loss"), "{metrics:?}");
        for (k, v) in metrics {
            // Numerically: wandb's core writes a float 1.0 as `1`.
            let w = row[&format!("val/{k}")].as_f64();
            assert_eq!(w, v.as_f64(), "val/{k} at epoch {epoch}");
        }
    }
    // No wandb key that is not OpenCLIP's.
    for row in history.values() {
        for k in row.keys() {
            let known = train_keys.contains(&k.as_str())
                || k.starts_with("val/")
                || ["step", "epoch", "_step", "_runtime", "_timestamp"].contains(&k.as_str());
            assert!(known, "unexpected wandb key {k}");
        }
    }

    // Without training data, OpenCLIP's one evaluation logs with no step: wandb's first row.
    let weights = logs.join("w/checkpoints/epoch_2.safetensors");
    let eval_only = cli(
        "--batch-size 8 --model clip_tiny --workers 1 --val-num-samples 12 --report-to wandb",
        "e",
        &logs,
        &[
            "--val-data",
            &val,
            "--pretrained",
            weights.to_str().unwrap(),
        ],
    );
    ok(&mut command(&eval_only, &dir));
    let runs = wandb_runs(&dir);
    let run = runs.iter().find(|r| r["id"] == "e").expect("the eval run");
    let history = rows(run);
    assert_eq!(history.keys().copied().collect::<Vec<_>>(), [0]);
    assert_eq!(history[&0]["epoch"], 0);
    assert_eq!(history[&0]["val/num_samples"], 12);
    assert!(history[&0].contains_key("val/clip_val_loss"), "{history:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run preempted by SIGUSR1 (exit 75) and resumed with `--resume latest` continues the same
/// wandb run id: the first run's history ends at the checkpointed step, the resumed one's starts
/// right after it, and together they hold every step once.
#[test]
fn a_resumed_run_continues_the_same_wandb_run() {
    if !have_wandb() {
        return;
    }
    let dir = tempdir("wandb-resume");
    let logs = dir.join("logs");
    let flags = "--dataset-type synthetic --train-num-samples 160 --batch-size 8 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --warmup 2 --log-every-n-steps 1 \
                 --save-every-n-steps 3 --report-to wandb";
    let args = cli(flags, "pre", &logs, &[]);
    let child = crate::procs::Guarded::spawn(command(&args, &dir).stderr(Stdio::piped()));
    let ckpts = logs.join("pre/checkpoints");
    wait_until("step_3", || ckpts.join("step_3.safetensors").exists());
    signal(&child, SIGUSR1);
    let out = child.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    let stopped: i64 = err
        .split("Preemption signal: checkpointed step ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no preemption line: {err}"));
    assert!(stopped < 20, "the run finished before the signal: {err}");
    ok(&mut command(&crate::common::resume_latest(&args), &dir));

    let runs = wandb_runs(&dir);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (first, second) = (&runs[0], &runs[1]);
    assert_eq!(first["id"], "pre");
    assert_eq!(second["id"], "pre", "the resumed run has a new id");
    assert_eq!(first["exit_code"], 75);
    assert_eq!(second["exit_code"], 0);
    assert_eq!(second["config"]["resume"], "latest");
    let (a, b) = (rows(first), rows(second));
    // Steps taken 1..=stopped are OpenCLIP's steps 0..stopped; the resumed run takes the rest.
    assert_eq!(
        a.keys().copied().collect::<Vec<_>>(),
        (0..stopped).collect::<Vec<_>>()
    );
    assert_eq!(
        b.keys().copied().collect::<Vec<_>>(),
        (stopped..20).collect::<Vec<_>>()
    );
    for (step, row) in a.iter().chain(&b) {
        assert_eq!(row["step"], *step);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--report-to wandb` with a Python that cannot import wandb (a bare venv), or no Python at
/// that path: exit 2, one line saying what to install or set, nothing written.
#[test]
fn wandb_without_the_package_is_refused_before_anything_is_written() {
    let dir = tempdir("wandb-missing");
    let venv = dir.join("bare-venv");
    let made = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        return skip(&format!("{} cannot make a venv", python().display()));
    }
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let flags = "--dataset-type synthetic --train-num-samples 16 --batch-size 8 --epochs 1 \
                 --model clip_tiny_test --report-to tensorboard,wandb";
    let args = cli(flags, "nowandb", Path::new("logs"), &[]);
    let missing = dir.join("no-such-python");
    for (python, needle) in [
        (venv.join("bin/python"), "pip install wandb"),
        (missing, "CLIP_TRAIN_PYTHON"),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(&work)
            .env("CLIP_TRAIN_PYTHON", &python)
            .env("WANDB_MODE", "offline")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("wandb") && err.contains(needle), "{err}");
        assert!(err.contains(&python.display().to_string()), "{err}");
        let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
        assert!(left.is_empty(), "wrote {left:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The processes whose parent is `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            // `PID (COMM) STATE PPID …`: the fields after the last ')'.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat.rsplit(')').next().unwrap_or("");
            rest.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

/// The wandb process killed mid-run: one ERROR line in out.log saying wandb logging stopped,
/// and training goes on to its end (exit 0).
#[test]
fn a_dead_wandb_process_is_an_error_line_and_training_goes_on() {
    if !have_wandb() {
        return;
    }
    let dir = tempdir("wandb-dies");
    let logs = dir.join("logs");
    let flags = "--dataset-type synthetic --train-num-samples 160 --batch-size 8 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --warmup 2 --log-every-n-steps 1 \
                 --report-to wandb";
    let args = cli(flags, "dies", &logs, &[]);
    let child = crate::procs::Guarded::spawn(command(&args, &dir).stderr(Stdio::piped()));
    let log = logs.join("dies/out.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("a first log step", || read().contains("Train Epoch: 0"));
    let sinks = children(child.id());
    assert_eq!(sinks.len(), 1, "clip-train's children: {sinks:?}");
    Command::new("kill")
        .args(["-KILL", &sinks[0].to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let log = read();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("| ERROR |")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("wandb") && errors[0].contains("training goes on"),
        "{log}"
    );
    assert!(log.contains("Train Epoch: 0 [160/160 (100%)]"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// wandb.init failing (online, no API key anywhere) stops the run as it stops OpenCLIP's: exit 1
/// with wandb's reason in one line, before any training step.
#[test]
fn a_failed_wandb_init_stops_the_run_with_wandbs_reason() {
    if !have_wandb() {
        return;
    }
    let dir = tempdir("wandb-init");
    let logs = dir.join("logs");
    let flags = "--dataset-type synthetic --train-num-samples 16 --batch-size 8 --epochs 1 \
                 --model clip_tiny_test --report-to wandb";
    let out = command(&cli(flags, "nokey", &logs, &[]), &dir)
        .env("WANDB_MODE", "online")
        .env_remove("WANDB_API_KEY")
        // No ~/.netrc or wandb settings file with a key.
        .env("HOME", &dir)
        .env("WANDB_CONFIG_DIR", &dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("clip-train: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("wandb.init failed") && line.contains("API key"),
        "{line}"
    );
    let log = std::fs::read_to_string(logs.join("nokey/out.log")).unwrap();
    assert!(!log.contains("Train Epoch"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
