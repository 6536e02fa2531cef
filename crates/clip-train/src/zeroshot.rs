//! `--imagenet-val DIR`: OpenCLIP's zero-shot ImageNet evaluation (`open_clip_train/zero_shot.py`).
//!
//! A classifier is built from text alone — for each of the 1000 class names, the 80 OpenAI
//! templates ("a bad photo of a {c}." …) are encoded, L2-normalised, averaged and normalised again
//! — and every image of the ImageFolder-layout `DIR` (one sub-folder per class, sorted names giving
//! the class index, as torchvision's `ImageFolder`) is classified by
//! `100 · normalize(encode_image(x)) @ classifier`; top-1 and top-5 accuracy are the metrics
//! `imagenet-zeroshot-val-top1` / `-top5`. Images go through the eval transform (shortest side
//! to the model's size, centre crop), decoded by `--workers` threads.
//!
//! Runs after every `--zeroshot-frequency`-th epoch and after the last one (OpenCLIP's rule), or
//! once when there is no training data (evaluation only), on every rank: each encodes a share of
//! the class prompts and classifies a share of the image batches (see [`evaluate`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clip_data::transform::{decode_image, ImageTransform};
use clip_dist::Collectives;
use clip_model::{l2_normalize, Clip};
use tch::{Device, Kind, Tensor};

use crate::evaluator::Shares;
use crate::zeroshot_metadata::{IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES};

/// torchvision's `IMG_EXTENSIONS`, compared lower-cased.
const IMG_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// Classes OpenCLIP encodes per text forward (`num_classes_per_batch`).
const CLASSES_PER_BATCH: usize = 10;

/// torchvision's `ImageFolder`: (path, class index) for every image under `root/<class>/`.
pub struct ImageFolder {
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, i64)>,
}

impl ImageFolder {
    pub fn scan(root: &Path) -> Result<ImageFolder> {
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("--imagenet-val {}: cannot read the folder", root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            bail!(
                "--imagenet-val {}: no class folders (expected ImageNet's val/<synset>/*.JPEG layout)",
                root.display()
            );
        }
        if classes.len() > IMAGENET_CLASSNAMES.len() {
            bail!(
                "--imagenet-val {}: {} class folders, ImageNet has {}",
                root.display(),
                classes.len(),
                IMAGENET_CLASSNAMES.len()
            );
        }
        let mut samples = Vec::new();
        for (index, class) in classes.iter().enumerate() {
            let mut files = Vec::new();
            walk(&root.join(class), &mut files)?;
            files.sort();
            if files.is_empty() {
                bail!(
                    "--imagenet-val {}: class folder {class} holds no image",
                    root.display()
                );
            }
            samples.extend(files.into_iter().map(|f| (f, index as i64)));
        }
        Ok(ImageFolder { classes, samples })
    }
}

/// Every image file below `dir` (following links, as `ImageFolder` does).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|x| IMG_EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// How to run the model (the training run's device and precision).
pub struct EvalOptions {
    pub device: Device,
    /// Autocast dtype (`amp`: fp16, `amp_bf16`: bf16), as training uses.
    pub autocast: Option<Kind>,
    /// The dtype images go in as (bf16 for `bf16` / `pure_bf16` weights).
    pub input_kind: Kind,
    pub batch_size: usize,
    pub workers: usize,
}

impl EvalOptions {
    /// The autocast guard for a forward, if the precision wants one.
    pub(crate) fn autocast(&self) -> Result<Option<torch_ext::AutocastGuard>> {
        self.autocast
            .map(|k| torch_ext::AutocastGuard::new(self.device, k))
            .transpose()
    }
}

/// The zero-shot classifier `[D, 1000]`: per class, the normalised mean of the normalised text
/// features of its 80 prompts (`build_zero_shot_classifier`).
pub fn build_classifier(model: &Clip, opts: &EvalOptions) -> Result<Tensor> {
    classifier_parts(model, opts, (0, 1))
}

/// The classifier's columns for the groups of [`CLASSES_PER_BATCH`] classes `g` with
/// `g % world == rank`, in order, as one `[D, classes]` tensor: a group's columns do not depend
/// on the others, so the ranks can share the 80 000 prompts. Past 100 ranks some ranks have no
/// group and hold `[D, 0]`. The columns are in `opts.input_kind`, the kind the features meet them
/// in (under autocast the matmul casts both to the same half kind, exactly), so every rank,
/// an empty one too, gathers the same dtype.
fn classifier_parts(
    model: &Clip,
    opts: &EvalOptions,
    (rank, world): (usize, usize),
) -> Result<Tensor> {
    let cfg = model.config();
    let tokenizer = crate::tokenizer::for_model(cfg, "of the zero-shot classifier")?;
    let ctx = cfg.text.context_length;
    let n_templates = OPENAI_IMAGENET_TEMPLATES.len() as i64;
    let _ac = opts.autocast()?;
    let parts = tch::no_grad(|| -> Vec<Tensor> {
        IMAGENET_CLASSNAMES
            .chunks(CLASSES_PER_BATCH)
            .enumerate()
            .filter(|(g, _)| g % world == rank)
            .map(|(_, names)| {
                let texts: Vec<String> = names
                    .iter()
                    .flat_map(|c| {
                        OPENAI_IMAGENET_TEMPLATES
                            .iter()
                            .map(move |t| t.replace("{c}", c))
                    })
                    .collect();
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let ids = tokenizer.tokenize(&refs);
                let tokens = Tensor::from_slice(&ids)
                    .reshape([texts.len() as i64, ctx])
                    .to_device(opts.device);
                let emb = l2_normalize(&model.encode_text(&tokens));
                let emb = emb.reshape([names.len() as i64, n_templates, -1]).mean_dim(
                    [1i64].as_slice(),
                    false,
                    None,
                );
                let emb = &emb / emb.norm_scalaropt_dim(2, [1i64], true);
                emb.tr().to_kind(opts.input_kind)
            })
            .collect()
    });
    Ok(match parts.is_empty() {
        true => Tensor::zeros(
            [model.config().embed_dim, 0],
            (opts.input_kind, opts.device),
        ),
        false => Tensor::cat(&parts, 1),
    })
}

/// The whole classifier on every rank of `comm`, each rank encoding its share of the class
/// groups ([`gather_classifier`] puts them together).
fn shared_classifier(model: &Clip, opts: &EvalOptions, comm: &dyn Collectives) -> Result<Tensor> {
    let part = classifier_parts(model, opts, (comm.rank(), comm.world_size()))?;
    gather_classifier(&part, comm)
}

/// The classifier `[D, 1000]` on every rank from each rank's `part` (the columns of its groups
/// `g` with `g % world == rank`, in order; `[D, 0]` for a rank with none): the columns travel
/// as rows over the collectives (one all-gather of every rank's, padded to the longest share;
/// never the store) and are put back in class order, the same bits a single process computes.
pub fn gather_classifier(part: &Tensor, comm: &dyn Collectives) -> Result<Tensor> {
    let world = comm.world_size();
    if world == 1 {
        return Ok(part.shallow_clone());
    }
    let mine = part.tr().contiguous();
    let by_rank = crate::ddp::all_gather_rows(comm, &[&mine])?;
    let n = IMAGENET_CLASSNAMES.len();
    let groups = n.div_ceil(CLASSES_PER_BATCH);
    let size = |g: usize| (n - g * CLASSES_PER_BATCH).min(CLASSES_PER_BATCH) as i64;
    // Each rank's rows are its groups, in order.
    let mut taken = vec![0i64; world];
    let mut all = Vec::with_capacity(groups);
    for g in 0..groups {
        let (r, k) = (g % world, size(g));
        let rows = &by_rank[r][0];
        if taken[r] + k > rows.size()[0] {
            bail!("rank {r} sent {} classifier rows, too few", rows.size()[0]);
        }
        all.push(rows.narrow(0, taken[r], k));
        taken[r] += k;
    }
    Ok(Tensor::cat(&all, 0).tr())
}

/// `100 · normalize(encode_image(images)) @ classifier`: the logits `[B, 1000]`.
pub fn logits(
    model: &Clip,
    classifier: &Tensor,
    images: &Tensor,
    opts: &EvalOptions,
) -> Result<Tensor> {
    let _ac = opts.autocast()?;
    Ok(tch::no_grad(|| {
        let feats = l2_normalize(&model.encode_image(images, false));
        feats.matmul(classifier) * 100.0
    }))
}

/// Decodes and transforms `paths` with `workers` threads into one `[N, 3, S, S]` batch.
pub fn load_images(paths: &[&Path], transform: &ImageTransform, workers: usize) -> Result<Tensor> {
    let s = transform.image_size() as i64;
    let mut pixels = vec![0f32; paths.len() * transform.output_len()];
    crate::data::fill_parallel(paths, workers, &mut pixels, &|p, out| {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let img = decode_image(&bytes)
            .with_context(|| format!("{}: not a decodable image", p.display()))?;
        // The eval transform draws nothing from the RNG.
        transform.apply_into(&img, &mut rand::rng(), out);
        Ok(())
    })?;
    Ok(Tensor::from_slice(&pixels).reshape([paths.len() as i64, 3, s, s]))
}

/// Top-1 and top-5 accuracy over the folder, split across the ranks of `comm`: the classifier's
/// class groups, and the image batches (the single process's batches `i` with
/// `i % world == rank`); the hit counts are summed in rank order. Also returns each rank's
/// share: (images, batches). `progress` is called after every batch (the rank heartbeats
/// through it).
pub fn evaluate(
    model: &Clip,
    folder: &ImageFolder,
    transform: &ImageTransform,
    opts: &EvalOptions,
    comm: &dyn Collectives,
    progress: &mut dyn FnMut() -> Result<()>,
) -> Result<(f64, f64, Shares)> {
    let classifier = shared_classifier(model, opts, comm)?;
    let (rank, world) = (comm.rank(), comm.world_size());
    let (mut top1, mut top5, mut images_seen, mut batches) = (0i64, 0i64, 0i64, 0usize);
    let chunks = folder.samples.chunks(opts.batch_size.max(1));
    for batch in chunks.skip(rank).step_by(world) {
        let paths: Vec<&Path> = batch.iter().map(|(p, _)| p.as_path()).collect();
        let images = load_images(&paths, transform, opts.workers)?
            .to_device(opts.device)
            .to_kind(opts.input_kind);
        let logits = logits(model, &classifier, &images, opts)?;
        let targets: Vec<i64> = batch.iter().map(|(_, t)| *t).collect();
        let (h1, h5) = topk_hits(&logits, &targets);
        top1 += h1;
        top5 += h5;
        images_seen += batch.len() as i64;
        batches += 1;
        progress()?;
    }
    let (top1, top5, shares) =
        sum_counts(comm, [top1, top5, images_seen, batches as i64], opts.device)?;
    let n = folder.samples.len() as f64;
    Ok((top1 as f64 / n, top5 as f64 / n, shares))
}

/// Every rank's `[top-1 hits, top-5 hits, images, batches]` summed in rank order, and each
/// rank's share (images, batches): one all-gather over the collectives (on `device`: NCCL takes
/// tensors on the GPU).
pub fn sum_counts(
    comm: &dyn Collectives,
    mine: [i64; 4],
    device: Device,
) -> Result<(i64, i64, Shares)> {
    let all = match comm.world_size() {
        1 => Tensor::from_slice(&mine),
        _ => comm.all_gather(&Tensor::from_slice(&mine).to(device))?,
    };
    let all: Vec<i64> = Vec::try_from(&all.to(Device::Cpu))?;
    let (mut top1, mut top5, mut shares) = (0i64, 0i64, Vec::new());
    for v in all.chunks_exact(4) {
        top1 += v[0];
        top5 += v[1];
        shares.push((v[2], v[3] as usize));
    }
    Ok((top1, top5, shares))
}

/// How many rows have their target among the 1 and among the 5 largest logits (OpenCLIP's
/// `accuracy(output, target, topk=(1, 5))`, counts rather than fractions).
pub fn topk_hits(logits: &Tensor, targets: &[i64]) -> (i64, i64) {
    let target = Tensor::from_slice(targets)
        .to_device(logits.device())
        .unsqueeze(1);
    let (_, pred) = logits.to_kind(Kind::Float).topk(5, 1, true, true);
    let hit = pred.eq_tensor(&target);
    (
        hit.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]),
        hit.sum(Kind::Int64).int64_value(&[]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets ranked 1st, 4th and 8th: one top-1 hit, two top-5 hits.
    #[test]
    fn counts_top1_and_top5_hits() {
        let logits = Tensor::arange(10, (Kind::Float, Device::Cpu))
            .flip([0])
            .unsqueeze(0)
            .repeat([3, 1]);
        assert_eq!(topk_hits(&logits, &[0, 3, 7]), (1, 2));
    }
}
