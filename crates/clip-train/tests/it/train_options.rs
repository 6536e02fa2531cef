//! Trainer options end to end on the tiny model and synthetic data (CPU, fp32): --accum-freq,
//! --lock-image / --lock-text, MFU in the log line, the progress bar on a terminal.
mod common;
use common::{
    assert_bitwise_equal, logged_losses, no_drop_path_config, ok, stopped_copy, tempdir, weights,
};
use std::path::Path;
use std::process::Command;

fn args(logs: &Path, name: &str, model: &str, extra: &[&str]) -> Vec<String> {
    common::run_args(
        &[
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "64",
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
            "2",
            "--log-every-n-steps",
            "1",
            "--seed",
            "5",
            "--model",
            model,
        ],
        name,
        logs,
        extra,
    )
}

fn log_of(logs: &Path, name: &str) -> String {
    std::fs::read_to_string(logs.join(name).join("out.log")).unwrap()
}

#[test]
fn accum_freq_trains_like_one_bigger_batch_and_resumes_exactly() {
    let logs = tempdir("accum");
    let model = no_drop_path_config(&logs);
    ok(&args(&logs, "big", &model, &[]));
    ok(&args(
        &logs,
        "accum",
        &model,
        &[
            "--batch-size",
            "4",
            "--accum-freq",
            "2",
            "--save-every-n-steps",
            "3",
        ],
    ));
    let acc = log_of(&logs, "accum");
    // 64 samples = 8 steps of 8 either way; the log counts samples as OpenCLIP does.
    assert!(acc.contains("Train Epoch: 0 [64/64 (100%)]"), "{acc}");
    assert!(acc.contains("Train Epoch: 0 [ 8/64 (12%)]"), "{acc}");
    let (lb, la) = (
        logged_losses(&logs.join("big")),
        logged_losses(&logs.join("accum")),
    );
    assert_eq!(lb.len(), 8);
    assert_eq!(la.len(), 8);
    // The first step sees the same weights and the same 8 samples: the same loss.
    assert!((lb[0] - la[0]).abs() <= 1e-5 * lb[0], "{lb:?} vs {la:?}");
    for (b, a) in lb.iter().zip(&la) {
        assert!((b - a).abs() <= 1e-3 * b, "{lb:?} vs {la:?}");
    }
    // Stopped after step 3 and resumed: bitwise the uninterrupted accumulating run.
    let full = logs.join("accum");
    stopped_copy(&full, &logs.join("accum3"), 3);
    let mut resume = args(
        &logs,
        "accum3",
        &model,
        &[
            "--batch-size",
            "4",
            "--accum-freq",
            "2",
            "--save-every-n-steps",
            "3",
        ],
    );
    resume.extend(["--resume".into(), "latest".into()]);
    ok(&resume);
    assert_bitwise_equal(
        &logs.join("accum3/checkpoints/epoch_1.safetensors"),
        &full.join("checkpoints/epoch_1.safetensors"),
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn locked_towers_keep_their_weights() {
    let logs = tempdir("lock");
    // --lr 0 leaves every weight at its initial value (AdamW's decay is scaled by lr too).
    ok(&args(&logs, "init", "clip_tiny_test", &["--lr", "0"]));
    ok(&args(
        &logs,
        "locked",
        "clip_tiny_test",
        &[
            "--lock-image",
            "--lock-text",
            "--lock-text-unlocked-layers",
            "1",
        ],
    ));
    let locked = logs.join("locked");
    assert!(log_of(&logs, "locked").contains("trainable)"));
    let init = weights(&logs.join("init/checkpoints/epoch_1.safetensors"));
    let after = weights(&locked.join("checkpoints/epoch_1.safetensors"));
    let (mut frozen, mut moved) = (0, 0);
    for (k, b) in &after {
        if k.starts_with("optimizer.") {
            // The optimizer holds state for trainable parameters only.
            assert!(
                !k.contains("visual.trunk.") && !k.contains("transformer.resblocks."),
                "{k}"
            );
            continue;
        }
        let a = common::get(&init, k);
        // Frozen: the image trunk and the text tower except its last group (text_projection).
        let should_freeze = k.starts_with("visual.trunk.")
            || k.starts_with("transformer.")
            || k.starts_with("token_embedding.")
            || k.starts_with("ln_final.")
            || k == "positional_embedding";
        if should_freeze {
            assert!(a.equal(b), "{k} changed although locked");
            frozen += 1;
        } else {
            assert!(!a.equal(b), "{k} did not train");
            moved += 1;
        }
    }
    assert!(
        frozen > 10 && moved >= 3,
        "{frozen} frozen, {moved} trained"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn mfu_is_logged_where_the_peak_is_known() {
    let logs = tempdir("mfu");
    let quick = ["--train-num-samples", "16"];
    ok(&args(&logs, "plain", "clip_tiny_test", &quick));
    assert!(
        !log_of(&logs, "plain").contains("MFU"),
        "CPU: no known peak"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_clip-train"))
        .args(args(&logs, "peak", "clip_tiny_test", &quick))
        .env("CLIP_TRAIN_PEAK_TFLOPS", "0.001")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = log_of(&logs, "peak");
    let line = log.lines().find(|l| l.contains("Train Epoch")).unwrap();
    let mfu: f64 = line
        .split("MFU: ")
        .nth(1)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(mfu > 0.0 && mfu.is_finite(), "{line}");
    assert!(line.contains("Data wait: "), "{line}");
    let _ = std::fs::remove_dir_all(&logs);
}

/// On a terminal (a pty from util-linux's `script`) a progress bar is redrawn in place; into a
/// pipe or file, none.
#[test]
fn progress_bar_only_on_a_terminal() {
    let logs = tempdir("progress");
    let bin = env!("CARGO_BIN_EXE_clip-train");
    let a = args(
        &logs,
        "tty",
        "clip_tiny_test",
        &["--train-num-samples", "32"],
    );
    let cmd = std::iter::once(bin.to_string())
        .chain(a)
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("\r\x1b[2Kepoch 0 [#"), "{tty}");
    assert!(tty.contains("4/4 loss "), "{tty}");
    let piped = ok(&args(
        &logs,
        "pipe",
        "clip_tiny_test",
        &["--train-num-samples", "32"],
    ));
    assert!(!String::from_utf8_lossy(&piped.stderr).contains('\x1b'));
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--precision bf16` / `pure_bf16`: bf16 weights, optimizer state and checkpoints (the text
/// LayerNorms stay fp32 under `bf16`), and a run stopped mid-epoch resumes bitwise.
#[test]
fn bf16_weights_train_and_resume_exactly() {
    let logs = tempdir("bf16");
    for (precision, norm_kind) in [
        ("bf16", tch::Kind::Float),
        ("pure_bf16", tch::Kind::BFloat16),
    ] {
        let a = |name: &str| {
            args(
                &logs,
                name,
                "clip_tiny_test",
                &[
                    "--precision",
                    precision,
                    "--save-every-n-steps",
                    "3",
                    "--epochs",
                    "2",
                ],
            )
        };
        ok(&a(precision));
        let full = logs.join(precision);
        let last = full.join("checkpoints/epoch_2.safetensors");
        let w = weights(&last);
        let kind = |k: &str| common::get(&w, k).kind();
        assert_eq!(kind("visual.trunk.stem.0.weight"), tch::Kind::BFloat16);
        assert_eq!(
            kind("optimizer.exp_avg.text_projection"),
            tch::Kind::BFloat16
        );
        assert_eq!(kind("ln_final.weight"), norm_kind, "{precision}");
        let losses = logged_losses(&full);
        assert!(
            losses.last().unwrap() < &losses[0],
            "{precision}: {losses:?}"
        );
        let stopped = format!("{precision}-stop");
        stopped_copy(&full, &logs.join(&stopped), 9);
        let mut resume = a(&stopped);
        resume.extend(["--resume".into(), "latest".into()]);
        ok(&resume);
        assert_bitwise_equal(
            &logs.join(&stopped).join("checkpoints/epoch_2.safetensors"),
            &last,
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--precision amp` (OpenCLIP's default): fp16 autocast with the loss scaler, whose state rides
/// in the checkpoint so a stopped run resumes bitwise.
#[test]
fn amp_with_its_loss_scaler_resumes_exactly() {
    let logs = tempdir("amp");
    let a = |name: &str| {
        args(
            &logs,
            name,
            "clip_tiny_test",
            &[
                "--precision",
                "amp",
                "--save-every-n-steps",
                "3",
                "--epochs",
                "2",
            ],
        )
    };
    ok(&a("amp"));
    let full = logs.join("amp");
    let last = full.join("checkpoints/epoch_2.safetensors");
    let state = clip_train::checkpoint::peek_state(&last).unwrap();
    let scaler = state.scaler.expect("the scaler is checkpointed");
    assert!(scaler.scale > 0.0 && scaler.scale <= 65536.0, "{scaler:?}");
    assert!(
        clip_train::checkpoint::peek_state(&full.join("checkpoints/step_9.safetensors"))
            .unwrap()
            .scaler
            .is_some()
    );
    stopped_copy(&full, &logs.join("amp-stop"), 9);
    let mut resume = a("amp-stop");
    resume.extend(["--resume".into(), "latest".into()]);
    ok(&resume);
    assert_bitwise_equal(
        &logs.join("amp-stop/checkpoints/epoch_2.safetensors"),
        &last,
    );
    let _ = std::fs::remove_dir_all(&logs);
}
