//! `--val-data`: OpenCLIP's contrastive validation (`open_clip_train/train.py: evaluate`).
//!
//! The held-out image–text pairs (webdataset shards, read in order with the eval transform; the
//! last batch may be partial) go through the model; the metrics are the mean ClipLoss over
//! batches (weighted by batch size, `clip_val_loss`) and, over the whole set at once, where each
//! image ranks its own caption among all captions and vice versa (`get_clip_metrics`): mean and
//! median rank, recall at 1, 5 and 10.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clip_data::loader::{Loader, LoaderConfig};
use clip_data::processor::ClipProcessor;
use clip_data::shards::ShardList;
use clip_model::{Clip, ClipConfig};
use tch::{Device, Kind, Tensor};

use crate::params::Params;
use crate::zeroshot::EvalOptions;

/// The validation set: an in-order, single-pass loader over `--val-data`.
pub struct ValData {
    loader: Loader,
    pub num_samples: u64,
}

impl ValData {
    /// Checks `--val-data` / `--val-num-samples` (the count, or `sizes.json` beside local shards)
    /// without reading a shard.
    pub fn new(p: &Params, cfg: &ClipConfig, spec: &str) -> Result<ValData> {
        if spec.ends_with(".csv") || spec.ends_with(".tsv") {
            bail!("not supported yet: --val-data as a CSV file (webdataset shards are)");
        }
        let shards = ShardList::parse(spec, None).context("--val-data")?;
        if let Some(missing) = crate::data::missing_local_shard(&shards) {
            bail!("--val-data: no such shard: {missing}");
        }
        if p.val_num_samples.is_some_and(|n| n < 1) {
            bail!("--val-num-samples must be at least 1");
        }
        let (h, w) = cfg.vision.image_size;
        if h != w {
            bail!(
                "--val-data: the eval transform is square; model {} has {h}x{w}",
                p.model
            );
        }
        let mut lc = LoaderConfig::new(shards, p.batch_size as usize);
        lc.train = false;
        lc.workers = p.workers.max(1) as usize;
        lc.num_samples = p.val_num_samples.map(|n| n as u64);
        let (mean, std) = crate::data::normalization(p)?;
        let (interpolation, mode) = crate::data::image_options(p)?;
        let processor = ClipProcessor::eval(h as u32, mean, std, cfg.text.context_length as usize)
            .with_image_options(interpolation, mode);
        // An eval loader needs no count to start (`LoaderError::NumSamplesUnknown` is training's):
        // a missing one is reported just below.
        let loader = Loader::new(lc, Arc::new(processor)).context("--val-data")?;
        // The count as given (or from sizes.json): OpenCLIP's `samples_per_val`, not rounded to
        // whole batches as a training epoch's plan is.
        let num_samples = loader
            .config()
            .num_samples
            .context("--val-num-samples is required")?;
        Ok(ValData {
            loader,
            num_samples,
        })
    }
}

/// OpenCLIP's `get_clip_metrics`: ranks of the matching pair, both directions, in metric order.
pub fn clip_metrics(image: &Tensor, text: &Tensor, logit_scale: f64) -> Vec<(String, f64)> {
    let per_image = image.matmul(&text.tr()) * logit_scale;
    let per_text = per_image.tr();
    let n = image.size()[0];
    let truth = Tensor::arange(n, (Kind::Int64, Device::Cpu)).view([-1, 1]);
    let mut out = Vec::new();
    for (name, logits) in [("image_to_text", per_image), ("text_to_image", per_text)] {
        let ranking = logits.argsort(1, true);
        let preds: Vec<i64> = Vec::try_from(
            &ranking
                .eq_tensor(&truth)
                .to_kind(Kind::Int)
                .argmax(1, false),
        )
        .expect("ranks are i64");
        let mean = preds.iter().sum::<i64>() as f64 / n as f64;
        let mut sorted = preds.clone();
        sorted.sort_unstable();
        let median = if n % 2 == 1 {
            sorted[(n / 2) as usize] as f64
        } else {
            (sorted[(n / 2 - 1) as usize] + sorted[(n / 2) as usize]) as f64 / 2.0
        };
        out.push((format!("{name}_mean_rank"), mean + 1.0));
        out.push((format!("{name}_median_rank"), median.floor() + 1.0));
        for k in [1, 5, 10] {
            let hits = preds.iter().filter(|p| **p < k).count();
            out.push((format!("{name}_R@{k}"), hits as f64 / n as f64));
        }
    }
    out
}

/// Runs the validation set through `model`; returns OpenCLIP's metrics (without `epoch`) in its
/// order. `log` gets OpenCLIP's progress line every 100 batches; `progress` is called after every
/// batch (rank 0 heartbeats through it).
pub fn evaluate(
    model: &Clip,
    data: &ValData,
    opts: &EvalOptions,
    epoch: i64,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<(String, f64)>> {
    let (mut images, mut texts) = (Vec::new(), Vec::new());
    let (mut loss_sum, mut n) = (0.0f64, 0i64);
    let mut scale = 0.0;
    for (i, batch) in data.loader.epoch(0, None)?.enumerate() {
        let b = batch.context("--val-data")?;
        let (bs, s, ctx) = (
            b.batch_size as i64,
            b.image_size as i64,
            b.context_length as i64,
        );
        let x = Tensor::from_slice(&b.images)
            .reshape([bs, 3, s, s])
            .to_device(opts.device)
            .to_kind(opts.input_kind);
        let t = Tensor::from_slice(&b.tokens)
            .reshape([bs, ctx])
            .to_device(opts.device);
        let (img, txt, ls, loss) = {
            let _ac = opts.autocast()?;
            tch::no_grad(|| {
                let (img, txt, ls) = model.forward(&x, &t, false);
                let loss = crate::loss::clip_loss_local(&img, &txt, &ls);
                (img, txt, ls, loss)
            })
        };
        scale = ls.double_value(&[]);
        loss_sum += loss.double_value(&[]) * bs as f64;
        n += bs;
        images.push(img.to_device(Device::Cpu).to_kind(Kind::Float));
        texts.push(txt.to_device(Device::Cpu).to_kind(Kind::Float));
        if i % 100 == 0 {
            log(&format!(
                "Eval Epoch: {epoch} [{n} / {}]\tClip Loss: {:.6}\t",
                data.num_samples,
                loss_sum / n as f64
            ));
        }
        progress()?;
    }
    if n == 0 {
        bail!("--val-data: no usable sample");
    }
    let mut metrics = clip_metrics(&Tensor::cat(&images, 0), &Tensor::cat(&texts, 0), scale);
    metrics.push(("clip_val_loss".into(), loss_sum / n as f64));
    metrics.push(("epoch".into(), epoch as f64));
    metrics.push(("num_samples".into(), n as f64));
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four pairs whose images rank their own caption 1st, 2nd, 2nd and 1st, while every caption
    /// ranks its own image 1st: the figures by hand.
    #[test]
    fn ranks_and_recalls() {
        // Rows: images; columns: texts; the diagonal is the true pair.
        let sim = Tensor::from_slice(&[
            9.0f32, 1.0, 1.5, 3.0, //
            5.0, 4.0, 1.0, 0.0, //
            0.0, 1.0, 2.0, 3.0, //
            0.5, 0.6, 0.7, 8.0,
        ])
        .reshape([4, 4]);
        let eye = Tensor::eye(4, (Kind::Float, Device::Cpu));
        let m = clip_metrics(&sim, &eye, 1.0);
        let get = |k: &str| m.iter().find(|(n, _)| n == k).unwrap().1;
        // image→text ranks (0-based): 0, 1, 1, 0.
        assert_eq!(get("image_to_text_mean_rank"), 1.5);
        assert_eq!(get("image_to_text_median_rank"), 1.0);
        assert_eq!(get("image_to_text_R@1"), 0.5);
        assert_eq!(get("image_to_text_R@5"), 1.0);
        // text→image: every column's largest entry is its diagonal.
        assert_eq!(get("text_to_image_mean_rank"), 1.0);
        assert_eq!(get("text_to_image_R@1"), 1.0);
    }
}
