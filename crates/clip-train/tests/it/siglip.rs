//! `--siglip` end to end on the tiny model and synthetic data (CPU; fp32, and amp_bf16 / bf16 /
//! amp for training and resume): SigLIP's model
//! (`logit_bias` in every checkpoint, logit scale from ln 10), OpenCLIP's log line, exact resume,
//! `--accum-freq`, `--pretrained` CLIP weights without a `logit_bias`, and the loads that do not
//! fit.
use crate::common::{
    assert_bitwise_equal, cli, get, logged_losses, no_drop_path_config, ok, resume_latest, run,
    stopped_copy, tempdir, weights,
};
use std::path::Path;

fn args(logs: &Path, name: &str, model: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --train-num-samples 64 --batch-size 8 --epochs 1 \
                 --lr 1e-3 --warmup 2 --log-every-n-steps 1 --seed 5 --siglip";
    cli(flags, name, logs, &[&["--model", model], extra].concat())
}

/// The run's checkpoint tensor `key`.
fn tensor(logs: &Path, run: &str, ckpt: &str, key: &str) -> tch::Tensor {
    let w = weights(&logs.join(run).join("checkpoints").join(ckpt));
    get(&w, key)
}

#[test]
fn siglip_trains_logs_and_resumes_exactly() {
    let logs = tempdir("siglip");
    let model = no_drop_path_config(&logs);
    let save = ["--save-every-n-steps", "3"];
    ok(&args(&logs, "full", &model, &save));
    let log = std::fs::read_to_string(logs.join("full/out.log")).unwrap();
    // OpenCLIP's line: SigLipLoss's dict key is `contrastive_loss`, the scale starts at 10.
    let first = log
        .lines()
        .find(|l| l.contains("Train Epoch: 0 [ 8/64"))
        .unwrap();
    let scale: f64 = first.split("Logit Scale: ").nth(1).unwrap()[..6]
        .trim()
        .parse()
        .unwrap();
    assert!((scale - 10.0).abs() < 0.01, "{first}");
    assert!(first.contains(" Contrastive_loss: "), "{first}");
    let losses = logged_losses(&logs.join("full"));
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < losses[0], "{losses:?}");
    // logit_bias is a parameter: in every checkpoint, trained (AdamW moves it from −10), with
    // its optimizer moments.
    let bias = tensor(&logs, "full", "epoch_1.safetensors", "logit_bias");
    assert_eq!(bias.size(), Vec::<i64>::new());
    let b = bias.double_value(&[]);
    assert!(b != -10.0 && (b + 10.0).abs() < 0.1, "logit_bias {b}");
    let ckpt = weights(&logs.join("full/checkpoints/step_3.safetensors"));
    assert!(ckpt
        .iter()
        .any(|(k, _)| k == "optimizer.exp_avg.logit_bias"));
    // Stopped after step 3 and resumed: bitwise the uninterrupted run.
    let full = logs.join("full");
    stopped_copy(&full, &logs.join("stopped"), 3);
    ok(&resume_latest(&args(&logs, "stopped", &model, &save)));
    assert_bitwise_equal(
        &logs.join("stopped/checkpoints/epoch_1.safetensors"),
        &full.join("checkpoints/epoch_1.safetensors"),
    );
    // --accum-freq 2 × 4: the first step sees the same 8 samples and weights, so the same loss.
    ok(&args(
        &logs,
        "accum",
        &model,
        &["--batch-size", "4", "--accum-freq", "2"],
    ));
    let la = logged_losses(&logs.join("accum"));
    assert!(
        (la[0] - losses[0]).abs() <= 1e-5 * losses[0],
        "{la:?} vs {losses:?}"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// CLIP weights without a `logit_bias` start a `--siglip` run with it at 0 (OpenCLIP's
/// `load_checkpoint`, open_clip#712); resuming across the two losses fails on the key that does
/// not fit; a non-SigLIP run resumes checkpoints that never had one.
#[test]
fn pretrained_clip_weights_and_checkpoints_across_losses() {
    let logs = tempdir("siglip-load");
    let model = no_drop_path_config(&logs);
    let clip = |name: &str, extra: &[&str]| {
        let mut a = args(&logs, name, &model, extra);
        a.retain(|f| f != "--siglip");
        a
    };
    let short = ["--train-num-samples", "16", "--save-every-n-steps", "1"];
    ok(&clip("clip", &short));
    let clip_ckpt = logs.join("clip/checkpoints/epoch_1.safetensors");
    assert!(!weights(&clip_ckpt)
        .iter()
        .any(|(k, _)| k.contains("logit_bias")));
    // A non-SigLIP run resumes its own checkpoints as before.
    stopped_copy(&logs.join("clip"), &logs.join("clip-stopped"), 1);
    ok(&resume_latest(&clip("clip-stopped", &short)));
    assert_bitwise_equal(
        &logs.join("clip-stopped/checkpoints/epoch_1.safetensors"),
        &clip_ckpt,
    );
    // --pretrained CLIP weights under --siglip (lr 0: the loaded values stay).
    let pre = clip_ckpt.display().to_string();
    ok(&args(
        &logs,
        "from-clip",
        &model,
        &[
            "--train-num-samples",
            "16",
            "--lr",
            "0",
            "--pretrained",
            &pre,
        ],
    ));
    let bias = tensor(&logs, "from-clip", "epoch_1.safetensors", "logit_bias");
    assert_eq!(bias.double_value(&[]), 0.0);
    let scale = |run: &str| tensor(&logs, run, "epoch_1.safetensors", "logit_scale");
    assert!(scale("from-clip").equal(&scale("clip")));
    // Resuming across the losses: the missing or unexpected key, named.
    let siglip_ckpt = logs.join("from-clip/checkpoints/epoch_1.safetensors");
    let siglip_ckpt = siglip_ckpt.display().to_string();
    for (cmd, want) in [
        (
            args(&logs, "siglip-from-clip", &model, &["--resume", &pre]),
            "1 missing (logit_bias)",
        ),
        (
            clip("clip-from-siglip", &["--resume", &siglip_ckpt]),
            "1 unexpected (logit_bias)",
        ),
    ] {
        let out = run(&cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// A model config with OpenCLIP's SigLIP key `init_logit_bias` trains with `--siglip` only (its
/// ClipLoss would fail on the extra `logit_bias`): refused without, one line, exit 2.
#[test]
fn a_siglip_config_needs_siglip_to_train() {
    let logs = tempdir("siglip-config");
    let cfg = std::fs::read_to_string(no_drop_path_config(&logs)).unwrap();
    let path = logs.join("siglip_tiny.json");
    std::fs::write(&path, cfg.replacen('{', r#"{"init_logit_bias": -10,"#, 1)).unwrap();
    let model = path.display().to_string();
    let short = ["--train-num-samples", "16"];
    let mut without = args(&logs, "refused", &model, &short);
    without.retain(|f| f != "--siglip");
    let out = run(&without);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("init_logit_bias") && err.contains("--siglip"),
        "{err}"
    );
    assert!(!logs.join("refused").exists());
    ok(&args(&logs, "trained", &model, &short));
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--siglip` on the low-precision paths: `amp_bf16` (bf16 autocast), `bf16` (bf16 weights, text
/// LayerNorms fp32) and `amp` (fp16 autocast, the loss scaler). Each trains from the fp32 run's
/// first loss (within bf16/fp16 rounding), keeps `logit_bias` in its checkpoints, and resumes
/// from a mid-run checkpoint bitwise.
#[test]
fn siglip_trains_and_resumes_exactly_in_every_precision() {
    let logs = tempdir("siglip-precisions");
    let model = no_drop_path_config(&logs);
    let save = ["--save-every-n-steps", "3"];
    ok(&args(&logs, "fp32", &model, &save));
    let first = logged_losses(&logs.join("fp32"))[0];
    for precision in ["amp_bf16", "bf16", "amp"] {
        let run = |name: &str| {
            args(
                &logs,
                name,
                &model,
                &[&save[..], &["--precision", precision]].concat(),
            )
        };
        ok(&run(precision));
        let losses = logged_losses(&logs.join(precision));
        assert_eq!(losses.len(), 8, "{precision}");
        assert!(
            losses.iter().all(|l| l.is_finite()),
            "{precision}: {losses:?}"
        );
        assert!(
            (losses[0] - first).abs() <= 0.02 * first,
            "{precision}: first loss {} vs fp32 {first}",
            losses[0]
        );
        let bias = tensor(&logs, precision, "epoch_1.safetensors", "logit_bias");
        assert!(bias.double_value(&[]).is_finite(), "{precision}");
        let stopped = format!("{precision}-stopped");
        stopped_copy(&logs.join(precision), &logs.join(&stopped), 3);
        ok(&resume_latest(&run(&stopped)));
        assert_bitwise_equal(
            &logs.join(&stopped).join("checkpoints/epoch_1.safetensors"),
            &logs.join(precision).join("checkpoints/epoch_1.safetensors"),
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}
