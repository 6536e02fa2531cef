//! The trainer on webdataset shards (CPU, fp32, the tiny model with the tokenizer's vocabulary):
//! exact resume of the data position from mid-epoch and epoch-boundary checkpoints (plain and
//! resampled + upsampled sources), `--dataset-type auto`, data-flag errors up front, loader errors
//! stopping the run.
use crate::common::{
    assert_bitwise_equal, cli, make_shards, ok, resume_latest, run, stopped_copy, tempdir, weights,
    write_tar,
};
use clip_train::data::{DataKind, SavedPositions};
use std::path::Path;
use std::process::Command;

use tch::Tensor;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

fn args(model: &str, data: &str, logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--batch-size 8 --epochs 2 --workers 2 --lr 1e-3 --warmup 3 --grad-clip-norm 1.0 \
                 --save-every-n-steps 3 --log-every-n-steps 4 --seed 5";
    let more = [&["--train-data", data, "--model", model], extra].concat();
    cli(flags, name, logs, &more)
}

/// Runs `full`, then for each stop step a copy of its checkpoints up to there resumed with
/// `--resume latest`: the final weights must be bitwise the full run's.
fn check_resume(base: impl Fn(&str) -> Vec<String>, logs: &Path, stops: &[i64], last: &str) {
    ok(&base("full"));
    let full = logs.join("full");
    let last_ckpt = full.join("checkpoints").join(last);
    assert!(last_ckpt.exists());
    for &step in stops {
        let name = format!("stop{step}");
        stopped_copy(&full, &logs.join(&name), step);
        let a = resume_latest(&base(&name));
        ok(&a);
        assert_bitwise_equal(&logs.join(&name).join("checkpoints").join(last), &last_ckpt);
        let log = std::fs::read_to_string(logs.join(&name).join("out.log")).unwrap();
        assert!(
            log.contains(&format!("step {step})")),
            "resumed from step {step}: {log}"
        );
    }
}

#[test]
fn webdataset_resume_mid_epoch_and_at_epoch_boundary_is_bitwise_the_uninterrupted_run() {
    let dir = tempdir("resume");
    let model = "clip_tiny";
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 64, 16, 0);
    let data = format!("{}/{{00000..00003}}.tar", shards.display());
    let logs = dir.join("logs");
    // 64 samples (from sizes.json: no --train-num-samples), batch 8, 2 workers: 8 batches per
    // epoch (4 per worker); 16 steps.
    let base = |name: &str| args(model, &data, &logs, name, &["--dataset-type", "webdataset"]);
    check_resume(base, &logs, &[3, 8, 12, 15], "epoch_2.safetensors");

    let full = logs.join("full");
    let log = std::fs::read_to_string(full.join("out.log")).unwrap();
    assert!(log.contains("Train Epoch: 1 [64/64 (100%)]"), "{log}");
    // The checkpoint carries the loader position: mid-epoch a clip-data Position, at the epoch
    // boundary the start of the next epoch.
    let mid =
        clip_train::checkpoint::peek_state(&full.join("checkpoints/step_3.safetensors")).unwrap();
    let Some(SavedPositions::One(mid)) = mid.data_position else {
        panic!(
            "a one-rank checkpoint holds one position: {:?}",
            mid.data_position
        )
    };
    assert_eq!((mid.source, mid.batches), (DataKind::WebDataset, 3));
    let pos = mid.loader.expect("a mid-epoch webdataset position");
    assert_eq!((pos.epoch, pos.batches, pos.streams.len()), (0, 3, 2));
    assert_eq!(pos.streams.iter().map(|s| s.taken).sum::<u64>(), 24);
    let boundary =
        clip_train::checkpoint::peek_state(&full.join("checkpoints/epoch_1.safetensors")).unwrap();
    assert_eq!((boundary.epoch, boundary.step_in_epoch), (1, 0));
    let Some(SavedPositions::One(next)) = boundary.data_position else {
        panic!("{:?}", boundary.data_position)
    };
    assert_eq!((next.epoch, next.batches), (1, 0));
    assert!(next.loader.is_none());

    // A different seed is a different data order (and init): the comparison above has teeth.
    ok(&args(
        model,
        &data,
        &logs,
        "seed6",
        &["--dataset-type", "webdataset", "--seed", "6"],
    ));
    let a = weights(&full.join("checkpoints/epoch_2.safetensors"));
    let b = weights(&logs.join("seed6/checkpoints/epoch_2.safetensors"));
    assert!(a.iter().zip(&b).any(|((_, x), (_, y))| !x.equal(y)));

    // Resumed with another --workers, the run keeps the checkpoint's 2 streams per rank (its
    // sample order) and says so: bitwise the uninterrupted run, through the next epoch too.
    stopped_copy(&full, &logs.join("workers1"), 3);
    let one = ["--dataset-type", "webdataset", "--workers", "1"];
    ok(&resume_latest(&args(model, &data, &logs, "workers1", &one)));
    assert_bitwise_equal(
        &logs.join("workers1/checkpoints/epoch_2.safetensors"),
        &full.join("checkpoints/epoch_2.safetensors"),
    );
    let log = std::fs::read_to_string(logs.join("workers1/out.log")).unwrap();
    assert!(
        log.contains("keeping its sample order (2 streams, served by --workers 1"),
        "{log}"
    );

    // Resuming a mid-epoch checkpoint under another data order is refused, not silently wrong.
    stopped_copy(&full, &logs.join("moved"), 3);
    let moved = [
        "--dataset-type",
        "webdataset",
        "--seed",
        "7",
        "--resume",
        "latest",
    ];
    let out = run(&args(model, &data, &logs, "moved", &moved));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resampled_upsampled_sources_with_auto_type_resume_exactly() {
    let dir = tempdir("resampled");
    let model = "clip_tiny";
    let (a, b) = (dir.join("a"), dir.join("b"));
    make_shards(&dir, &a, 40, 20, 0);
    make_shards(&dir, &b, 20, 20, 1);
    // `--dataset-type auto` (the default) on .tar sources.
    let data = format!(
        "{}/{{00000..00001}}.tar::{}/00000.tar",
        a.display(),
        b.display()
    );
    let logs = dir.join("logs");
    let base = |name: &str| {
        let resampled = "--dataset-resampled --train-data-upsampling-factors 1::3 \
                         --train-num-samples 60 --epochs 1";
        let extra: Vec<&str> = resampled.split_whitespace().collect();
        args(model, &data, &logs, name, &extra)
    };
    // 60 samples, batch 8, 2 workers: ceil(60/8) = 8 batches (4 per worker).
    check_resume(base, &logs, &[3, 6], "epoch_1.safetensors");
    let log = std::fs::read_to_string(logs.join("full/out.log")).unwrap();
    assert!(log.contains("Train Epoch: 0 [64/64 (100%)]"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_flag_errors_are_one_line_exit_2_and_write_nothing() {
    let dir = tempdir("flags");
    let model = "clip_tiny";
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 8, 4, 0);
    let data = format!("{}/{{00000..00001}}.tar", shards.display());
    let logs = dir.join("logs");
    let refused = |name: &str, model: &str, data: &str, extra: &[&str], what: &str| {
        let out = run(&args(model, data, &logs, name, extra));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(what), "{name}: {err}");
        assert!(!logs.join(name).exists(), "{name}: nothing written");
    };
    refused(
        "aug",
        model,
        &data,
        &["--aug-cfg", "scale=(0.5, 1.0)", "sclae=(0.5, 1.0)"],
        "sclae",
    );
    refused(
        "augval",
        model,
        &data,
        &["--aug-cfg", "re_prob=2"],
        "re_prob",
    );
    refused(
        "up",
        model,
        &data,
        &["--train-data-upsampling-factors", "2"],
        "--dataset-resampled",
    );
    refused(
        "mean",
        model,
        &data,
        &["--image-mean", "0.5", "0.5"],
        "--image-mean",
    );
    refused("vocab", "clip_tiny_test", &data, &[], "vocab_size");
    refused(
        "missing",
        model,
        &format!("{}/{{00000..00002}}.tar", shards.display()),
        &[],
        "00002.tar",
    );
    refused(
        "auto",
        model,
        &format!("{}/train.parquet", shards.display()),
        &[],
        "dataset type",
    );
    // No sizes.json beside the shards and no --train-num-samples.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for s in ["00000.tar", "00001.tar"] {
        std::fs::copy(shards.join(s), bare.join(s)).unwrap();
    }
    refused(
        "nosize",
        model,
        &format!("{}/{{00000..00001}}.tar", bare.display()),
        &[],
        "--train-num-samples",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_without_a_usable_sample_stop_the_run_with_the_loaders_error() {
    let dir = tempdir("bad");
    let model = "clip_tiny";
    for s in 0..2 {
        let members: Vec<(String, Vec<u8>)> = (0..6)
            .flat_map(|i| {
                let key = format!("{s}{i:04}");
                [
                    (format!("{key}.jpg"), b"not a jpeg".to_vec()),
                    (format!("{key}.txt"), b"a red square".to_vec()),
                ]
            })
            .collect();
        write_tar(&dir.join(format!("{s:05}.tar")), &members);
    }
    let logs = dir.join("logs");
    let data = format!("{}/{{00000..00001}}.tar", dir.display());
    let out = run(&args(
        model,
        &data,
        &logs,
        "bad",
        &["--train-num-samples", "16"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no usable sample"), "{err}");
    let log = std::fs::read_to_string(logs.join("bad/out.log")).unwrap();
    assert!(log.contains("| ERROR | training data"), "{log}");
    assert!(!logs.join("bad/checkpoints/epoch_1.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stalled_source_stops_the_run_after_the_no_progress_timeout() {
    let dir = tempdir("stall");
    let model = "clip_tiny";
    let logs = dir.join("logs");
    // Two sources that produce nothing for a minute.
    let a = args(
        model,
        "pipe:sleep 6{0..1}",
        &logs,
        "stall",
        &["--dataset-type", "webdataset", "--train-num-samples", "16"],
    );
    let t0 = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(&a)
        .env("CLIP_TRAIN_DATA_TIMEOUT", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no valid sample for"), "{err}");
    assert!(
        t0.elapsed().as_secs() < 40,
        "stopped after {:?}",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn aug_cfg_and_image_mean_std_reach_the_transform() {
    let dir = tempdir("aug");
    let model = "clip_tiny";
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 32, 16, 0);
    let data = format!("{}/{{00000..00001}}.tar", shards.display());
    let logs = dir.join("logs");
    let one_epoch = |name: &str, extra: &[&str]| {
        let out = ok(&args(
            model,
            &data,
            &logs,
            name,
            &[&["--epochs", "1"], extra].concat(),
        ));
        (
            weights(&logs.join(name).join("checkpoints/epoch_1.safetensors")),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (plain, _) = one_epoch("plain", &[]);
    let (same, _) = one_epoch(
        "same",
        &["--image-mean", "0.48145466", "0.4578275", "0.40821073"],
    );
    let (mean, _) = one_epoch("mean", &["--image-mean", "0.5", "--image-std", "0.5"]);
    let (aug, err) = one_epoch("aug", &["--aug-cfg", "scale=(0.3, 0.6)", "re_prob=0.5"]);
    let differs = |a: &[(String, Tensor)], b: &[(String, Tensor)]| {
        a.iter().zip(b).any(|((_, x), (_, y))| !x.equal(y))
    };
    assert!(
        !differs(&plain, &same),
        "the default mean given explicitly changes nothing"
    );
    assert!(
        differs(&plain, &mean),
        "--image-mean/--image-std are applied"
    );
    assert!(differs(&plain, &aug), "--aug-cfg scale is applied");
    // re_prob needs use_timm: OpenCLIP warns that it is unused.
    assert!(
        err.contains("Unused augmentation cfg items") && err.contains("re_prob"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
