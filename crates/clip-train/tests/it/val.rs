//! `--val-data`: contrastive validation against OpenCLIP's own `evaluate` on the same weights and
//! shards (scripts/val-goldens.py, cached): the same ranks and recalls, the same loss; logged
//! after the epoch and in `results.jsonl`, and once more when there is no training data.
use crate::common::{cli, image_shards, model_weights, ok, shape_caption, tempdir};
use crate::golden::{golden, run_python, script_inputs};
use image::ImageFormat;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// 22 pairs in batches of 4: the last batch is partial (2), as OpenCLIP's val loader makes it.
pub(crate) const N: usize = 22;

fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--batch-size 4 --epochs 1 --model clip_tiny --lr 1e-3 --warmup 2 --workers 1 \
                 --val-num-samples 22";
    cli(flags, name, logs, extra)
}

/// A training run on synthetic data, evaluated on `val` after its epoch.
fn train(logs: &Path, name: &str, val: &str) -> Vec<String> {
    let data = ["--dataset-type", "synthetic", "--train-num-samples", "16"];
    args(logs, name, &[&data[..], &["--val-data", val]].concat())
}

/// No training data: one evaluation of `weights` on `val` (epoch 0).
fn eval_only(logs: &Path, name: &str, val: &str, weights: &Path) -> Vec<String> {
    let weights = weights.display().to_string();
    args(logs, name, &["--val-data", val, "--pretrained", &weights])
}

fn last_results(run_dir: &Path) -> Value {
    let text = std::fs::read_to_string(run_dir.join("checkpoints/results.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// The `{00000..}` spec of `shards` (named 00000.tar, 00001.tar, … in one folder).
pub(crate) fn spec(shards: &[PathBuf]) -> String {
    let dir = shards[0].parent().unwrap().display();
    format!("{dir}/{{00000..{:05}}}.tar", shards.len() - 1)
}

/// What scripts/val-goldens.py prints: OpenCLIP's metrics, and for every rank metric the
/// `[low, high]` it takes over every order of the candidates within 1e-4 of a true pair's logit.
pub(crate) struct OpenClipVal {
    pub metrics: Value,
    ties: Value,
}

impl OpenClipVal {
    /// The range a rank metric may take on this side: OpenCLIP's near-tie bounds. Checks first
    /// that the fixture has few near ties (moves adding up to at most two places), so that the
    /// bounds still pin the figures down.
    pub fn tie_range(&self) -> impl Fn(&str, f64) -> (f64, f64) + '_ {
        for dir in ["image_to_text", "text_to_image"] {
            let [lo, hi] = self.range(&format!("{dir}_mean_rank"));
            assert!(
                hi - lo <= 2.0 / N as f64 + 1e-9,
                "{dir}: near ties worth more than two places ({lo}..{hi}): the fixture no \
                 longer tells the implementations apart"
            );
        }
        |k, _| {
            let [lo, hi] = self.range(k);
            (lo, hi)
        }
    }

    fn range(&self, k: &str) -> [f64; 2] {
        let r = self.ties[k]
            .as_array()
            .unwrap_or_else(|| panic!("no bounds for {k}"));
        [r[0].as_f64().unwrap(), r[1].as_f64().unwrap()]
    }
}

/// OpenCLIP's metrics for `clip_tiny` `weights` on `shards` (cached by the contents of both),
/// read in batches of 4 by `workers` loader workers; `None` after a loud skip where there are
/// neither the cache nor Python.
pub(crate) fn openclip_metrics(
    name: &str,
    weights: &Path,
    shards: &[PathBuf],
    workers: usize,
) -> Option<OpenClipVal> {
    openclip_model_metrics(name, "clip_tiny", &[], weights, shards, workers)
}

/// [`openclip_metrics`] for `model` (a name, or a config .json), whose own files (its config, a
/// tokenizer's) are `model_files`: they key the cache too.
fn openclip_model_metrics(
    name: &str,
    model: &str,
    model_files: &[PathBuf],
    weights: &Path,
    shards: &[PathBuf],
    workers: usize,
) -> Option<OpenClipVal> {
    let mut inputs = script_inputs("val-goldens.py");
    inputs.push(weights.to_path_buf());
    inputs.extend(shards.iter().cloned());
    inputs.extend(model_files.iter().cloned());
    let (n, spec, w) = (N.to_string(), spec(shards), workers.to_string());
    // Keyed by the config's file name, not its folder (a test's temporary one): its contents
    // are among the inputs.
    let key = Path::new(model).file_name().unwrap().to_str().unwrap();
    let dir = golden(name, &inputs, &[key, &n, "4", &w], |out| {
        let script = inputs[0].display().to_string();
        let weights = weights.display().to_string();
        let stdout = run_python([script.as_str(), model, &weights, &spec, &n, "4", &w]);
        let lines: Vec<&str> = stdout.lines().collect();
        let [.., metrics, ties] = lines[..] else {
            panic!("val-goldens.py printed {stdout}")
        };
        std::fs::write(out.join("metrics.json"), metrics).unwrap();
        std::fs::write(out.join("ties.json"), ties).unwrap();
    })?;
    let read = |f: &str| serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap();
    Some(OpenClipVal {
        metrics: read("metrics.json"),
        ties: read("ties.json"),
    })
}

/// Within `tol` of OpenCLIP's figure: for inputs that differ on the two sides (JPEG decoders).
pub(crate) fn within(tol: impl Fn(&str) -> f64) -> impl Fn(&str, f64) -> (f64, f64) {
    move |k, want| (want - tol(k), want + tol(k))
}

/// Ours (evaluated after `epoch`) against OpenCLIP's (run as after epoch 1): the same metrics in
/// the same order; `num_samples` equal, `clip_val_loss` to 1e-3 (the float order of two
/// implementations), the ranks and recalls inside `rank_range(key, OpenCLIP's value)`.
pub(crate) fn compare(
    ours: &Value,
    epoch: i64,
    theirs: &Value,
    rank_range: impl Fn(&str, f64) -> (f64, f64),
) {
    let (o, t) = (ours.as_object().unwrap(), theirs.as_object().unwrap());
    assert_eq!(
        o.keys().collect::<Vec<_>>(),
        t.keys().collect::<Vec<_>>(),
        "the same metrics in the same order"
    );
    let mut off = Vec::new();
    for (k, want) in t {
        let (got, want) = (o[k].as_f64().unwrap(), want.as_f64().unwrap());
        let (lo, hi) = match k.as_str() {
            "clip_val_loss" => (want - 1e-3 * want, want + 1e-3 * want),
            "epoch" => {
                assert_eq!(o[k], epoch);
                continue;
            }
            "num_samples" => (want, want),
            _ => rank_range(k, want),
        };
        if !(lo - 1e-12..=hi + 1e-12).contains(&got) {
            off.push(format!(
                "{k}: {got} vs OpenCLIP's {want} (allowed {lo}..={hi})"
            ));
        }
    }
    assert!(
        off.is_empty(),
        "{}\nours: {ours}\nOpenCLIP's: {theirs}",
        off.join("\n")
    );
    assert_eq!(o["num_samples"], N);
}

#[test]
fn val_data_metrics_match_openclip() {
    let dir = tempdir("val");
    // 64-px PNGs: lossless, and already the model's size, so both sides' eval transforms leave
    // the pixels as they are: the model sees the same input on both sides.
    let png = image_shards(&dir.join("png"), N, 8, 2, 64, ImageFormat::Png);
    ok(&train(&dir, "run", &spec(&png)));
    let run = dir.join("run");
    let log = std::fs::read_to_string(run.join("out.log")).unwrap();
    assert!(log.contains("Eval Epoch: 1 [4 / 22]\tClip Loss: "), "{log}");
    assert!(
        log.contains("Eval Epoch: 1 image_to_text_mean_rank: "),
        "{log}"
    );
    let ours = last_results(&run);
    let ckpt = run.join("checkpoints/epoch_1.safetensors");
    let weights = model_weights(&ckpt, &dir.join("weights.safetensors"));
    let Some(theirs) = openclip_metrics("val-png", &weights, &png, 1) else {
        return;
    };
    // The same pixels: the ranks and recalls are OpenCLIP's up to the order of near ties (logits
    // within 1e-4), which the two implementations' float rounding may swap; CI's machine swapped
    // one pair in image_to_text (a mean rank 1/N off) where this one did not.
    compare(&ours, 1, &theirs.metrics, theirs.tie_range());

    // No training data: one evaluation of the given weights (epoch 0), the same figures.
    ok(&eval_only(&dir, "eval", &spec(&png), &ckpt));
    let again = last_results(&dir.join("eval"));
    assert_eq!(again["epoch"], 0);
    assert_eq!(
        again["image_to_text_mean_rank"],
        ours["image_to_text_mean_rank"]
    );
    assert_eq!(again["clip_val_loss"], ours["clip_val_loss"]);

    // The same pictures as JPEGs (quality 75): the two sides' decoders (zune-jpeg,
    // libjpeg-turbo through PIL) round some pixels differently, which can swap near-tied
    // candidates; by how much depends on the machine (the issue saw a mean rank 1/N off, this
    // machine 2/N). Allowed: rank moves adding up to two places (one sample by two, or two by
    // one): a mean rank within 2/N, a median rank within 1, a recall@k within 2/N (each move
    // takes at most one sample across k).
    let jpeg = image_shards(&dir.join("jpeg"), N, 8, 2, 64, ImageFormat::Jpeg);
    ok(&eval_only(&dir, "jpeg", &spec(&jpeg), &ckpt));
    let ours = last_results(&dir.join("jpeg"));
    let Some(theirs) = openclip_metrics("val-jpeg", &weights, &jpeg, 1) else {
        return;
    };
    let two_places = 2.0 / N as f64 + 1e-9;
    let tol = |k: &str| {
        if k.ends_with("median_rank") {
            1.0
        } else {
            two_places
        }
    };
    compare(&ours, 0, &theirs.metrics, within(tol));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CLIPA-style config (bidirectional text attention, last-token pooling) whose captions go
/// through a Hugging Face WordPiece tokenizer with `strip_sep_token`, named by its folder in
/// `hf_tokenizer_name`: clip-train trains on webdataset shards with it, and its `--val-data`
/// metrics are OpenCLIP's `evaluate` of the same weights with OpenCLIP's `HFTokenizer` (up to
/// the order of near ties). A caption tokenized differently would move its pair's logits.
#[test]
fn a_hugging_face_tokenizer_config_trains_and_evaluates_as_openclip() {
    let dir = tempdir("val-hf");
    let png = image_shards(&dir.join("png"), N, 8, 2, 64, ImageFormat::Png);
    let captions: Vec<String> = (0..N).map(|i| shape_caption(i, 2)).collect();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let code = crate::clip_tool::TRAIN_WORDPIECE;
    let Some(tok) =
        crate::clip_tool::openclip_golden("val-hf-tokenizer", code, &[], &refs, |out| {
            crate::clip_tool::openclip(code, [&[out.to_str().unwrap()][..], &refs].concat());
        })
    else {
        return;
    };
    let config = dir.join("clip_tiny_hf.json");
    let mut cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::golden::root().join("configs/clip_tiny.json")).unwrap(),
    )
    .unwrap();
    cfg["text_cfg"]["context_length"] = 16.into();
    cfg["text_cfg"]["vocab_size"] = 300.into();
    cfg["text_cfg"]["pool_type"] = "last".into();
    cfg["text_cfg"]["no_causal_mask"] = true.into();
    cfg["text_cfg"]["hf_tokenizer_name"] = tok.display().to_string().into();
    cfg["text_cfg"]["tokenizer_kwargs"] = serde_json::json!({"strip_sep_token": true});
    std::fs::write(&config, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();

    let model = config.display().to_string();
    let flags = "--batch-size 4 --epochs 1 --lr 1e-3 --warmup 2 --workers 1 --val-num-samples 22 \
                 --train-num-samples 16";
    let (png_spec, extra) = (spec(&png), ["--model", &model, "--train-data"]);
    ok(&cli(
        flags,
        "run",
        &dir,
        &[&extra[..], &[&png_spec, "--val-data", &png_spec]].concat(),
    ));
    let ours = last_results(&dir.join("run"));
    let ckpt = dir.join("run/checkpoints/epoch_1.safetensors");
    let weights = model_weights(&ckpt, &dir.join("weights.safetensors"));
    let files = [
        config.clone(),
        tok.join("tokenizer.json"),
        tok.join("tokenizer_config.json"),
    ];
    let Some(theirs) = openclip_model_metrics("val-hf", &model, &files, &weights, &png, 1) else {
        return;
    };
    compare(&ours, 1, &theirs.metrics, theirs.tie_range());
    let _ = std::fs::remove_dir_all(&dir);
}
