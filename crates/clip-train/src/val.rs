//! `--val-data`: OpenCLIP's contrastive validation (`open_clip_train/train.py: evaluate`).
//!
//! The held-out image–text pairs (webdataset shards, read in order with the eval transform; the
//! last batch may be partial) go through the model; the metrics are the mean ClipLoss over
//! batches (weighted by batch size, `clip_val_loss`) and, over the whole set at once, where each
//! image ranks its own caption among all captions and vice versa (`get_clip_metrics`): mean and
//! median rank, recall at 1, 5 and 10.
//!
//! Every rank runs the batches of its loader streams (`--workers` streams, as OpenCLIP's val
//! loader has workers; stream `s` on rank `s % world`, so up to `--workers` ranks share the
//! work); the features and losses of all batches are gathered and put back in the single
//! process's order, so every world size computes the single process's figures.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clip_data::loader::{Loader, LoaderConfig};
use clip_data::processor::ClipProcessor;
use clip_data::shards::ShardList;
use clip_dist::Collectives;
use clip_model::{Clip, ClipConfig};
use tch::{Device, Kind, Tensor};

use crate::evaluator::Shares;
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

/// One rank's share of the validation pass: its batches' features (f32, on the host, in the
/// order run) and per batch `[stream, round, size]`, its ClipLoss and logit scale.
struct ShareOut {
    meta: Vec<[i64; 3]>,
    loss: Vec<f64>,
    scale: Vec<f64>,
    images: Vec<Tensor>,
    texts: Vec<Tensor>,
}

/// Runs this rank's share of the validation set (`eval_share`: its loader streams) through
/// `model`; `log` gets OpenCLIP's progress line every 100 batches (this rank's count),
/// `progress` is called after every batch (the rank heartbeats through it).
fn run_share(
    model: &Clip,
    data: &ValData,
    opts: &EvalOptions,
    (rank, world): (usize, usize),
    epoch: i64,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut() -> Result<()>,
) -> Result<ShareOut> {
    let mut out = ShareOut {
        meta: Vec::new(),
        loss: Vec::new(),
        scale: Vec::new(),
        images: Vec::new(),
        texts: Vec::new(),
    };
    let Some(batches) = data.loader.eval_share(rank, world)? else {
        return Ok(out);
    };
    let mut rounds = vec![0i64; data.loader.config().streams()];
    let (mut loss_sum, mut n) = (0.0f64, 0i64);
    for (i, batch) in batches.enumerate() {
        let b = batch.context("--val-data")?;
        let (bs, s, ctx) = (
            b.batch_size as i64,
            b.image_size as i64,
            b.context_length as i64,
        );
        let x = Tensor::from_slice(b.images())
            .reshape([bs, 3, s, s])
            .to_device(opts.device)
            .to_kind(opts.input_kind);
        let t = Tensor::from_slice(b.tokens())
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
        out.meta.push([b.stream as i64, rounds[b.stream], bs]);
        rounds[b.stream] += 1;
        out.scale.push(ls.double_value(&[]));
        out.loss.push(loss.double_value(&[]));
        loss_sum += loss.double_value(&[]) * bs as f64;
        n += bs;
        out.images
            .push(img.to_device(Device::Cpu).to_kind(Kind::Float));
        out.texts
            .push(txt.to_device(Device::Cpu).to_kind(Kind::Float));
        if i % 100 == 0 {
            log(&format!(
                "Eval Epoch: {epoch} [{n} / {}]\tClip Loss: {:.6}\t",
                data.num_samples,
                loss_sum / n as f64
            ));
        }
        progress()?;
    }
    Ok(out)
}

impl ShareOut {
    fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta: Vec<i64> = self.meta.iter().flatten().copied().collect();
        let cat = |ts: &[Tensor]| match ts.is_empty() {
            true => Tensor::zeros([0], (Kind::Float, Device::Cpu)),
            false => Tensor::cat(ts, 0),
        };
        let named = [
            ("meta", Tensor::from_slice(&meta)),
            ("loss", Tensor::from_slice(&self.loss)),
            ("scale", Tensor::from_slice(&self.scale)),
            ("images", cat(&self.images)),
            ("texts", cat(&self.texts)),
        ];
        let mut bytes = Vec::new();
        Tensor::save_multi_to_stream(&named, &mut bytes)?;
        Ok(bytes)
    }

    fn from_bytes(bytes: Vec<u8>) -> Result<ShareOut> {
        let named = Tensor::load_multi_from_stream(std::io::Cursor::new(bytes))?;
        let get = |k: &str| -> Result<Tensor> {
            let t = named.iter().find(|(n, _)| n == k).map(|(_, t)| t);
            Ok(t.context("a rank's val share lacks a tensor")?
                .shallow_clone())
        };
        let meta: Vec<i64> = Vec::try_from(&get("meta")?)?;
        let meta: Vec<[i64; 3]> = meta.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        let (images, texts) = (get("images")?, get("texts")?);
        let sizes: Vec<i64> = meta.iter().map(|m| m[2]).collect();
        let split = |t: &Tensor| match sizes.is_empty() {
            true => Vec::new(),
            false => t.split_with_sizes(sizes.as_slice(), 0),
        };
        Ok(ShareOut {
            loss: Vec::try_from(&get("loss")?)?,
            scale: Vec::try_from(&get("scale")?)?,
            images: split(&images),
            texts: split(&texts),
            meta,
        })
    }
}

/// Runs the validation set through `model`, split across the ranks of `comm` by loader stream
/// (each rank runs the batches of its streams, exactly the batches a single process runs from
/// them); every rank gets every batch's features and loss, puts them back in the single
/// process's order and computes OpenCLIP's metrics (without `epoch`) in its order, the same
/// figures on every rank and at every world size. Also returns each rank's share: (samples,
/// batches). `log` and `progress` as [`run_share`].
pub fn evaluate(
    model: &Clip,
    data: &ValData,
    opts: &EvalOptions,
    epoch: i64,
    comm: &dyn Collectives,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut() -> Result<()>,
) -> Result<(Vec<(String, f64)>, Shares)> {
    let share = (comm.rank(), comm.world_size());
    let mine = run_share(model, data, opts, share, epoch, log, progress)?;
    let shares = comm
        .all_gather_bytes(&mine.to_bytes()?)?
        .into_iter()
        .map(ShareOut::from_bytes)
        .collect::<Result<Vec<_>>>()?;
    let counts = shares
        .iter()
        .map(|s| (s.meta.iter().map(|m| m[2]).sum(), s.meta.len()))
        .collect();
    // The single process takes the streams round-robin: a stream's k-th batch in round k.
    let mut order: Vec<(i64, i64, usize, usize)> = shares
        .iter()
        .enumerate()
        .flat_map(|(r, s)| {
            s.meta
                .iter()
                .enumerate()
                .map(move |(i, m)| (m[1], m[0], r, i))
        })
        .collect();
    order.sort_unstable();
    let (mut images, mut texts) = (Vec::new(), Vec::new());
    let (mut loss_sum, mut n, mut scale) = (0.0f64, 0i64, 0.0);
    for &(_, _, r, i) in &order {
        let (s, bs) = (&shares[r], shares[r].meta[i][2]);
        loss_sum += s.loss[i] * bs as f64;
        n += bs;
        scale = s.scale[i];
        images.push(s.images[i].shallow_clone());
        texts.push(s.texts[i].shallow_clone());
    }
    if n == 0 {
        bail!("--val-data: no usable sample");
    }
    let mut metrics = clip_metrics(&Tensor::cat(&images, 0), &Tensor::cat(&texts, 0), scale);
    metrics.push(("clip_val_loss".into(), loss_sum / n as f64));
    metrics.push(("epoch".into(), epoch as f64));
    metrics.push(("num_samples".into(), n as f64));
    Ok((metrics, counts))
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
