//! The trainer's training data, behind one small interface: `--dataset-type synthetic`
//! ([`crate::synthetic`]), `webdataset` (clip-data's [`Loader`]) or `csv` (OpenCLIP's
//! `CsvDataset`: a table of image paths and captions, see `CsvData`).
//!
//! [`TrainData::new`] checks every data flag (the trainer's `validate` calls it, so a bad
//! `--aug-cfg` key is one line, exit 2, nothing written) and fixes the epoch plan: OpenCLIP's
//! arithmetic (`global = batch × world; batches = ceil(N / global)` rounded up to a multiple of
//! the workers) for webdataset, `floor(N / batch)` (the last partial batch dropped) for synthetic.
//! [`TrainData::epoch`] yields batches on the host (images `[B,3,S,S]`, tokens i64 `[B,ctx]`;
//! webdataset's in the ring buffers of [`crate::prefetch`], f32 or bf16 images) and a JSON
//! position after the last batch trained ([`Epoch::position`]; [`Epoch::trained`] moves it: a
//! batch taken a step ahead is not in it) that checkpoints store in
//! `TrainState.data_position` and `--resume` hands back, so a resumed run sees exactly the
//! samples the uninterrupted one would have.
//!
//! The loader stops the run when no valid sample arrives for 600 s (a stalled source);
//! `CLIP_TRAIN_DATA_TIMEOUT=SECONDS` in the environment changes that limit.
//!
//! Position JSON: `{"source": "synthetic"|"webdataset", "epoch": E, "batches": k, "loader": …}`
//! where `loader` is clip-data's [`Position`] (webdataset, mid-epoch) or null (epoch start).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clip_data::loader::{EpochIter, Loader, LoaderConfig, LoaderError, Position};
use clip_data::processor::ClipProcessor;
use clip_data::shards::ShardList;
use clip_data::transform::{AugCfg, Interpolation, ResizeMode, OPENAI_MEAN, OPENAI_STD};
use clip_model::{ClipConfig, PreprocessCfg};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::csv_data::CsvData;
use crate::params::Params;
use crate::prefetch::{self, HostBatch};
use crate::pyfmt::repr_float;
use crate::synthetic::Synthetic;
use clip_data::buffers::BufferRing;
use clip_data::pyliteral::PyLiteral;
use std::sync::mpsc::Receiver;

/// The resolved `--dataset-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Synthetic,
    WebDataset,
    Csv,
}

impl DataKind {
    fn name(self) -> &'static str {
        match self {
            DataKind::Synthetic => "synthetic",
            DataKind::WebDataset => "webdataset",
            DataKind::Csv => "csv",
        }
    }
}

/// `--dataset-type` as OpenCLIP resolves it (`auto`: `.tar` → webdataset); `auto` also takes
/// `::`-joined sources, brace patterns, `pipe:` and `s3://` URLs as webdataset.
pub fn dataset_kind(p: &Params) -> Result<DataKind> {
    match (p.dataset_type.as_str(), p.train_data.as_deref()) {
        ("synthetic", None) => Ok(DataKind::Synthetic),
        ("synthetic", Some(_)) => bail!("--dataset-type synthetic does not read --train-data"),
        ("webdataset", Some(_)) => Ok(DataKind::WebDataset),
        ("webdataset", None) => bail!("--dataset-type webdataset needs --train-data"),
        ("csv", Some(_)) => Ok(DataKind::Csv),
        ("csv", None) => bail!("--dataset-type csv needs --train-data (a CSV file)"),
        ("auto", None) => bail!(
            "no training data: give --train-data (webdataset shards) or --dataset-type synthetic"
        ),
        ("auto", Some(d)) => {
            let ext = d.rsplit('.').next().unwrap_or("");
            if ext == "tar"
                || d.contains("::")
                || d.contains('{')
                || d.starts_with("pipe:")
                || d.starts_with("s3://")
            {
                Ok(DataKind::WebDataset)
            } else if ext == "csv" || ext == "tsv" {
                Ok(DataKind::Csv)
            } else {
                bail!("--dataset-type auto: cannot tell the dataset type of --train-data {d} (extension {ext:?}); give .tar shards or --dataset-type webdataset")
            }
        }
        (other, _) => bail!("unsupported --dataset-type {other}"),
    }
}

/// Python's `repr` of a literal: `--aug-cfg` values back into the `key=value` tokens
/// [`AugCfg::parse`] reads.
fn py_repr(v: &PyLiteral) -> String {
    let join = |items: &[PyLiteral]| items.iter().map(py_repr).collect::<Vec<_>>().join(", ");
    match v {
        PyLiteral::None => "None".into(),
        PyLiteral::Bool(b) => if *b { "True" } else { "False" }.into(),
        PyLiteral::Int(i) => i.to_string(),
        PyLiteral::Float(f) => repr_float(*f),
        PyLiteral::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        PyLiteral::Tuple(items) if items.len() == 1 => format!("({},)", py_repr(&items[0])),
        PyLiteral::Tuple(items) => format!("({})", join(items)),
        PyLiteral::List(items) => format!("[{}]", join(items)),
        PyLiteral::Dict(kv) => {
            format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("{}: {}", py_repr(k), py_repr(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// `--aug-cfg` parsed by clip-data (unknown keys and bad values are errors naming them).
pub fn aug_cfg(p: &Params) -> Result<AugCfg> {
    let tokens: Vec<String> = p
        .aug_cfg
        .iter()
        .map(|(k, v)| format!("{k}={}", py_repr(v)))
        .collect();
    AugCfg::parse(&tokens).map_err(|e| anyhow::anyhow!("--aug-cfg: {e:#}"))
}

/// `--image-mean` / `--image-std`: one value (all channels, as torchvision broadcasts it) or three;
/// without them the model config's `preprocess_cfg`, else OpenAI's CLIP values (OpenCLIP's
/// factory order). Checked: what both the training and the evaluation transforms normalise with.
pub fn normalization(p: &Params, pre: &PreprocessCfg) -> Result<([f32; 3], [f32; 3])> {
    let or = |flag: &Option<Vec<f64>>, cfg: &Option<Vec<f64>>| flag.clone().or(cfg.clone());
    let mean = channels(
        "--image-mean",
        or(&p.image_mean, &pre.mean).as_deref(),
        OPENAI_MEAN,
    )?;
    let std = channels(
        "--image-std",
        or(&p.image_std, &pre.std).as_deref(),
        OPENAI_STD,
    )?;
    if std.iter().any(|s| *s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
        bail!("--image-mean/--image-std must be finite and the std non-zero");
    }
    Ok((mean, std))
}

/// `--image-interpolation` (bicubic by default; `random` draws per image on timm's train path,
/// is bicubic elsewhere) and `--image-resize-mode` (shortest by default; the eval transform's),
/// as OpenCLIP's `image_transform` reads them; without the flags the model config's
/// `preprocess_cfg` (SigLIP's: bicubic, squash).
pub fn image_options(p: &Params, pre: &PreprocessCfg) -> Result<(Interpolation, ResizeMode)> {
    let pick = |flag: &Option<String>, cfg: &Option<String>, default: &str| {
        flag.as_deref()
            .or(cfg.as_deref())
            .unwrap_or(default)
            .to_string()
    };
    let interpolation = pick(&p.image_interpolation, &pre.interpolation, "bicubic");
    let mode = pick(&p.image_resize_mode, &pre.resize_mode, "shortest");
    match (
        Interpolation::parse(&interpolation),
        ResizeMode::parse(&mode),
    ) {
        (Some(i), Some(m)) => Ok((i, m)),
        (None, _) => {
            bail!("--image-interpolation {interpolation}: expected bicubic, bilinear or random")
        }
        (_, None) => bail!("--image-resize-mode {mode}: expected shortest, longest or squash"),
    }
}

fn channels(flag: &str, v: Option<&[f64]>, default: [f32; 3]) -> Result<[f32; 3]> {
    match v {
        None => Ok(default),
        Some([x]) => Ok([*x as f32; 3]),
        Some([r, g, b]) => Ok([*r as f32, *g as f32, *b as f32]),
        Some(v) => bail!("{flag}: expected 1 or 3 values, got {}", v.len()),
    }
}

enum Source {
    Synthetic(Synthetic),
    WebDataset(Box<Loader>),
    Csv(Arc<CsvData>),
}

/// Where one rank's input stands: checkpoints store it, `--resume` hands it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataPosition {
    /// The data it was taken on: a mid-epoch position only resumes on the same kind.
    pub source: DataKind,
    pub epoch: i64,
    /// Batches this rank has taken in the epoch.
    pub batches: i64,
    /// clip-data's loader position (webdataset, mid-epoch); None at an epoch's start and for
    /// sources whose order is a function of (epoch, batch).
    pub loader: Option<Position>,
    /// webdataset: the streams per rank the run reads with (they fix its sample order; a resume
    /// keeps them whatever `--workers` says, see [`SavedLayout`]). Absent in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<usize>,
}

/// The data layout a checkpoint was taken under, read from its header before anything starts
/// (`plan.rs`): a resume keeps its stream count, and refuses a layout the data cannot serve.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedLayout {
    /// ranks whose positions it holds
    pub ranks: usize,
    /// streams per rank (webdataset), when the checkpoint records them
    pub streams: Option<usize>,
    /// taken mid-epoch (a position inside the epoch, not its start)
    pub mid_epoch: bool,
    /// its mid-epoch positions can be split over another world size (not an older
    /// clip-train's version-1 webdataset positions, which hold sample counts only)
    pub splittable: bool,
}

impl SavedPositions {
    /// Every rank's position, in rank order (borrowed: at scale they hold every stream's
    /// shuffle-buffer list).
    pub fn ranks(&self) -> &[DataPosition] {
        match self {
            SavedPositions::Ranks { ranks } => ranks,
            SavedPositions::One(p) => std::slice::from_ref(p),
        }
    }

    /// The layout these positions were taken under.
    pub fn layout(&self) -> SavedLayout {
        let all = self.ranks();
        let first = all.first();
        SavedLayout {
            ranks: all.len(),
            streams: first.and_then(|p| {
                p.streams
                    .or_else(|| p.loader.as_ref().map(|l| l.streams.len()))
            }),
            mid_epoch: first.is_some_and(|p| p.batches > 0),
            splittable: all.iter().all(|p| {
                p.loader.as_ref().is_none_or(|l| {
                    l.resampled || l.streams.iter().all(|s| s.done || s.read.is_some())
                })
            }),
        }
    }
}

/// The rest of an epoch resumed on another world size ([`TrainData::continue_on_world`]).
#[derive(Debug)]
pub struct Continued {
    /// this rank's position for the rest of the epoch
    pub position: DataPosition,
    /// the optimizer steps of the epoch counted as done (OpenCLIP's `i`), in this world's
    /// epoch length, so that the epoch ends when this world's share of the rest is trained
    pub step_in_epoch: i64,
    /// what changed, for the log
    pub info: String,
    /// what an uninterrupted run would have done otherwise (the sample order), if anything
    pub warning: Option<String>,
}

/// The data positions a checkpoint holds: one (a single rank) or every rank's, in rank order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SavedPositions {
    Ranks { ranks: Vec<DataPosition> },
    One(DataPosition),
}

/// Fails unless `cfg` is a model clip-data's train transform can feed: square images. Returns the
/// image side.
fn image_side(p: &Params, cfg: &ClipConfig) -> Result<u32> {
    let (h, w) = cfg.vision.image_size;
    if h != w || h < 1 {
        bail!(
            "not supported yet: non-square image size {h}x{w} of model {}",
            p.model
        );
    }
    Ok(h as u32)
}

/// The train-time processor (`--aug-cfg`, `--image-mean/std`) for `cfg`, and the warning OpenCLIP
/// prints for `--aug-cfg` keys only timm's transform reads.
fn train_processor(p: &Params, cfg: &ClipConfig) -> Result<(ClipProcessor, Vec<String>)> {
    let side = image_side(p, cfg)?;
    let aug = aug_cfg(p)?;
    let (mean, std) = normalization(p, &cfg.preprocess)?;
    let unused = aug.unused_keys();
    let tokenizer = crate::tokenizer::for_model(cfg, &p.model)?;
    crate::tokenizer::check_vocab(cfg, &tokenizer, &p.model)?;
    let mut warnings = crate::tokenizer::warnings(&tokenizer);
    if !unused.is_empty() {
        warnings.push(format!(
            "Unused augmentation cfg items, specify `use_timm` to use ({unused:?})."
        ));
    }
    let (interpolation, mode) = image_options(p, &cfg.preprocess)?;
    let processor = ClipProcessor::train(side, &aug, mean, std, Arc::new(tokenizer))
        .with_image_options(interpolation, mode);
    Ok((processor, warnings))
}

/// Fills `out`, one slot of `out.len() / items.len()` floats per item, with `f(item, slot)` on up
/// to `workers` scoped threads, each taking a contiguous run of items; the first error wins.
/// (Image decoding for CSV batches and for zero-shot evaluation.)
pub(crate) fn fill_parallel<T: Sync>(
    items: &[T],
    workers: usize,
    out: &mut [f32],
    f: &(dyn Fn(&T, &mut [f32]) -> Result<()> + Sync),
) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let per = out.len() / items.len();
    let chunk = items.len().div_ceil(workers.max(1));
    std::thread::scope(|scope| {
        let jobs: Vec<_> = items
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * per))
            .map(|(its, slots)| {
                scope.spawn(move || {
                    its.iter()
                        .zip(slots.chunks_mut(per))
                        .try_for_each(|(it, slot)| f(it, slot))
                })
            })
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().expect("decode thread"))
    })
}

/// The training data of a run: its plan and a way to iterate its epochs.
pub struct TrainData {
    source: Source,
    /// webdataset's host buffers, made on the first epoch (see [`HostMemory`])
    ring: std::sync::Mutex<Option<BufferRing>>,
    batch_size: i64,
    /// (rank, world size): each rank reads its own part of every global batch.
    rank: i64,
    world: i64,
    /// Optimizer steps per epoch (OpenCLIP's `num_batches`): the schedule's unit.
    pub batches_per_epoch: i64,
    /// OpenCLIP's `dataloader.num_samples` (the `[n/N]` of the log lines).
    pub samples_per_epoch: i64,
    /// Things to log once the run directory exists (e.g. unused `--aug-cfg` keys).
    pub warnings: Vec<String>,
}

impl TrainData {
    /// Checks the data flags and builds this rank's source; starts no thread and reads no shard
    /// (only a `sizes.json` beside local shards when `--train-num-samples` is absent).
    /// Synthetic data gives rank r of W the samples `(i·W + r)·B …` of its i-th batch, so the
    /// global batch is the same samples in the same order for any W × B; webdataset splits the
    /// shards by rank (plain) or seeds the draw by rank (resampled), as OpenCLIP does.
    /// `streams`: a resumed run's stream layout ([`SavedLayout`]), else `--workers`'.
    pub fn new(
        p: &Params,
        cfg: &ClipConfig,
        rank: usize,
        world: usize,
        streams: Option<usize>,
    ) -> Result<TrainData> {
        if p.batch_size < 1 {
            bail!("--batch-size must be at least 1");
        }
        if p.train_num_samples.is_some_and(|n| n < 1) {
            bail!("--train-num-samples must be at least 1");
        }
        let world = world.max(1) as i64;
        let (source, batches_per_epoch, samples_per_epoch, warnings) = match dataset_kind(p)? {
            DataKind::Synthetic => Self::synthetic(p, cfg, world)?,
            DataKind::Csv => Self::csv(p, cfg, world)?,
            DataKind::WebDataset => Self::webdataset(p, cfg, rank, world, streams)?,
        };
        Ok(TrainData {
            source,
            ring: Default::default(),
            batch_size: p.batch_size,
            rank: rank as i64,
            world,
            batches_per_epoch,
            samples_per_epoch,
            warnings,
        })
    }

    /// `--dataset-type synthetic`: `--train-num-samples` random samples, whole global batches.
    fn synthetic(p: &Params, cfg: &ClipConfig, world: i64) -> Result<Planned> {
        let webdataset_only = [
            ("--aug-cfg", !p.aug_cfg.is_empty()),
            ("--image-mean", p.image_mean.is_some()),
            ("--image-std", p.image_std.is_some()),
            ("--dataset-resampled", p.dataset_resampled),
            (
                "--train-data-upsampling-factors",
                p.train_data_upsampling_factors.is_some(),
            ),
        ];
        if let Some((f, _)) = webdataset_only.iter().find(|(_, given)| *given) {
            bail!("{f} has no effect with --dataset-type synthetic");
        }
        let Some(n) = p.train_num_samples else {
            bail!("--dataset-type synthetic needs --train-num-samples")
        };
        let batches = n / (p.batch_size * world);
        if batches == 0 {
            bail!(
                "--train-num-samples {n} is less than one global batch of {} × {world} ranks",
                p.batch_size
            );
        }
        let data = Synthetic {
            seed: p.seed,
            image_size: cfg.vision.image_size,
            context_length: cfg.text.context_length,
            vocab_size: cfg.text.vocab_size,
        };
        Ok((Source::Synthetic(data), batches, n, Vec::new()))
    }

    /// `--dataset-type webdataset`: clip-data's loader over this rank's shards.
    fn webdataset(
        p: &Params,
        cfg: &ClipConfig,
        rank: usize,
        world: i64,
        streams: Option<usize>,
    ) -> Result<Planned> {
        let spec = p.train_data.as_deref().unwrap_or_default();
        if p.train_data_upsampling_factors.is_some() && !p.dataset_resampled {
            bail!("--train-data-upsampling-factors is only supported with --dataset-resampled (sampling with replacement)");
        }
        let (processor, mut warnings) = train_processor(p, cfg)?;
        let shards = ShardList::parse(spec, p.train_data_upsampling_factors.as_deref())
            .context("--train-data")?;
        if let Some(missing) = missing_local_shard(&shards) {
            bail!("--train-data: no such shard: {missing}");
        }
        let mut lc = LoaderConfig::new(shards, p.batch_size as usize);
        lc.resampled = p.dataset_resampled;
        lc.seed = p.seed as u64;
        lc.rank = rank;
        lc.world = world as usize;
        lc.workers = p.workers.max(0) as usize;
        if let Some(n) = streams.filter(|&n| n != lc.streams()) {
            warnings.push(format!(
                "resuming a run read as {n} data streams per rank: keeping its sample order ({n} streams, served by --workers {} decode threads)",
                lc.workers
            ));
            lc.streams = Some(n);
        }
        lc.num_samples = p.train_num_samples.map(|n| n as u64);
        if let Ok(t) = std::env::var("CLIP_TRAIN_DATA_TIMEOUT") {
            let secs: f64 = t
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .with_context(|| {
                    format!("CLIP_TRAIN_DATA_TIMEOUT={t:?}: expected a positive number of seconds")
                })?;
            lc.no_progress_timeout = std::time::Duration::from_secs_f64(secs);
        }
        let loader = Loader::new(lc, Arc::new(processor)).map_err(|e| {
            if matches!(e.downcast_ref(), Some(LoaderError::NumSamplesUnknown)) {
                anyhow::anyhow!("--train-num-samples is required: no sizes.json beside the shards gives the dataset size")
            } else {
                e
            }
        })?;
        let Some((_, batches, samples)) = loader.plan() else {
            bail!("--train-num-samples is required")
        };
        Ok((
            Source::WebDataset(Box::new(loader)),
            batches as i64,
            samples as i64,
            warnings,
        ))
    }

    /// `--dataset-type csv`: every row once per epoch, split across ranks, partial batch dropped.
    fn csv(p: &Params, cfg: &ClipConfig, world: i64) -> Result<Planned> {
        let (processor, warnings) = train_processor(p, cfg)?;
        let data = CsvData::open(p, processor)?;
        let n = data.len() as i64;
        let batches = (n + world - 1) / world / p.batch_size;
        if batches == 0 {
            bail!(
                "--train-data {}: {n} rows are less than one batch of {} per rank",
                p.train_data.as_deref().unwrap_or_default(),
                p.batch_size
            );
        }
        Ok((Source::Csv(Arc::new(data)), batches, n, warnings))
    }

    pub fn kind(&self) -> DataKind {
        match self.source {
            Source::Synthetic(_) => DataKind::Synthetic,
            Source::WebDataset(_) => DataKind::WebDataset,
            Source::Csv(_) => DataKind::Csv,
        }
    }

    /// The position at the start of `epoch` (what an epoch-end checkpoint stores).
    pub fn epoch_start(&self, epoch: i64) -> DataPosition {
        DataPosition {
            source: self.kind(),
            epoch,
            batches: 0,
            loader: None,
            streams: self.streams(),
        }
    }

    /// The rest of the epoch a checkpoint of `saved.len()` ranks interrupted after
    /// `step_in_epoch` steps, on this world. Plain webdataset shards: the samples the epoch
    /// still had, split over this world's streams ([`clip_data::rebalance`]), none trained
    /// twice. `--dataset-resampled`: fresh draws from a seed derived from `step`. CSV and
    /// synthetic data: the batch index converted (their order is a function of it). The steps
    /// counted as done are what makes the rest of the epoch fit this world's epoch length.
    pub fn continue_on_world(
        &self,
        saved: &[DataPosition],
        step_in_epoch: i64,
        accum: i64,
        step: i64,
    ) -> Result<Continued> {
        let first = saved.first().context("no saved data position")?;
        let (old_world, b) = (saved.len() as i64, self.batch_size);
        let steps = self.batches_per_epoch / accum;
        let trained = step_in_epoch * accum * b * old_world;
        let from = format!(
            "epoch {} was interrupted after step {step_in_epoch} of {old_world} ranks",
            first.epoch
        );
        let Source::WebDataset(loader) = &self.source else {
            let done = (trained / (accum * b * self.world)).min(steps);
            let position = DataPosition {
                batches: done * accum,
                ..self.epoch_start(first.epoch)
            };
            return Ok(Continued {
                position,
                step_in_epoch: done,
                info: format!("{from}: {trained} samples trained, continuing at step {done} of {steps} on {} ranks", self.world),
                warning: Some(format!("the rest of epoch {} reads {} data in this world size's order: samples differ from an uninterrupted run's", first.epoch, self.kind().name())),
            });
        };
        let positions = saved
            .iter()
            .map(|p| p.loader.clone())
            .collect::<Option<Vec<Position>>>()
            .context(
                "a mid-epoch webdataset checkpoint without the data positions of every rank",
            )?;
        let (left, position, info, warning) = if positions[0].resampled {
            let cfg = loader.config();
            let n = cfg.num_samples.unwrap_or_default();
            let streams = positions[0].streams.len();
            let old = clip_data::loader::epoch_plan(n, b as usize, old_world as usize, streams);
            let rest = (old.1 as i64 / accum - step_in_epoch) * accum * b * old_world;
            let batches = rest / (b * self.world * accum) * accum;
            let reseed = clip_data::order::derive_seed(&[cfg.seed, step as u64]);
            let p = clip_data::rebalance::resampled_restart(
                loader,
                &positions,
                reseed,
                batches as u64,
            )?;
            let warning = format!("with --dataset-resampled the rest of epoch {} draws afresh from a seed derived from step {step}: the sample order differs from an uninterrupted run's", first.epoch);
            (
                batches,
                p,
                format!(
                    "{from}: {rest} samples left, {batches} batches of {b} per rank on {} ranks",
                    self.world
                ),
                Some(warning),
            )
        } else {
            let split = clip_data::rebalance::split_epoch(loader, &positions, accum as u64)?;
            (
                split.batches as i64,
                split.position,
                format!("{from}: {}", split.summary),
                None,
            )
        };
        let done = (steps - left / accum).max(0);
        Ok(Continued {
            position: DataPosition {
                batches: done * accum,
                loader: Some(position),
                ..self.epoch_start(first.epoch)
            },
            step_in_epoch: done,
            info: format!(
                "{info}; continuing at step {done} of {steps} on {} ranks",
                self.world
            ),
            warning,
        })
    }

    /// The streams per rank webdataset reads with.
    fn streams(&self) -> Option<usize> {
        match &self.source {
            Source::WebDataset(l) => Some(l.config().streams()),
            _ => None,
        }
    }

    /// The batches of `epoch` from `step_in_epoch` on; `saved` is the checkpoint's position
    /// (needed by webdataset when `step_in_epoch > 0`); `host`: where webdataset assembles them.
    pub fn epoch(
        &self,
        epoch: i64,
        step_in_epoch: i64,
        saved: Option<&DataPosition>,
        host: &HostMemory,
    ) -> Result<Epoch> {
        if let Some(saved) = saved.filter(|_| step_in_epoch > 0) {
            if saved.source != self.kind() {
                bail!("the checkpoint was taken mid-epoch on --dataset-type {} data; resume it with the same data (or from an epoch checkpoint)", saved.source.name());
            }
            if (saved.epoch, saved.batches) != (epoch, step_in_epoch) {
                bail!("the checkpoint's data position (epoch {}, batch {}) does not match its training state (epoch {epoch}, step in epoch {step_in_epoch})", saved.epoch, saved.batches);
            }
        }
        let inner = match &self.source {
            Source::Csv(data) => Inner::Csv(csv_batches(
                Arc::clone(data),
                data.order(epoch, self.rank, self.world),
                (epoch, self.batch_size as usize),
                step_in_epoch..self.batches_per_epoch,
                self.host_ring(host)?,
            )),
            Source::Synthetic(data) => Inner::Synthetic(synthetic_batches(
                data.clone(),
                (self.rank, self.world, self.batch_size),
                step_in_epoch..self.batches_per_epoch,
            )),
            Source::WebDataset(loader) => {
                // an epoch split over this world size may count no step as done yet
                let split = saved.filter(|s| s.epoch == epoch && s.batches == 0);
                let resume = if step_in_epoch == 0 {
                    split.and_then(|s| s.loader.as_ref())
                } else {
                    Some(saved.and_then(|s| s.loader.as_ref()).with_context(|| {
                        format!("the checkpoint (epoch {epoch}, step {step_in_epoch} in the epoch) has no webdataset data position to resume from")
                    })?)
                };
                let it = loader
                    .epoch_with(epoch as u64, resume, Some(self.host_ring(host)?))
                    .context("cannot resume the data position")?;
                Inner::WebDataset(Box::new(it))
            }
        };
        Ok(Epoch {
            inner,
            rank: self.rank,
            streams: self.streams(),
            epoch,
            taken: step_in_epoch,
            batches: step_in_epoch,
            batches_per_epoch: self.batches_per_epoch,
        })
    }
}

impl TrainData {
    /// The ring webdataset and CSV batches are assembled in, allocated on first use.
    fn host_ring(&self, host: &HostMemory) -> Result<BufferRing> {
        let mut ring = self.ring.lock().unwrap();
        if ring.is_none() {
            let (side, ctx) = match &self.source {
                Source::WebDataset(loader) => (loader.image_size(), loader.context_length()),
                Source::Csv(data) => data.shape(),
                Source::Synthetic(_) => unreachable!("synthetic batches are made as tensors"),
            };
            let shape = [self.batch_size, side as i64, ctx as i64];
            *ring = Some(prefetch::host_ring(
                host.device,
                host.image_kind,
                shape,
                host.buffers,
            )?);
        }
        Ok(ring.clone().expect("made above"))
    }
}

/// Where a run's batches go: the device, the images' dtype on the way there, and the ring's
/// size — the batches the trainer holds at once (the step's and the next step's micro-batches)
/// plus two for the assembler to work ahead.
pub struct HostMemory {
    pub device: tch::Device,
    pub image_kind: tch::Kind,
    pub buffers: usize,
}

/// A source with its epoch plan: (source, batches per epoch, samples per epoch, warnings).
type Planned = (Source, i64, i64, Vec<String>);

/// The first shard of `shards` that is a local file (a path or `file://`) and is not there;
/// `pipe:` and remote URLs are only found out when read.
pub(crate) fn missing_local_shard(shards: &ShardList) -> Option<String> {
    shards.urls().into_iter().find(|u| {
        let local = !u.starts_with("pipe:") && (!u.contains("://") || u.starts_with("file://"));
        local && !Path::new(u.strip_prefix("file://").unwrap_or(u)).is_file()
    })
}

/// `--dataset-type synthetic`'s batches `batches` of this epoch, made off the training thread
/// (a 320-px batch of 256 is 79 M random floats) two ahead of the trainer. Rank r of W takes
/// the samples `(i·W + r)·B …` of its i-th batch. The position stays the trainer's: batches it
/// took (`Epoch::batches`), not batches made. The thread ends when the epoch's batches are made
/// or the trainer drops the epoch.
fn synthetic_batches(
    data: Synthetic,
    (rank, world, batch_size): (i64, i64, i64),
    batches: std::ops::Range<i64>,
) -> Receiver<Result<(Tensor, Tensor)>> {
    let (made, taken) = std::sync::mpsc::sync_channel(2);
    std::thread::spawn(move || {
        for i in batches {
            let first = (i * world + rank) * batch_size;
            if made.send(data.batch(first, batch_size)).is_err() {
                break;
            }
        }
    });
    taken
}

/// `--dataset-type csv`'s batches `batches` of this epoch (rows `order`), decoded off the
/// training thread into `ring`'s buffers, as far ahead as the ring lets it. The position stays
/// the trainer's (batches trained). The thread ends when the epoch's batches are made or the
/// trainer drops the epoch.
fn csv_batches(
    data: Arc<CsvData>,
    order: Vec<usize>,
    (epoch, batch_size): (i64, usize),
    batches: std::ops::Range<i64>,
    ring: BufferRing,
) -> Receiver<Result<HostBatch>> {
    let (made, taken) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        for i in batches {
            let Some(mut lease) = ring.take(&|| false) else {
                break;
            };
            let rows = &order[i as usize * batch_size..(i as usize + 1) * batch_size];
            let batch = data
                .batch_into(rows, epoch, lease.buffer_mut())
                .map(|()| HostBatch::in_buffer(lease, batch_size as i64));
            if made.send(batch).is_err() {
                break;
            }
        }
    });
    taken
}

enum Inner {
    /// Batches decoded ahead on a thread of their own (see [`csv_batches`]).
    Csv(Receiver<Result<HostBatch>>),
    /// Batches made ahead on a thread of their own (see [`synthetic_batches`]).
    Synthetic(Receiver<Result<(Tensor, Tensor)>>),
    WebDataset(Box<EpochIter>),
}

/// Test hook, inert unless set: `CLIP_TRAIN_TEST_KEYS=DIR` appends the sample keys of every
/// webdataset batch taken to `DIR/rank{R}.keys`, one `epoch batch key` line each (the batch:
/// its index in the rank's epoch), so that tests see which samples a run trained.
fn test_log_keys(rank: i64, epoch: i64, batch: i64, keys: &[String]) {
    use std::io::Write;
    let Some(dir) = std::env::var_os("CLIP_TRAIN_TEST_KEYS") else {
        return;
    };
    let path = Path::new(&dir).join(format!("rank{rank}.keys"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("CLIP_TRAIN_TEST_KEYS: a writable folder");
    for k in keys {
        writeln!(f, "{epoch} {batch} {k}").expect("CLIP_TRAIN_TEST_KEYS: a writable folder");
    }
}

/// One epoch's batches.
pub struct Epoch {
    inner: Inner,
    rank: i64,
    streams: Option<usize>,
    epoch: i64,
    /// batches taken (trained, and taken ahead)
    taken: i64,
    /// batches trained ([`Epoch::trained`]): the position's count
    batches: i64,
    batches_per_epoch: i64,
}

impl Epoch {
    /// The next batch on the host; None at the end of the epoch; an error when the input
    /// stalls or yields nothing usable (the run must stop). It is not in the position until
    /// [`Epoch::trained`] says it was trained.
    pub fn next_batch(&mut self) -> Option<Result<HostBatch>> {
        if self.taken >= self.batches_per_epoch {
            return None;
        }
        let owned = |(images, tokens)| HostBatch {
            images,
            tokens,
            lease: None,
        };
        let out = match &mut self.inner {
            Inner::Csv(made) => match made.recv() {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return Some(Err(anyhow::anyhow!("the CSV data thread stopped"))),
            },
            Inner::Synthetic(made) => match made.recv() {
                Ok(Ok(b)) => owned(b),
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return Some(Err(anyhow::anyhow!("the synthetic data thread stopped"))),
            },
            Inner::WebDataset(it) => match it.next_held()? {
                Err(e) => return Some(Err(e)),
                Ok(b) => {
                    test_log_keys(self.rank, self.epoch, self.taken, &b.keys);
                    let n = b.batch_size as i64;
                    HostBatch::in_buffer(b.into_lease(), n)
                }
            },
        };
        self.taken += 1;
        Some(Ok(out))
    }

    /// The `n` oldest batches taken and not yet trained were trained: the position moves past
    /// them.
    pub fn trained(&mut self, n: usize) {
        self.batches += n as i64;
        if let Inner::WebDataset(it) = &mut self.inner {
            it.confirm(n);
        }
    }

    /// The position after the last batch trained (store it with a checkpoint).
    pub fn position(&self) -> DataPosition {
        let (source, loader) = match &self.inner {
            Inner::Csv(_) => (DataKind::Csv, None),
            Inner::Synthetic(_) => (DataKind::Synthetic, None),
            Inner::WebDataset(it) => (DataKind::WebDataset, Some(EpochIter::position(it))),
        };
        DataPosition {
            source,
            epoch: self.epoch,
            batches: self.batches,
            loader,
            streams: self.streams,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: &[&str]) -> Params {
        let mut args = vec!["clip-train", "--model", "clip_tiny_test"];
        args.extend_from_slice(extra);
        crate::params::parse(args).unwrap()
    }

    #[test]
    fn aug_cfg_values_round_trip_through_python_repr() {
        let p = params(&[
            "--aug-cfg",
            "scale=(0.5, 1.0)",
            "re_prob=0.25",
            "use_timm=True",
            "re_count=2",
            "ratio=(0.75,1.3333333333333333)",
        ]);
        let a = aug_cfg(&p).unwrap();
        assert_eq!(a.scale, (0.5, 1.0));
        assert_eq!(a.re_prob, 0.25);
        assert!(a.use_timm);
        assert_eq!(a.re_count, 2);
        assert_eq!(a.ratio, (0.75, 4.0 / 3.0));
        let bad = params(&["--aug-cfg", "sclae=(0.5, 1.0)"]);
        let e = aug_cfg(&bad).unwrap_err().to_string();
        assert!(e.contains("sclae") && !e.contains('\n'), "{e}");
        assert_eq!(py_repr(&PyLiteral::Tuple(vec![PyLiteral::Int(1)])), "(1,)");
        assert_eq!(py_repr(&PyLiteral::Str("it's".into())), "'it\\'s'");
    }

    #[test]
    fn auto_dataset_type_follows_openclip_and_shard_syntax() {
        let k = |d: &str| dataset_kind(&params(&["--train-data", d]));
        assert_eq!(k("/d/00000.tar").unwrap(), DataKind::WebDataset);
        assert_eq!(
            k("/d/{00000..00003}.tar::/e/x.tar").unwrap(),
            DataKind::WebDataset
        );
        assert_eq!(
            k("pipe:aws s3 cp s3://b/x - ").unwrap(),
            DataKind::WebDataset
        );
        assert_eq!(k("s3://bucket/shard").unwrap(), DataKind::WebDataset);
        assert_eq!(k("/d/train.csv").unwrap(), DataKind::Csv);
        assert!(k("/d/train.parquet").is_err());
        assert!(dataset_kind(&params(&[])).is_err());
        assert_eq!(
            dataset_kind(&params(&["--dataset-type", "synthetic"])).unwrap(),
            DataKind::Synthetic
        );
    }

    #[test]
    fn mean_std_take_one_or_three_values() {
        assert_eq!(channels("m", Some(&[0.5]), OPENAI_MEAN).unwrap(), [0.5; 3]);
        assert_eq!(
            channels("m", Some(&[0.1, 0.2, 0.3]), OPENAI_MEAN).unwrap(),
            [0.1, 0.2, 0.3]
        );
        assert!(channels("m", Some(&[0.1, 0.2]), OPENAI_MEAN).is_err());
        assert_eq!(channels("m", None, OPENAI_MEAN).unwrap(), OPENAI_MEAN);
    }
}
