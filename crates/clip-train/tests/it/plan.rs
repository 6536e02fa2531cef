//! `plan::validate` refuses every bad flag value before anything is written: each case below
//! changes one flag of a command line that trains fine, and clip-train must exit 2 with one line
//! naming the culprit and leave its working folder empty (no `logs/`, no run directory).
use std::path::Path;
use std::process::Command;

/// A run that works: 2 steps of synthetic data on the tiny model.
const BASE: &[&str] = &[
    "--dataset-type",
    "synthetic",
    "--train-num-samples",
    "8",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--model",
    "clip_tiny",
    "--logs",
    "logs",
    "--name",
    "run",
    "--warmup",
    "1",
];

/// Runs clip-train in `dir` with BASE then `extra` (a repeated flag overrides, as argparse).
fn run_in(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-train"))
        .args(BASE)
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every flag a value can make wrong, one case each, with the text the error must contain.
/// (Flags that are plain switches the trainer implements, e.g. `--grad-checkpointing`, have no
/// wrong value; clap's own refusals — unknown flags, bad numbers, values outside `choices` — are
/// `flags.rs`'s cases.)
#[rustfmt::skip]
const CASES: &[(&[&str], &str)] = &[
    // Checks that only the run used to make (it wrote logs/NAME/ and exited 1).
    (&["--lr-scheduler", "linear"], "--lr-scheduler linear"),
    (&["--lr-scheduler", "const-cooldown"], "--epochs-cooldown"),
    // Numbers out of range.
    (&["--batch-size", "0"], "--batch-size"),
    (&["--epochs", "0"], "--epochs"),
    (&["--workers", "-1"], "--workers"),
    (&["--warmup", "-1"], "--warmup"),
    (&["--accum-freq", "0"], "--accum-freq"),
    (&["--accum-freq", "3"], "--accum-freq 3"),
    (&["--lock-text-unlocked-layers", "-1"], "--lock-text-unlocked-layers"),
    (&["--save-every-n-steps", "0"], "--save-every-n-steps"),
    (&["--profile-steps", "3"], "--profile-steps \"3\""),
    (&["--profile-steps", "0:2"], "--profile-steps \"0:2\""),
    (&["--profile-steps", "5:4"], "--profile-steps \"5:4\""),
    (&["--train-num-samples", "0"], "--train-num-samples"),
    (&["--train-num-samples", "3"], "--train-num-samples 3"),
    (&["--image-mean", "0.1", "0.2"], "--image-mean"),
    // Numbers that are not finite, or outside what torch's AdamW and the formulas accept: one
    // case per rule here (each case costs a process start); NUMBER_CASES has the rest.
    (&["--lr", "nan"], "--lr NaN: must be a finite number, at least 0"),
    (&["--lr", "inf"], "--lr inf"),
    (&["--lr", "-1"], "--lr -1"),
    (&["--beta1", "1"], "--beta1 1: must be in [0, 1)"),
    (&["--grad-clip-norm", "0"], "--grad-clip-norm 0: must be a finite number above 0"),
    (&["--log-every-n-steps", "0"], "--log-every-n-steps 0: must be at least 1"),
    // Values the trainer does not implement.
    (&["--precision", "fp16"], "--precision fp16"),
    (&["--precision", "pure_fp16"], "--precision pure_fp16"),
    (&["--report-to", "mlflow"], "--report-to mlflow"),
    (&["--report-to", "tensorboard,wandb,mlflow"], "--report-to mlflow"),
    (&["--report-to", "wandb", "--debug"], "--debug"),
    (&["--dist-backend", "mpi"], "--dist-backend mpi"),
    (&["--device", "tpu"], "--device tpu"),
    (&["--device", "cuda:99"], "--device cuda:99"),
    (&["--model", "no_such_model"], "no_such_model"),
    (&["--model", "EVA02-L-14"], "eva02_large_patch14_clip_224"),
    // A SigLIP model whose tokenizer is not in the Hugging Face cache: named, nothing written.
    (&["--model", "ViT-B-16-SigLIP"], "timm/ViT-B-16-SigLIP"),
    (&["--model", "ViT-L-14-CLIPA"], "bert-base-uncased"),
    // Model overrides out of range or for a tower that has no such thing.
    (&["--lock-image", "--lock-image-unlocked-groups", "-1"], "--lock-image-unlocked-groups"),
    (&["--force-context-length", "0"], "--force-context-length"),
    (&["--force-image-size", "0"], "--force-image-size"),
    (&["--force-image-size", "32", "32", "32"], "--force-image-size"),
    (&["--model", "vit_tiny_test", "--force-image-size", "4"], "--force-image-size"),
    (&["--force-patch-dropout", "0.5"], "--force-patch-dropout"),
    (&["--model", "vit_tiny_test", "--force-patch-dropout", "1.0"], "--force-patch-dropout"),
    // Paths that are not there.
    (&["--pretrained", "missing.pt"], "--pretrained missing.pt"),
    // timm's weights are never downloaded (and the tiny trunk has none).
    (&["--pretrained-image"], "--pretrained-image: timm has no pretrained weights for convnext_test_tiny"),
    (&["--resume", "missing.safetensors"], "--resume missing.safetensors"),
    (&["--imagenet-val", "missing-imagenet"], "missing-imagenet"),
    (&["--val-data", "missing-val.tar"], "missing-val.tar"),
    // Data flags that contradict the data.
    (&["--aug-cfg", "scale=(0.5, 1.0)"], "--aug-cfg"),
    (&["--dataset-resampled"], "--dataset-resampled"),
    (&["--train-data-upsampling-factors", "1"], "--train-data-upsampling-factors"),
    (&["--dataset-type", "webdataset"], "--train-data"),
    (&["--dataset-type", "auto", "--train-data", "x.parquet"], "x.parquet"),
    (&["--dataset-type", "webdataset", "--train-data", "missing-{0..1}.tar"], "missing-0.tar"),
    (&["--dataset-type", "csv", "--train-data", "missing.csv"], "missing.csv"),
    // Flags whose non-default values are not implemented yet.
    (&["--imagenet-v2", "x"], "--imagenet-v2"),
    (&["--cache-dir", "x"], "--cache-dir"),
    (&["--log-local"], "--log-local"),
    (&["--use-bn-sync"], "--use-bn-sync"),
    (&["--skip-scheduler"], "--skip-scheduler"),
    (&["--torchscript"], "--torchscript"),
    (&["--torchcompile"], "--torchcompile"),
    (&["--trace"], "--trace"),
    (&["--copy-codebase"], "--copy-codebase"),
    (&["--horovod"], "--horovod"),
    (&["--remote-sync", "/shared/runs"], "--remote-sync /shared/runs"),
    (&["--remote-sync", "s3:///runs"], "--remote-sync s3:///runs"),
    (&["--remote-sync", "s3://b/runs", "--remote-sync-protocol", "fsspec"], "--remote-sync-protocol fsspec"),
    (&["--remote-sync", "s3://b/runs", "--remote-sync-frequency", "0"], "--remote-sync-frequency"),
    (&["--distill-model", "x"], "--distill-model"),
    (&["--distill-pretrained", "x"], "--distill-pretrained"),
    (&["--use-bnb-linear", "x"], "--use-bnb-linear"),
    // Optimizers and their settings: another name (naming the ones built), timm's without
    // --lr (OpenCLIP fails at the first step), one beta, keywords no builder takes, --momentum
    // and the Muon fallback list for optimizers without them, layer decays outside (0, 1].
    (&["--opt", "sgd"], "--opt sgd (clip-train builds adamw, nadamw, timm/adamw, timm/nadamw, timm/lamb"),
    (&["--opt", "timm/adabelief", "--lr", "1e-3"], "--opt timm/adabelief (clip-train builds"),
    (&["--opt", "timm/lookahead_lamb", "--lr", "1e-3"], "--opt timm/lookahead_lamb (timm's Lookahead"),
    (&["--opt", "timm/lamb"], "--opt timm/lamb needs --lr"),
    (&["--opt", "timm/lamb", "--lr", "1e-3", "--beta1", "0.8"], "--beta1 and --beta2"),
    (&["--opt-kwargs", "amsgrad=True"], "--opt-kwargs amsgrad=Bool(true) for --opt adamw"),
    (&["--opt-kwargs", "weight_decay=0.1"], "--opt-kwargs weight_decay"),
    (&["--opt", "timm/muon", "--lr", "1e-3", "--opt-kwargs", "conv_mode=sideways"], "conv_mode"),
    (&["--momentum", "0.9"], "--momentum applies to timm optimizers only"),
    (&["--opt-fallback-list", "*.bias"], "--opt-fallback-list only applies to Muon-family"),
    (&["--text-layer-decay", "1.5"], "--text-layer-decay must be in (0, 1]"),
    (&["--image-layer-decay", "0"], "--image-layer-decay must be in (0, 1]"),
    (&["--text-layer-decay", "nan"], "--text-layer-decay must be in (0, 1], got NaN"),
    (&["--opt", "timm/momentum", "--lr", "0.1", "--momentum", "nan"], "--momentum NaN: must be a finite number, at least 0"),
    (&["--opt", "timm/sgd", "--lr", "0.1", "--momentum", "-0.5"], "--momentum -0.5: must be a finite number, at least 0"),
    // Loss flags given to the loss they do not apply to (OpenCLIP ignores them silently).
    (&["--loss-dist-impl", "shift"], "--loss-dist-impl applies to --siglip"),
    (&["--siglip", "--loss-dist-impl", "ring"], "--loss-dist-impl ring"),
    (&["--siglip", "--local-loss"], "--local-loss"),
    (&["--model", "vit_tiny_test", "--pretrained-image"], "--pretrained-image: model vit_tiny_test"),
    (&["--siglip", "--gather-with-grad"], "--gather-with-grad"),
    // --fsdp's flags without it, or that cannot shard this world.
    (&["--fsdp-no-reshard-after-forward"], "--fsdp-no-reshard-after-forward needs --fsdp"),
    (&["--fsdp-offload-cpu"], "--fsdp-offload-cpu needs --fsdp"),
    (&["--fsdp-checkpoint", "sharded"], "--fsdp-checkpoint sharded needs --fsdp"),
    (&["--fsdp-shard-size", "1"], "--fsdp-shard-size needs --fsdp"),
    (&["--fsdp", "--fsdp-shard-size", "0"], "--fsdp-shard-size 0"),
    (&["--fsdp", "--fsdp-shard-size", "2"], "--fsdp-shard-size 2"),
    (&["--fsdp", "--fsdp-offload-cpu", "--precision", "amp"], "--fsdp-offload-cpu with --precision amp"),
    // --fsdp shards AdamW's state in OpenCLIP 3.3.0's two groups only.
    (&["--fsdp", "--opt", "timm/lion", "--lr", "1e-3"], "not supported yet: --fsdp with --opt timm/lion ("),
    (&["--fsdp", "--wd-exclude", "*.bias"], "not supported yet: --fsdp with --opt adamw, the development branch's parameter groups"),
];

/// The other numeric refusals, checked in this process by `plan::validate` (the same refusal
/// the process cases above turn into exit 2 with nothing written): each flag's value refused in
/// one line naming it.
#[rustfmt::skip]
const NUMBER_CASES: &[(&[&str], &str)] = &[
    (&["--beta1", "-0.1"], "--beta1 -0.1"),
    (&["--beta2", "nan"], "--beta2 NaN"),
    (&["--eps", "-0.1"], "--eps -0.1"),
    (&["--eps", "inf"], "--eps inf"),
    (&["--wd", "-0.1"], "--wd -0.1"),
    (&["--wd", "nan"], "--wd NaN"),
    (&["--grad-clip-norm", "-1"], "--grad-clip-norm -1"),
    (&["--grad-clip-norm", "inf"], "--grad-clip-norm inf"),
    (&["--lr-cooldown-end", "-0.5"], "--lr-cooldown-end -0.5"),
    (&["--lr-cooldown-power", "nan"], "--lr-cooldown-power NaN"),
    (&["--lr-cooldown-power", "-1"], "--lr-cooldown-power -1"),
    (&["--lr-scheduler", "const-cooldown", "--epochs-cooldown", "-1"], "--epochs-cooldown -1"),
    (&["--coca-caption-loss-weight", "nan"], "--coca-caption-loss-weight NaN"),
    (&["--coca-contrastive-loss-weight", "-1"], "--coca-contrastive-loss-weight -1"),
    (&["--force-patch-dropout", "nan"], "--force-patch-dropout"),
    (&["--save-frequency", "-1"], "--save-frequency -1"),
    (&["--zeroshot-frequency", "-2"], "--zeroshot-frequency -2"),
    (&["--val-frequency", "-1"], "--val-frequency -1"),
    (&["--val-num-samples", "0"], "--val-num-samples 0"),
    (&["--image-std", "nan"], "--image-mean/--image-std"),
    (&["--image-mean", "inf"], "--image-mean/--image-std"),
];

#[test]
fn every_numeric_flag_must_be_finite_and_in_range() {
    for (extra, culprit) in NUMBER_CASES {
        let argv = [&["clip-train"][..], BASE, extra].concat();
        let params = clip_train::params::parse(argv).unwrap();
        let Err(e) = clip_train::plan::validate(params) else {
            panic!("{extra:?} was accepted");
        };
        let msg = e.to_string();
        assert!(
            msg.contains(culprit),
            "{extra:?} must name {culprit:?}: {msg}"
        );
        assert!(!msg.contains('\n'), "{extra:?}: {msg}");
    }
}

#[test]
fn every_bad_flag_value_is_refused_before_anything_is_written() {
    let dir = crate::common::tempdir("plan-refusals");
    // The base command line trains: a refusal below is the changed flag's doing.
    let (code, stderr) = run_in(&dir, &[]);
    assert_eq!(code, 0, "the base run must work: {stderr}");
    assert!(dir
        .join("logs/run/checkpoints/epoch_1.safetensors")
        .is_file());
    std::fs::remove_dir_all(dir.join("logs")).unwrap();

    for (extra, culprit) in CASES {
        let (code, stderr) = run_in(&dir, &[*extra, &["--name", "refused"]].concat());
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{extra:?}: {stderr}");
        assert!(
            stderr.contains(culprit),
            "{extra:?} must name {culprit:?}: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{extra:?} wrote {left:?}");
    }
}

/// The environment switches of the benchmarks and gpu-check's negative controls are checked
/// like flags: a bad value is refused in one line naming the variable, exit 2, nothing written.
#[test]
fn bad_benchmark_and_fault_switches_are_refused_before_anything_is_written() {
    let dir = crate::common::tempdir("plan-env-refusals");
    for (var, value) in [
        ("CLIP_TRAIN_FAULT", "skip-wait"),
        ("CLIP_TRAIN_DELAY", "slow"),
        ("CLIP_TRAIN_TIME_STEPS", "0:3"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clip-train"))
            .args(BASE)
            .current_dir(&dir)
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{var} wrote");
    }
}

/// Starting a run whose directory already holds a log is refused (exit 2) and leaves it as it
/// was; `--resume latest` continues it instead.
#[test]
fn an_existing_run_is_refused_without_resume() {
    let dir = crate::common::tempdir("plan-existing");
    let (code, stderr) = run_in(&dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    let log = dir.join("logs/run/out.log");
    let before = std::fs::read(&log).unwrap();
    let (code, stderr) = run_in(&dir, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        before,
        "the refused run touched out.log"
    );
    let (code, stderr) = run_in(&dir, &["--resume", "latest"]);
    assert_eq!(code, 0, "{stderr}");
}

/// `--image-interpolation` and `--image-resize-mode` reach the eval transform (zero-shot's and
/// `--val-data`'s): the plan's is clip-data's golden-tested transform with those options, and
/// differs from the default one.
#[test]
fn image_options_reach_the_eval_transform() {
    use clip_data::transform::{
        ImageTransform, Interpolation, ResizeMode, OPENAI_MEAN, OPENAI_STD,
    };
    use rand::SeedableRng;
    let flags = [
        "--image-interpolation",
        "bilinear",
        "--image-resize-mode",
        "longest",
    ];
    let argv = [&["clip-train"][..], BASE, &flags].concat();
    let plan = clip_train::plan::validate(clip_train::params::parse(argv).unwrap()).unwrap();
    let side = plan.model.cfg.vision.image_size.0 as u32;
    // A wide picture: `longest` pads it, `shortest` crops it.
    let img = image::RgbImage::from_fn(3 * side, side, |x, y| {
        image::Rgb([(x % 251) as u8, (y * 3 % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
    let got = plan.eval.transform.apply(&img, &mut rng);
    let want = ImageTransform::eval(side, OPENAI_MEAN, OPENAI_STD)
        .with_interpolation(Interpolation::Bilinear)
        .with_resize_mode(ResizeMode::Longest)
        .apply(&img, &mut rng);
    let default = ImageTransform::eval(side, OPENAI_MEAN, OPENAI_STD).apply(&img, &mut rng);
    assert_eq!(got, want);
    assert_ne!(got, default);
}

/// An `open_clip_config.json` (the hub's `{"model_cfg", "preprocess_cfg"}`, as SigLIP's repos
/// ship it) sets the model and the preprocessing — mean and std 0.5, bilinear, squash here — where
/// no flag does; a flag still wins.
#[test]
fn an_open_clip_config_json_brings_its_preprocessing() {
    use clip_data::transform::{ImageTransform, Interpolation, ResizeMode};
    use rand::SeedableRng;
    let dir = crate::common::tempdir("open-clip-config");
    let model_cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::golden::root().join("configs/clip_tiny_test.json"))
            .unwrap(),
    )
    .unwrap();
    let file = dir.join("open_clip_config.json");
    let json = serde_json::json!({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bilinear", "resize_mode": "squash"}
    });
    std::fs::write(&file, json.to_string()).unwrap();
    let model = file.display().to_string();
    let plan_with = |extra: &[&str]| {
        let argv = [&["clip-train"][..], BASE, &["--model", &model], extra].concat();
        clip_train::plan::validate(clip_train::params::parse(argv).unwrap()).unwrap()
    };
    let plan = plan_with(&[]);
    let side = plan.model.cfg.vision.image_size.0 as u32;
    let img = image::RgbImage::from_fn(3 * side, side, |x, y| {
        image::Rgb([(x % 251) as u8, (y * 3 % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut rng = rand_pcg::Pcg64::seed_from_u64(0);
    let want = ImageTransform::eval(side, [0.5; 3], [0.5; 3])
        .with_interpolation(Interpolation::Bilinear)
        .with_resize_mode(ResizeMode::Squash)
        .apply(&img, &mut rng);
    assert_eq!(plan.eval.transform.apply(&img, &mut rng), want);
    let flagged = plan_with(&["--image-resize-mode", "shortest"]);
    assert_ne!(flagged.eval.transform.apply(&img, &mut rng), want);
    let _ = std::fs::remove_dir_all(&dir);
}
