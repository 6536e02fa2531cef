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
//! work); the features and losses of all batches are gathered over the collectives (NCCL on
//! GPUs, the TCP backend on the CPU; never the store) and put back in the single process's
//! order, so every world size computes the single process's figures.

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
        let (mean, std) = crate::data::normalization(p, &cfg.preprocess)?;
        let (interpolation, mode) = crate::data::image_options(p, &cfg.preprocess)?;
        let tokenizer = Arc::new(crate::tokenizer::for_model(cfg, &p.model)?);
        let processor = ClipProcessor::eval(h as u32, mean, std, tokenizer)
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

/// One rank's share of the validation pass: per batch, in the order run, `[stream, round,
/// size]`, its ClipLoss and logit scale, and its features (f32, on the device they were
/// computed on).
pub struct Share {
    meta: Vec<[i64; 3]>,
    loss: Vec<f64>,
    scale: Vec<f64>,
    images: Vec<Tensor>,
    texts: Vec<Tensor>,
}

impl Share {
    pub fn new() -> Share {
        Share {
            meta: Vec::new(),
            loss: Vec::new(),
            scale: Vec::new(),
            images: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// Batch `round` of loader stream `stream`: its loss, logit scale and features `[B, D]`.
    pub fn push(
        &mut self,
        (stream, round): (usize, i64),
        loss: f64,
        scale: f64,
        images: Tensor,
        texts: Tensor,
    ) {
        self.meta.push([stream as i64, round, images.size()[0]]);
        self.loss.push(loss);
        self.scale.push(scale);
        self.images.push(images.to_kind(Kind::Float));
        self.texts.push(texts.to_kind(Kind::Float));
    }

    /// Every rank's share on every rank, features on the host: per batch `[stream, round,
    /// size, loss, scale]` (f64: the counts are exact) and the features (images and texts side
    /// by side, `[N, 2D]`), each all-gathered over the collectives on `device` with every
    /// rank's rows.
    fn gather(&self, comm: &dyn Collectives, dim: i64, device: Device) -> Result<Vec<Share>> {
        let batches: Vec<f64> = (0..self.meta.len())
            .flat_map(|i| {
                let [stream, round, size] = self.meta[i];
                [
                    stream as f64,
                    round as f64,
                    size as f64,
                    self.loss[i],
                    self.scale[i],
                ]
            })
            .collect();
        let batches = Tensor::from_slice(&batches).reshape([-1, 5]).to(device);
        let feats = match self.images.is_empty() {
            true => Tensor::zeros([0, 2 * dim], (Kind::Float, device)),
            false => Tensor::cat(
                &[Tensor::cat(&self.images, 0), Tensor::cat(&self.texts, 0)],
                1,
            ),
        };
        crate::ddp::all_gather_rows(comm, &[&batches, &feats])?
            .into_iter()
            .map(|parts| Share::from_parts(&parts, dim))
            .collect()
    }

    /// A share from its gathered `[batches, features]`, features moved to the host.
    fn from_parts(parts: &[Tensor], dim: i64) -> Result<Share> {
        let batches: Vec<f64> = Vec::try_from(&parts[0].to(Device::Cpu).reshape([-1]))?;
        let batches: Vec<&[f64]> = batches.chunks(5).collect();
        let meta: Vec<[i64; 3]> = batches
            .iter()
            .map(|b| [b[0] as i64, b[1] as i64, b[2] as i64])
            .collect();
        let feats = parts[1].to(Device::Cpu);
        let sizes: Vec<i64> = meta.iter().map(|m| m[2]).collect();
        if sizes.iter().sum::<i64>() != feats.size()[0] {
            bail!(
                "a rank's val share has {} feature rows for {} samples",
                feats.size()[0],
                sizes.iter().sum::<i64>()
            );
        }
        let split = |t: Tensor| match sizes.is_empty() {
            true => Vec::new(),
            false => t.split_with_sizes(sizes.as_slice(), 0),
        };
        Ok(Share {
            loss: batches.iter().map(|b| b[3]).collect(),
            scale: batches.iter().map(|b| b[4]).collect(),
            images: split(feats.narrow(1, 0, dim)),
            texts: split(feats.narrow(1, dim, dim)),
            meta,
        })
    }
}

impl Default for Share {
    fn default() -> Share {
        Share::new()
    }
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
) -> Result<Share> {
    let mut out = Share::new();
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
        let loss = loss.double_value(&[]);
        out.push(
            (b.stream, rounds[b.stream]),
            loss,
            ls.double_value(&[]),
            img,
            txt,
        );
        rounds[b.stream] += 1;
        loss_sum += loss * bs as f64;
        n += bs;
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

/// Runs the validation set through `model`, split across the ranks of `comm` by loader stream
/// (each rank runs the batches of its streams, exactly the batches a single process runs from
/// them), then [`combine`]s the shares. Also returns each rank's share: (samples, batches).
/// `log` and `progress` as [`run_share`].
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
    let dim = model.config().embed_dim;
    combine(&mine, comm, dim, opts.device, epoch)
}

/// Every rank's share (features `[B, dim]` on `device`) gathered to every rank and put back in
/// the single process's order ([`in_order`]); OpenCLIP's metrics (without `epoch`) computed in
/// its order, the same figures on every rank and at every world size. Also returns each rank's
/// share: (samples, batches).
pub fn combine(
    mine: &Share,
    comm: &dyn Collectives,
    dim: i64,
    device: Device,
    epoch: i64,
) -> Result<(Vec<(String, f64)>, Shares)> {
    let all = in_order(mine, comm, dim, device)?;
    if all.samples == 0 {
        bail!("--val-data: no usable sample");
    }
    let mut metrics = clip_metrics(&all.images, &all.texts, all.scale);
    metrics.push(("clip_val_loss".into(), all.loss_sum / all.samples as f64));
    metrics.push(("epoch".into(), epoch as f64));
    metrics.push(("num_samples".into(), all.samples as f64));
    Ok((metrics, all.shares))
}

/// The whole validation pass on every rank, in the single process's batch order.
pub struct InOrder {
    /// `[N, D]` each, on the host.
    pub images: Tensor,
    pub texts: Tensor,
    /// Σ batch loss × batch size.
    pub loss_sum: f64,
    pub samples: i64,
    /// The last batch's logit scale.
    pub scale: f64,
    /// Each rank's (samples, batches).
    pub shares: Shares,
}

/// Every rank's share gathered over the collectives and put back in the single process's
/// order: it takes the loader's streams round-robin, a stream's k-th batch in round k.
pub fn in_order(mine: &Share, comm: &dyn Collectives, dim: i64, device: Device) -> Result<InOrder> {
    let shares = mine.gather(comm, dim, device)?;
    let counts = shares
        .iter()
        .map(|s| (s.meta.iter().map(|m| m[2]).sum(), s.meta.len()))
        .collect();
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
    let cat = |ts: &[Tensor]| match ts.is_empty() {
        true => Tensor::zeros([0, dim], (Kind::Float, Device::Cpu)),
        false => Tensor::cat(ts, 0),
    };
    Ok(InOrder {
        images: cat(&images),
        texts: cat(&texts),
        loss_sum,
        samples: n,
        scale,
        shares: counts,
    })
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
