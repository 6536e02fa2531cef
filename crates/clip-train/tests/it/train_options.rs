//! Trainer options end to end on the tiny model and synthetic data (CPU, fp32): --accum-freq,
//! --lock-image / --lock-text, MFU in the log line, the progress bar on a terminal.
use crate::common::{
    assert_bitwise_equal, cli, get, logged_losses, no_drop_path_config, ok, resume_latest,
    stopped_copy, succeeds, tempdir, weights,
};
use std::path::Path;
use std::process::Command;

fn args(logs: &Path, name: &str, model: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --train-num-samples 64 --batch-size 8 --epochs 1 \
                 --lr 1e-3 --warmup 2 --log-every-n-steps 1 --seed 5";
    cli(flags, name, logs, &[&["--model", model], extra].concat())
}

fn log_of(logs: &Path, name: &str) -> String {
    std::fs::read_to_string(logs.join(name).join("out.log")).unwrap()
}

#[test]
fn accum_freq_trains_like_one_bigger_batch_and_resumes_exactly() {
    let logs = tempdir("accum");
    let model = no_drop_path_config(&logs);
    let accum = [
        "--batch-size",
        "4",
        "--accum-freq",
        "2",
        "--save-every-n-steps",
        "3",
    ];
    ok(&args(&logs, "big", &model, &[]));
    ok(&args(&logs, "accum", &model, &accum));
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
    let resume = resume_latest(&args(&logs, "accum3", &model, &accum));
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
        let a = get(&init, k);
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
    // MFU = samples/s × the model's training FLOPs per sample / the peak (0.001 TFLOP/s), as a
    // percentage with one decimal; samples/s is logged with six significant digits.
    let cfg = clip_model::ClipConfig::load("clip_tiny_test").unwrap();
    let flops_per_sample = clip_model::flops::train_flops(&cfg, false);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("Train Epoch")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in lines {
        // "… Batch (t): 0.123, 1234.56/s, 1234.56/s/gpu … MFU: 12.3%"
        let after = |tag: &str| line.split(tag).nth(1).unwrap();
        let samples_per_s: f64 = after("Batch (t): ")
            .split(", ")
            .nth(1)
            .unwrap()
            .trim_end_matches("/s")
            .parse()
            .unwrap();
        let mfu: f64 = after("MFU: ").trim_end_matches('%').parse().unwrap();
        let want = 100.0 * samples_per_s * flops_per_sample / 1e9;
        assert!(
            (mfu - want).abs() <= 0.05 + 1e-5 * want,
            "MFU {mfu} vs {samples_per_s}/s × {flops_per_sample} FLOP / 1e9 FLOP/s = {want}: {line}"
        );
        assert!(line.contains("Data wait: "), "{line}");
    }
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
    let out = succeeds(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
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
        let kind = |k: &str| get(&w, k).kind();
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
        let resume = resume_latest(&a(&stopped));
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
                "1",
                "--epochs",
                "2",
            ],
        )
    };
    ok(&a("amp"));
    let full = logs.join("amp");
    let last = full.join("checkpoints/epoch_2.safetensors");
    // One checkpoint per step: a skipped step is one AdamW did not count. PyTorch's GradScaler
    // (OpenCLIP's) starts at 2^16, halves at every skipped step and counts the clean steps since
    // (it doubles only after 2000 of them). 2^16 overflows this model's fp16 backward, so the
    // first steps are skipped until the scale fits; after that, none.
    let mut states: Vec<_> = clip_train::checkpoint::candidates(&full.join("checkpoints"))
        .iter()
        .map(|p| clip_train::checkpoint::peek_state(p).unwrap())
        .collect();
    states.sort_by_key(|s| s.step);
    states.dedup_by_key(|s| s.step);
    let steps: Vec<i64> = states.iter().map(|s| s.step).collect();
    assert_eq!(steps, (1..=16).collect::<Vec<_>>());
    let (mut skipped, mut clean_since) = (0, 0);
    let mut skips = Vec::new();
    for s in &states {
        let now = s.step - s.optimizer_step.unwrap_or(s.step);
        if now > skipped {
            skips.push(s.step);
            clean_since = 0;
        } else {
            clean_since += 1;
        }
        skipped = now;
        let scaler = s.scaler.expect("the scaler is checkpointed");
        assert_eq!(
            (scaler.scale, scaler.growth_tracker),
            (65536.0 * 0.5f64.powi(skipped as i32), clean_since),
            "step {}",
            s.step
        );
    }
    assert!(
        !skips.is_empty(),
        "2^16 overflows: the first step is skipped"
    );
    assert_eq!(
        skips,
        (1..=skips.len() as i64).collect::<Vec<_>>(),
        "only the first steps skip"
    );
    stopped_copy(&full, &logs.join("amp-stop"), 9);
    let resume = resume_latest(&a("amp-stop"));
    ok(&resume);
    assert_bitwise_equal(
        &logs.join("amp-stop/checkpoints/epoch_2.safetensors"),
        &last,
    );
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_and_the_newest_good_checkpoint() {
    let logs = tempdir("diverge");
    let every = ["--save-every-n-steps", "2"];
    let run_nan = |name: &str, extra: &[&str], step: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-train"));
        cmd.args(args(
            &logs,
            name,
            "clip_tiny_test",
            &[&every[..], extra].concat(),
        ))
        .env("CLIP_TRAIN_TEST_NAN_AT_STEP", step);
        cmd.output().unwrap()
    };
    // fp32: step 5's loss is NaN. The run stops there, naming step_4 (written before the
    // weights went bad) as the checkpoint to go back to, and writes nothing after it.
    let out = run_nan("fp32", &[], "5");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let ckpts = logs.join("fp32/checkpoints");
    let step4 = ckpts.join("step_4.safetensors");
    let msg = format!(
        "the loss is NaN at step 5 (epoch 0): the run diverged, stopping; newest good checkpoint: {}",
        step4.display()
    );
    assert_eq!(err.lines().filter(|l| l.contains(&msg)).count(), 2, "{err}");
    assert!(log_of(&logs, "fp32").contains(&msg));
    assert!(step4.is_file());
    let mut left: Vec<_> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["step_2.safetensors", "step_4.safetensors"]);
    // NaN before any checkpoint: says there is none.
    let out = run_nan("early", &[], "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("newest good checkpoint: none (no checkpoint written yet)"),
        "{err}"
    );
    // --precision amp: the NaN step is one the loss scaler skips, not a divergence. The run
    // goes on to the end.
    let out = run_nan("amp", &["--precision", "amp"], "5");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.join("amp/checkpoints/epoch_1.safetensors").is_file());
    let state =
        clip_train::checkpoint::peek_state(&logs.join("amp/checkpoints/epoch_1.safetensors"))
            .unwrap();
    // The NaN step is among the skipped ones (AdamW's own count lags the run's).
    assert!(
        state.optimizer_step.is_some_and(|o| o < state.step),
        "{state:?}"
    );
    assert!(!log_of(&logs, "amp").contains("diverged"));
    let _ = std::fs::remove_dir_all(&logs);
}

/// A ViT on the trainer's paths: patch dropout (`--force-patch-dropout`, training only) with
/// gradient checkpointing, stopped mid-run and resumed bitwise (the masks are redrawn from the
/// step's seed); without checkpointing the same run ends at the same weights to round-off.
#[test]
fn vit_with_patch_dropout_and_grad_checkpointing_resumes_exactly() {
    let logs = tempdir("vit");
    let a = |name: &str, extra: &[&str]| {
        let base = [
            "--force-patch-dropout",
            "0.5",
            "--save-every-n-steps",
            "3",
            "--epochs",
            "2",
        ];
        args(&logs, name, "vit_tiny_test", &[&base[..], extra].concat())
    };
    ok(&a("ckpt", &["--grad-checkpointing"]));
    ok(&a("plain", &[]));
    let full = logs.join("ckpt");
    let last = full.join("checkpoints/epoch_2.safetensors");
    let losses = logged_losses(&full);
    assert_eq!(losses.len(), 16);
    assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
    let (wc, wp) = (
        weights(&last),
        weights(&logs.join("plain/checkpoints/epoch_2.safetensors")),
    );
    for ((k, c), (_, p)) in wc.iter().zip(&wp) {
        let scale = p.abs().max().double_value(&[]).max(1e-30);
        let e = (c - p).abs().max().double_value(&[]) / scale;
        assert!(e <= 1e-4, "{k}: checkpointed vs plain rel diff {e:e}");
    }
    stopped_copy(&full, &logs.join("stop"), 9);
    ok(&resume_latest(&a("stop", &["--grad-checkpointing"])));
    assert_bitwise_equal(&logs.join("stop/checkpoints/epoch_2.safetensors"), &last);
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--precision bf16` on a ViT: OpenCLIP's `convert_weights_to_lp` dtypes (linear layers bf16;
/// embeddings, LayerNorms, logit_scale fp32) in the checkpoint, and an exact resume.
#[test]
fn vit_bf16_weights_train_and_resume_exactly() {
    let logs = tempdir("vit-bf16");
    let a = |name: &str| {
        let extra = [
            "--precision",
            "bf16",
            "--save-every-n-steps",
            "3",
            "--train-num-samples",
            "48",
        ];
        args(&logs, name, "vit_tiny_test", &extra)
    };
    ok(&a("full"));
    let last = logs.join("full/checkpoints/epoch_1.safetensors");
    let w = weights(&last);
    let kind = |k: &str| get(&w, k).kind();
    for k in ["visual.conv1.weight", "visual.proj", "text_projection"] {
        assert_eq!(kind(k), tch::Kind::BFloat16, "{k}");
    }
    for k in [
        "visual.class_embedding",
        "visual.ln_pre.weight",
        "token_embedding.weight",
        "logit_scale",
    ] {
        assert_eq!(kind(k), tch::Kind::Float, "{k}");
    }
    stopped_copy(&logs.join("full"), &logs.join("stop"), 3);
    ok(&resume_latest(&a("stop")));
    assert_bitwise_equal(&logs.join("stop/checkpoints/epoch_1.safetensors"), &last);
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--lock-image --lock-image-unlocked-groups 2` on a ViT: its last block, `ln_post` and `proj`
/// train, the rest of the image tower keeps its initial weights; the text tower trains.
#[test]
fn vit_lock_image_unlocked_groups() {
    let logs = tempdir("vit-lock");
    ok(&args(&logs, "init", "vit_tiny_test", &["--lr", "0"]));
    let lock = ["--lock-image", "--lock-image-unlocked-groups", "2"];
    ok(&args(&logs, "locked", "vit_tiny_test", &lock));
    let init = weights(&logs.join("init/checkpoints/epoch_1.safetensors"));
    let after = weights(&logs.join("locked/checkpoints/epoch_1.safetensors"));
    for (k, b) in after.iter().filter(|(k, _)| !k.starts_with("optimizer.")) {
        let trains = !k.starts_with("visual.")
            || k.starts_with("visual.transformer.resblocks.1.")
            || k.starts_with("visual.ln_post.")
            || k == "visual.proj";
        assert_eq!(!get(&init, k).equal(b), trains, "{k}");
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--pretrained` weights of a ViT trained at 32 px / 77 tokens, fine-tuned with
/// `--force-image-size 48 --force-context-length 32`: the positional embeddings are resized on
/// load (as OpenCLIP's `load_checkpoint`; the resizing itself is compared with OpenCLIP's in
/// clip-model's `vit::positional_embeddings_resize_as_openclip`) and the run trains at the new
/// sizes; at `--lr 0` it ends with exactly the resized weights.
#[test]
fn vit_force_image_size_resizes_pretrained_positions() {
    let logs = tempdir("vit-resize");
    ok(&args(&logs, "base", "vit_tiny_test", &[]));
    let base = logs.join("base/checkpoints/epoch_1.safetensors");
    let forced = [
        "--pretrained",
        base.to_str().unwrap(),
        "--force-image-size",
        "48",
        "--force-context-length",
        "32",
    ];
    ok(&args(
        &logs,
        "lr0",
        "vit_tiny_test",
        &[&forced[..], &["--lr", "0"]].concat(),
    ));
    ok(&args(&logs, "tuned", "vit_tiny_test", &forced));
    let mut cfg = clip_model::ClipConfig::load("vit_tiny_test").unwrap();
    cfg.vision.image_size = (48, 48);
    cfg.text.context_length = 32;
    let mut want: Vec<(String, tch::Tensor)> = weights(&base)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .collect();
    clip_model::weights::resize_pos_embeds(&mut want, &cfg).unwrap();
    let got = weights(&logs.join("lr0/checkpoints/epoch_1.safetensors"));
    assert_eq!(
        get(&got, "visual.positional_embedding").size(),
        vec![37, 48]
    );
    assert_eq!(get(&got, "positional_embedding").size(), vec![32, 32]);
    for (k, w) in &want {
        assert!(get(&got, k).equal(w), "{k}");
    }
    let losses = logged_losses(&logs.join("tuned"));
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let _ = std::fs::remove_dir_all(&logs);
}
