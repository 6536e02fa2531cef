//! `--imagenet-val`: zero-shot ImageNet evaluation against OpenCLIP's own `zero_shot_eval` on the
//! same weights and an ImageFolder of generated images (scripts/zeroshot-goldens.py): the same
//! classifier, the same logits, the same top-1 / top-5; logged after the epoch, in
//! `results.jsonl`, and once more when there is no training data.
use crate::common::{cli, get, model_weights, ok, tempdir};
use crate::golden::{golden, run_python, script_inputs};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clip_data::transform::{ImageTransform, OPENAI_MEAN, OPENAI_STD};
use clip_model::{Clip, ClipConfig};
use clip_train::zeroshot::{self, EvalOptions, ImageFolder};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// `n_classes` class folders of `per_class` PNGs each, coloured patterns that differ by class.
pub(crate) fn image_folder(dir: &Path, n_classes: usize, per_class: usize) -> PathBuf {
    let root = dir.join("val");
    for c in 0..n_classes {
        let class_dir = root.join(format!("n0{c:07}"));
        std::fs::create_dir_all(&class_dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(80, 64, |x, y| {
                let v = ((x * (c as u32 + 1) + y * (i as u32 + 2)) % 256) as u8;
                image::Rgb([v, (40 * c as u32 % 256) as u8, 255 - v])
            });
            img.save(class_dir.join(format!("img{i}.png"))).unwrap();
        }
    }
    root
}

fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--batch-size 4 --epochs 1 --model clip_tiny --lr 1e-3 --warmup 2 --workers 2 \
                 --zeroshot-frequency 1";
    cli(flags, name, logs, extra)
}

/// OpenCLIP's classifier, logits and accuracy for `weights` on `folder`
/// (scripts/zeroshot-goldens.py, cached by the contents of both); `None` after a loud skip where
/// there are neither the cache nor Python.
pub(crate) fn openclip_zero_shot(weights: &Path, folder: &Path) -> Option<Vec<(String, Tensor)>> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .flat_map(|class| std::fs::read_dir(class.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    images.sort();
    // The class folders' and files' names are part of the input too.
    let names: Vec<String> = images
        .iter()
        .map(|p| p.strip_prefix(folder).unwrap().display().to_string())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut inputs = script_inputs("zeroshot-goldens.py");
    inputs.push(weights.to_path_buf());
    inputs.extend(images);
    let dir = golden("zeroshot", &inputs, &names, |out| {
        let out = out.join("gold.safetensors");
        let model = OsStr::new("clip_tiny");
        run_python([
            inputs[0].as_os_str(),
            model,
            weights.as_os_str(),
            folder.as_os_str(),
            out.as_os_str(),
        ]);
    })?;
    Some(Tensor::read_safetensors(dir.join("gold.safetensors")).unwrap())
}

/// (top1, top5) from the last line of a run's results.jsonl.
fn results(run_dir: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(run_dir.join("checkpoints/results.jsonl")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    (
        v["imagenet-zeroshot-val-top1"].as_f64().unwrap(),
        v["imagenet-zeroshot-val-top5"].as_f64().unwrap(),
    )
}

#[test]
fn zero_shot_imagenet_matches_openclip() {
    let dir = tempdir("zeroshot");
    let folder = image_folder(&dir, 6, 3);
    let folder_s = folder.display().to_string();
    let synthetic = ["--dataset-type", "synthetic", "--train-num-samples", "16"];
    ok(&args(
        &dir,
        "run",
        &[&synthetic[..], &["--imagenet-val", &folder_s]].concat(),
    ));
    let run = dir.join("run");
    let log = std::fs::read_to_string(run.join("out.log")).unwrap();
    assert!(
        log.contains("Eval Epoch: 1 imagenet-zeroshot-val-top1: "),
        "{log}"
    );
    let (top1, top5) = results(&run);

    let ckpt = run.join("checkpoints/epoch_1.safetensors");
    let model_file = model_weights(&ckpt, &dir.join("weights.safetensors"));
    let Some(gold) = openclip_zero_shot(&model_file, &folder) else {
        return;
    };
    assert_eq!(top1, get(&gold, "top1").double_value(&[0]), "top-1");
    assert_eq!(top5, get(&gold, "top5").double_value(&[0]), "top-5");

    // The pieces: classifier and logits, from the same weights.
    let vs = VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &ClipConfig::load("clip_tiny").unwrap()).unwrap();
    clip_train::checkpoint::load_weights(&vs, &ckpt, model.config()).unwrap();
    let opts = EvalOptions {
        device: Device::Cpu,
        autocast: None,
        input_kind: Kind::Float,
        batch_size: 4,
        workers: 2,
    };
    let classifier = zeroshot::build_classifier(&model, &opts).unwrap();
    let want = get(&gold, "classifier");
    let err = (&classifier - &want).abs().max().double_value(&[]);
    assert!(err < 1e-5, "classifier differs by {err}");
    eprintln!("zero-shot parity: classifier max |diff| {err:.2e}");
    let images = ImageFolder::scan(&folder).unwrap();
    assert_eq!(images.samples.len(), 18);
    let paths: Vec<&Path> = images.samples.iter().map(|(p, _)| p.as_path()).collect();
    let transform = ImageTransform::eval(64, OPENAI_MEAN, OPENAI_STD);
    let x = zeroshot::load_images(&paths, &transform, 2).unwrap();
    let logits = zeroshot::logits(&model, &classifier, &x, &opts).unwrap();
    let want = get(&gold, "logits");
    let err = (&logits - &want).abs().max().double_value(&[]);
    let spread = want.std(true).double_value(&[]);
    assert!(
        err < 0.01 * spread,
        "logits differ by {err} (spread {spread})"
    );
    eprintln!("zero-shot parity: logits max |diff| {err:.2e} (std {spread:.3})");

    // No training data: evaluate the given weights once (epoch 0), same numbers.
    let ckpt_s = ckpt.display().to_string();
    ok(&args(
        &dir,
        "eval",
        &["--imagenet-val", &folder_s, "--pretrained", &ckpt_s],
    ));
    let log = std::fs::read_to_string(dir.join("eval/out.log")).unwrap();
    assert!(
        log.contains("Eval Epoch: 0 imagenet-zeroshot-val-top1: "),
        "{log}"
    );
    assert_eq!(results(&dir.join("eval")), (top1, top5));
    let _ = std::fs::remove_dir_all(&dir);
}
