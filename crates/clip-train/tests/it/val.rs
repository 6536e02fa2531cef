//! `--val-data`: contrastive validation against OpenCLIP's own `evaluate` on the same weights and
//! shards (scripts/val-goldens.py): the same ranks and recalls, the same loss; logged after the
//! epoch and in `results.jsonl`, and once more when there is no training data.
mod common;
use common::{make_shards, ok, python, root, tempdir};
use std::path::Path;
use std::process::Command;

fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    common::run_args(
        &[
            "--dataset-type",
            "synthetic",
            "--train-num-samples",
            "16",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--model",
            "clip_tiny",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--lr",
            "1e-3",
            "--warmup",
            "2",
            "--workers",
            "1",
        ],
        name,
        logs,
        extra,
    )
}

fn last_results(run_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run_dir.join("checkpoints/results.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn val_data_metrics_match_openclip() {
    let dir = tempdir("val");
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 22, 8, 2);
    let spec = format!("{}/{{00000..00002}}.tar", shards.display());
    // 22 pairs in batches of 4: the last batch is partial (2), as OpenCLIP's val loader makes it.
    ok(&args(
        &dir,
        "run",
        &["--val-data", &spec, "--val-num-samples", "22"],
    ));
    let run = dir.join("run");
    let log = std::fs::read_to_string(run.join("out.log")).unwrap();
    assert!(log.contains("Eval Epoch: 1 [4 / 22]\tClip Loss: "), "{log}");
    assert!(
        log.contains("Eval Epoch: 1 image_to_text_mean_rank: "),
        "{log}"
    );
    let ours = last_results(&run);

    let ckpt = run.join("checkpoints/epoch_1.safetensors");
    let out = Command::new(python())
        .arg(root().join("scripts/val-goldens.py"))
        .args(["clip_tiny", &ckpt.display().to_string(), &spec, "22", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let theirs: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let (o, t) = (ours.as_object().unwrap(), theirs.as_object().unwrap());
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        t.keys().collect::<Vec<_>>(),
        "the same metrics in the same order"
    );
    for (k, want) in t {
        let (got, want) = (o[k].as_f64().unwrap(), want.as_f64().unwrap());
        // Ranks and recalls are exact; the loss differs by JPEG decoding and resampling only.
        let tol = if k == "clip_val_loss" {
            1e-3 * want
        } else {
            0.0
        };
        assert!((got - want).abs() <= tol, "{k}: {got} vs OpenCLIP's {want}");
    }
    assert_eq!(o["num_samples"], 22);

    // No training data: one evaluation of the given weights (epoch 0), the same figures.
    let mut eval_only = args(
        &dir,
        "eval",
        &["--val-data", &spec, "--val-num-samples", "22"],
    );
    let pos = eval_only
        .iter()
        .position(|a| a == "--dataset-type")
        .unwrap();
    eval_only.drain(pos..pos + 2);
    eval_only.extend(["--pretrained".into(), ckpt.display().to_string()]);
    ok(&eval_only);
    let again = last_results(&dir.join("eval"));
    assert_eq!(again["epoch"], 0);
    assert_eq!(
        again["image_to_text_mean_rank"],
        ours["image_to_text_mean_rank"]
    );
    assert_eq!(again["clip_val_loss"], ours["clip_val_loss"]);
    let _ = std::fs::remove_dir_all(&dir);
}
