//! The training loop, assembled from the small parts beside it: params → rendezvous
//! (`clip_dist`) → run directory + logging ([`crate::rundir`], rank 0 only) → model
//! (+ `--pretrained`, `--lock-*`) → optimizer + schedule → data (this rank's share) → resume
//! (rank 0 picks) → step loop ([`crate::step`] forward/backward, [`crate::ddp`] gradient average,
//! clipping, AdamW) → checkpoints (rank 0 writes, all wait).
//!
//! Scope: `--dataset-type synthetic` and `webdataset` (clip-data's loader, see [`crate::data`];
//! every rank's data position is saved in every checkpoint and restored on resume); fp32 and
//! amp_bf16; checkpoints every `--save-frequency` epochs and `--save-every-n-steps` steps;
//! `--resume latest|PATH` to the exact step (and sample); preemption signals, agreed across ranks.
//! Flags whose non-default values are not implemented yet are refused up front ("not supported
//! yet: --X"), never silently ignored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clip_dist::{Backend, ReduceOp, WorldInfo};
use clip_model::{weights, Clip, ClipConfig};
use tch::{nn::VarStore, Device};

use crate::checkpoint::{self, TrainState};
use crate::data::TrainData;
use crate::ddp::{self, DistGather, GradBuckets};
use crate::loss::LossLayout;
use crate::metrics::peak_flops;
use crate::optimizer::{clip_grad_norm, AdamW, AdamWConfig};
use crate::params::Params;
use crate::pyfmt::{alt_g, repr_float};
use crate::rundir::{self, Log};
use crate::scaler::GradScaler;
use crate::scheduler::LrSchedule;
use crate::step::{forward_backward, StepOptions};
use crate::tensorboard::SummaryWriter;
use crate::val::{self, ValData};
use crate::zeroshot::{self, EvalOptions, ImageFolder};
use clip_data::transform::ImageTransform;

/// Exit status after a preemption signal made the run checkpoint and stop: slurm scripts
/// requeue on it (EX_TEMPFAIL).
pub const EXIT_PREEMPTED: i32 = 75;

/// Flags accepted by the parser whose non-default values the trainer does not honour yet.
#[rustfmt::skip]
const NOT_YET: &[&str] = &[
    "imagenet_v2", "cache_dir", "log_local", "momentum", "opt", "use_bn_sync",
    "skip_scheduler", "pretrained_image", "lock_image_unlocked_groups",
    "image_interpolation", "image_resize_mode",
    "force_context_length", "force_image_size", "force_quick_gelu",
    "force_patch_dropout", "force_custom_text", "torchscript", "torchcompile", "trace",
    "wandb_notes", "copy_codebase", "horovod",
    "remote_sync", "distill_model", "distill_pretrained",
    "use_bnb_linear", "siglip", "loss_dist_impl",
];

fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

/// Refuses what is not implemented, before anything is written.
fn check_supported(p: &Params) -> Result<()> {
    let given = serde_json::to_value(p)?;
    let default = serde_json::to_value(crate::params::parse(["clip-train", "--model", &p.model])?)?;
    for f in NOT_YET {
        if given[*f] != default[*f] {
            bail!("not supported yet: {}", flag(f));
        }
    }
    match p.report_to.as_str() {
        "" | "tensorboard" => {}
        other => bail!("not supported yet: --report-to {other} (tensorboard works)"),
    }
    match p.precision.as_str() {
        "fp32" | "amp" | "amp_bf16" | "amp_bfloat16" | "bf16" | "pure_bf16" => {}
        other => bail!(
            "not supported yet: --precision {other} (amp, amp_bf16, bf16, pure_bf16 and fp32 are)"
        ),
    }
    if p.batch_size < 1 || p.epochs < 1 || p.workers < 0 || p.warmup < 0 {
        bail!("--batch-size and --epochs must be at least 1, --workers and --warmup at least 0");
    }
    if p.accum_freq < 1 {
        bail!("--accum-freq must be at least 1");
    }
    if p.lock_text_unlocked_layers < 0 {
        bail!("--lock-text-unlocked-layers must be at least 0");
    }
    if p.save_every_n_steps.is_some_and(|n| n < 1) {
        bail!("--save-every-n-steps must be at least 1");
    }
    Ok(())
}

/// A preemption flag raised by SIGUSR1 / SIGTERM (slurm's warning), polled between steps.
fn preemption_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGUSR1, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// No training data but an evaluation set: evaluate the loaded weights and stop (OpenCLIP runs
/// `evaluate` alone when `data` has no "train").
fn is_eval_only(p: &Params) -> bool {
    p.train_data.is_none()
        && p.dataset_type != "synthetic"
        && (p.imagenet_val.is_some() || p.val_data.is_some())
}

/// Everything about the command line that can be refused before anything is written (the
/// caller exits with status 2 on an error here, as argparse does).
pub fn validate(p: &Params) -> Result<()> {
    check_supported(p)?;
    let world = WorldInfo::from_env()?;
    dist_backend(p, crate::tool::parse_device(&p.device)?, &world)?;
    clip_dist::InitOptions::from_env(&world, p.dist_url.as_deref(), clip_dist::Backend::Cpu)?;
    let cfg = ClipConfig::load(&p.model)?;
    if let Some(dir) = &p.imagenet_val {
        ImageFolder::scan(Path::new(dir))?;
        crate::data::normalization(p)?;
        let (h, w) = cfg.vision.image_size;
        if h != w {
            bail!(
                "--imagenet-val: the eval transform is square; model {} has {h}x{w}",
                p.model
            );
        }
    }
    if let Some(spec) = &p.val_data {
        ValData::new(p, &cfg, spec)?;
    }
    if !is_eval_only(p) {
        let data = TrainData::new(p, &cfg, world.rank, world.world_size)?;
        if data.batches_per_epoch < p.accum_freq {
            bail!(
                "--accum-freq {} needs at least that many batches per epoch; the data gives {}",
                p.accum_freq,
                data.batches_per_epoch
            );
        }
    }
    if let Some(path) = p.resume.as_deref().filter(|r| *r != "latest") {
        if !Path::new(path).is_file() {
            bail!("--resume {path}: no such checkpoint");
        }
    }
    if !p.pretrained.is_empty() && !Path::new(&p.pretrained).is_file() {
        bail!("--pretrained {}: no such file", p.pretrained);
    }
    Ok(())
}

/// The collectives backend for this device: NCCL on `cuda:{local_rank}` (unless
/// `--no-set-device-rank`), the TCP backend on CPU (`--dist-backend gloo` picks it on GPUs too).
fn dist_backend(p: &Params, device: Device, world: &WorldInfo) -> Result<(Device, Backend)> {
    let device = match device {
        Device::Cuda(_) if world.world_size > 1 && !p.no_set_device_rank => {
            crate::tool::parse_device(&format!("cuda:{}", world.local_rank))?
        }
        d => d,
    };
    let backend = match (p.dist_backend.as_deref(), device) {
        (None | Some("nccl"), Device::Cuda(i)) => Backend::Nccl { device_index: i },
        (Some("nccl"), _) => bail!("--dist-backend nccl needs --device cuda"),
        (None | Some("gloo"), _) => Backend::Cpu,
        (Some(other), _) => bail!("not supported yet: --dist-backend {other} (nccl or gloo)"),
    };
    Ok((device, backend))
}

/// Runs `clip-train` with params that passed [`validate`]; returns the process exit status.
pub fn run(mut p: Params) -> Result<i32> {
    let world = WorldInfo::from_env()?;
    let (device, backend) = dist_backend(&p, crate::tool::parse_device(&p.device)?, &world)?;
    let master = world.rank == 0;
    let cfg = ClipConfig::load(&p.model)?;
    let eval_only = is_eval_only(&p);
    let resume_path = p
        .resume
        .as_deref()
        .filter(|r| *r != "latest")
        .map(PathBuf::from);
    let name = p.name.clone().unwrap_or_else(|| rundir::default_name(&p));
    let run_dir = Path::new(&p.logs).join(&name);
    let log_path = run_dir.join("out.log");
    if log_path.exists() && p.resume.is_none() {
        bail!("experiment {} already exists: use --name to start a new one or --resume to continue it", run_dir.display());
    }

    // Join the job. Every rank checked the run directory above, before rank 0 can create it.
    let opts = clip_dist::InitOptions::from_env(&world, p.dist_url.as_deref(), backend)?;
    let timeout = opts.timeout;
    let mut dist = ddp::dist(clip_dist::init(world, opts))?;
    dist.start_watchdog(timeout)?;
    let comm = dist.collectives();
    // The default name carries rank 0's clock (OpenCLIP broadcasts it too).
    let name = ddp::broadcast_string(comm, device, &name)?;
    p.name = Some(name.clone());
    let run_dir = Path::new(&p.logs).join(&name);
    let log_path = run_dir.join("out.log");
    let ckpt_dir = run_dir.join("checkpoints");
    let tensorboard_dir = run_dir.join("tensorboard");
    // Only rank 0 writes (logs, params.txt, TensorBoard, checkpoints); the others print their
    // warnings and errors to stderr, tagged with their rank.
    let mut tensorboard = if master && p.report_to == "tensorboard" {
        Some(SummaryWriter::new(&tensorboard_dir)?)
    } else {
        None
    };
    let mut log = if master {
        std::fs::create_dir_all(&ckpt_dir)
            .with_context(|| format!("cannot create {}", ckpt_dir.display()))?;
        rundir::write_params_txt(&run_dir, &p, &world)?;
        Log::to_file(&log_path)?
    } else {
        Log::for_rank(world.rank)
    };
    if world.world_size > 1 {
        log.info(&format!(
            "Distributed: rank {} of {} (local rank {}), device {device:?}, {backend:?}",
            world.rank, world.world_size, world.local_rank
        ));
    }

    // Model: identical init from --seed (on every rank, once ranks exist).
    tch::manual_seed(p.seed);
    let vs = VarStore::new(device);
    let model = Clip::new(&vs.root(), &cfg)?;
    if !p.pretrained.is_empty() {
        checkpoint::load_weights(&vs, Path::new(&p.pretrained))?;
        log.info(&format!("Loaded pretrained weights from {}", p.pretrained));
    }
    model.set_grad_checkpointing(p.grad_checkpointing);
    // Low-precision weights (no autocast): OpenCLIP's `bf16` keeps the text LayerNorms in fp32.
    match p.precision.as_str() {
        "bf16" => model.to_bf16(true),
        "pure_bf16" => model.to_bf16(false),
        _ => {}
    }
    if p.lock_image {
        // ConvNeXt has no BatchNorm: --lock-image-freeze-bn-stats has nothing to freeze.
        model.lock_image_tower();
    }
    if p.lock_text {
        // OpenCLIP 3.3.0 asserts --lock-text-freeze-layer-norm (LayerNorms are locked like
        // every other weight either way); clip-train locks them without asking for the flag.
        model.lock_text_tower(p.lock_text_unlocked_layers as usize);
    }
    let trainable: Vec<(String, tch::Tensor)> = model
        .named_parameters()
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    log.info(&format!(
        "Model {}: {} parameters ({} trainable)",
        p.model,
        model.parameter_count(),
        trainable.iter().map(|(_, t)| t.numel() as i64).sum::<i64>()
    ));

    let adamw = AdamWConfig {
        beta1: p.beta1.unwrap_or(0.9),
        beta2: p.beta2.unwrap_or(0.999),
        eps: p.eps.unwrap_or(1e-8),
        weight_decay: p.wd,
    };
    let mut opt = AdamW::new(&trainable, adamw);
    let buckets = GradBuckets::new(
        &trainable,
        match p.grad_reduce_dtype.as_str() {
            "bf16" => tch::Kind::BFloat16,
            _ => tch::Kind::Float,
        },
    );

    // Resume.
    let mut state = TrainState {
        name: name.clone(),
        epoch: 0,
        step: 0,
        step_in_epoch: 0,
        data_position: serde_json::Value::Null,
        scaler: (p.precision == "amp").then(GradScaler::default),
        optimizer_step: None,
    };
    if master {
        for stale in checkpoint::remove_stale_temp_files(&ckpt_dir) {
            log.warn(&format!(
                "removed {}: a checkpoint write that never finished",
                stale.display()
            ));
        }
    }
    // `--resume latest`: rank 0 picks, every rank loads that file.
    let loaded = match (&resume_path, p.resume.as_deref()) {
        (Some(path), _) => Some((path.clone(), checkpoint::load(path)?)),
        (None, Some("latest")) => {
            let found = if master {
                checkpoint::load_latest(&ckpt_dir, |w| log.warn(&w))
            } else {
                None
            };
            let picked = found
                .as_ref()
                .map(|(path, _)| path.display().to_string())
                .unwrap_or_default();
            let picked = ddp::broadcast_string(comm, device, &picked)?;
            if picked.is_empty() {
                log.info(&format!(
                    "No latest resume checkpoint found in {}.",
                    ckpt_dir.display()
                ));
                None
            } else if master {
                found
            } else {
                let path = PathBuf::from(picked);
                let l = checkpoint::load(&path)
                    .with_context(|| format!("rank 0 resumes from {}", path.display()))?;
                Some((path, l))
            }
        }
        _ => None,
    };
    if let Some((path, l)) = loaded {
        weights::load_state_dict(&vs, l.model).with_context(|| format!("{}", path.display()))?;
        opt.load_state(&l.optimizer, l.state.optimizer_step.unwrap_or(l.state.step))
            .with_context(|| format!("{}", path.display()))?;
        state = l.state;
        state.name = name.clone();
        // The scaler continues where it was; a checkpoint from another precision starts a new one.
        if p.precision == "amp" {
            state.scaler = state.scaler.or(Some(GradScaler::default()));
        } else {
            state.scaler = None;
        }
        // A multi-rank checkpoint holds every rank's data position: take this rank's.
        if let Some(ranks) = state.data_position.get("ranks").and_then(|r| r.as_array()) {
            if ranks.len() != world.world_size && state.step_in_epoch > 0 {
                bail!(
                    "{}: saved mid-epoch by {} ranks, resumed by {}: resume with the same world size (or from an epoch checkpoint)",
                    path.display(),
                    ranks.len(),
                    world.world_size
                );
            }
            state.data_position = ranks.get(world.rank).cloned().unwrap_or_default();
        }
        log.info(&format!(
            "=> resuming checkpoint '{}' (epoch {}, step {})",
            path.display(),
            state.epoch,
            state.step
        ));
    }

    // Evaluation, zero-shot ImageNet and --val-data (rank 0; the others wait at the next
    // collective, heartbeating).
    let zeroshot = match (&p.imagenet_val, master) {
        (Some(dir), true) => Some(ImageFolder::scan(Path::new(dir))?),
        _ => None,
    };
    let val_data = match (&p.val_data, master) {
        (Some(spec), true) => Some(ValData::new(&p, &cfg, spec)?),
        _ => None,
    };
    // OpenCLIP's get_autocast: fp16 for `amp` (with the loss scaler), bf16 for amp_bf16.
    let autocast_kind = match p.precision.as_str() {
        "amp" => Some(tch::Kind::Half),
        "amp_bf16" | "amp_bfloat16" => Some(tch::Kind::BFloat16),
        _ => None,
    };
    // OpenCLIP's get_input_dtype: images in the weights' dtype for bf16 / pure_bf16.
    let input_kind = match p.precision.as_str() {
        "bf16" | "pure_bf16" => tch::Kind::BFloat16,
        _ => tch::Kind::Float,
    };
    let eval_opts = EvalOptions {
        device,
        autocast: autocast_kind,
        input_kind,
        batch_size: p.batch_size as usize,
        workers: p.workers.max(1) as usize,
    };
    let (mean, std) = crate::data::normalization(&p)?;
    let eval_transform = ImageTransform::eval(cfg.vision.image_size.0 as u32, mean, std);
    let run_eval = |epoch: i64,
                    step: i64,
                    log: &mut Log,
                    tensorboard: &mut Option<SummaryWriter>|
     -> Result<()> {
        let mut beat = || ddp::dist(dist.heartbeat(step as u64));
        let mut metrics: Vec<(String, f64)> = Vec::new();
        if let Some(folder) = zeroshot
            .as_ref()
            .filter(|_| zeroshot::due(epoch, p.zeroshot_frequency, p.epochs))
        {
            log.info("Starting zero-shot imagenet.");
            let (top1, top5) =
                zeroshot::evaluate(&model, folder, &eval_transform, &eval_opts, &mut beat)?;
            log.info("Finished zero-shot imagenet.");
            metrics.push(("imagenet-zeroshot-val-top1".into(), top1));
            metrics.push(("imagenet-zeroshot-val-top5".into(), top5));
        }
        if let Some(vd) = val_data
            .as_ref()
            .filter(|_| val::due(epoch, p.val_frequency, p.epochs))
        {
            let mut info = |m: &str| log.info(m);
            metrics.extend(val::evaluate(
                &model, vd, &eval_opts, epoch, &mut info, &mut beat,
            )?);
        }
        if metrics.is_empty() {
            return Ok(());
        }
        log.info(&format!(
            "Eval Epoch: {epoch} {}",
            metrics
                .iter()
                .map(|(k, v)| format!("{k}: {v:.4}"))
                .collect::<Vec<_>>()
                .join("\t")
        ));
        // OpenCLIP's results.jsonl (json.dumps of the metrics) beside the checkpoints.
        let json = |k: &str, v: f64| match k {
            "epoch" | "num_samples" => format!("{}", v as i64),
            _ => repr_float(v),
        };
        let line = format!(
            "{{{}}}\n",
            metrics
                .iter()
                .map(|(k, v)| format!("\"{k}\": {}", json(k, *v)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ckpt_dir.join("results.jsonl"))?;
        std::io::Write::write_all(&mut f, line.as_bytes())?;
        if let Some(tb) = tensorboard.as_mut() {
            let scalars: Vec<(String, f64)> = metrics
                .iter()
                .map(|(k, v)| (format!("val/{k}"), *v))
                .collect();
            let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            tb.add_scalars(epoch, &refs)?;
        }
        Ok(())
    };
    if eval_only {
        // No training data: evaluate the loaded weights once, as OpenCLIP does.
        run_eval(state.epoch, state.step, &mut log, &mut tensorboard)?;
        dist.shutdown()?;
        return Ok(0);
    }

    // Data: the epoch plan (OpenCLIP's arithmetic) fixes the schedule's length.
    let data = TrainData::new(&p, &cfg, world.rank, world.world_size)?;
    for w in &data.warnings {
        log.warn(w);
    }
    // OpenCLIP's `num_batches_per_epoch = dataloader.num_batches // accum_freq`: optimizer steps.
    let accum = p.accum_freq;
    let batches_per_epoch = data.batches_per_epoch / accum;
    let samples_per_epoch = data.samples_per_epoch;
    log.info(&format!(
        "Data: {} ({batches_per_epoch} batches of {} = {samples_per_epoch} samples per epoch)",
        p.train_data.as_deref().unwrap_or("synthetic"),
        p.batch_size
    ));
    let total_steps = batches_per_epoch * p.epochs;
    let cooldown = p.epochs_cooldown.map(|e| {
        (
            batches_per_epoch * e,
            p.lr_cooldown_power,
            p.lr_cooldown_end,
        )
    });
    let schedule = LrSchedule::new(
        &p.lr_scheduler,
        p.lr.unwrap_or(5e-4),
        p.warmup,
        total_steps,
        cooldown,
    )?;

    // Every rank must start from the same weights (seeded init, or the same checkpoint).
    if world.world_size > 1 {
        let sum = ddp::weights_checksum(model.named_parameters());
        ddp::check_same_everywhere(comm, device, sum, "the initial weights' checksum")?;
        log.info(&format!(
            "Initial weights identical on all {} ranks (crc32 {sum:08x})",
            world.world_size
        ));
    }
    let gather = DistGather(comm);
    let preempted = preemption_flag()?;
    let step_opts = StepOptions {
        autocast: autocast_kind.map(|k| (device, k)),
        loss_scale: 1.0,
        train: true,
        layout: LossLayout {
            local_loss: p.local_loss,
            gather_with_grad: p.gather_with_grad,
        },
    };
    let flops_per_sample = clip_model::flops::train_flops(&cfg, p.grad_checkpointing);
    let peak = peak_flops(device, p.precision != "fp32");
    let sample_digits = ((samples_per_epoch + 1) as f64).log10().ceil() as usize;
    // Rank 0 writes, with every rank's data position; everyone waits until the file is complete.
    let save = |state: &TrainState, file: &str, opt: &AdamW| -> Result<PathBuf> {
        let path = ckpt_dir.join(file);
        let mut state = state.clone();
        state.optimizer_step = (opt.step != state.step).then_some(opt.step);
        if world.world_size > 1 {
            let all = ddp::all_gather_strings(comm, device, &state.data_position.to_string())?;
            let all = all
                .iter()
                .map(|s| serde_json::from_str(s))
                .collect::<Result<Vec<serde_json::Value>, _>>()?;
            state.data_position = serde_json::json!({ "ranks": all });
        }
        if master {
            checkpoint::save(
                &path,
                model.named_parameters(),
                &opt.state_tensors(),
                &state,
            )?;
        }
        ddp::dist(comm.barrier().context("barrier after saving a checkpoint"))?;
        Ok(path)
    };

    while state.epoch < p.epochs {
        let epoch = state.epoch;
        log.info(&format!("Start epoch {epoch}"));
        let mut batches = data.epoch(epoch, state.step_in_epoch * accum, &state.data_position)?;
        let (mut loss_sum, mut loss_n) = (0.0, 0i64);
        let (mut data_t, mut batch_t, mut window) = (0.0f64, 0.0f64, 0i64);
        let mut end = Instant::now();
        while state.epoch == epoch {
            // OpenCLIP's step: batches_per_epoch * epoch + i (equal to the optimizer steps taken
            // unless an earlier epoch's shards ran out before its plan).
            let lr = schedule.lr(batches_per_epoch * epoch + state.step_in_epoch);
            let mut micro = Vec::with_capacity(accum as usize);
            while micro.len() < accum as usize {
                match batches.next_batch() {
                    Some(Ok((images, tokens))) => micro.push((
                        images.to_device(device).to_kind(input_kind),
                        tokens.to_device(device),
                    )),
                    Some(Err(e)) => {
                        log.line("ERROR", &format!("training data: {e:#}"));
                        return Err(e.context(format!("training data, epoch {epoch}")));
                    }
                    None => break,
                }
            }
            // Every rank must take the same number of steps: when any rank's shards run out, the
            // epoch ends on all of them (OpenCLIP's DDP would hang instead).
            let ran_out = ddp::any(comm, device, micro.len() < accum as usize)?;
            if ran_out {
                // Non-resampled shards ran out before the plan: the epoch ends here (a partial
                // accumulation is dropped), as OpenCLIP's does.
                log.warn(&format!(
                    "epoch {epoch} ended after {} of {batches_per_epoch} batches: the shards ran out (--train-num-samples larger than the data?)",
                    state.step_in_epoch
                ));
                state.epoch += 1;
                state.step_in_epoch = 0;
                state.data_position = data.epoch_start(state.epoch);
                break;
            }
            data_t += end.elapsed().as_secs_f64();
            opt.zero_grad();
            // Drop-path masks from a generator seeded by (seed, step, rank, micro-batch): a
            // resumed run draws the same ones without saving RNG state.
            let base = p.seed.wrapping_mul(1_000_003).wrapping_add(state.step);
            let stream = world.rank as i64 * accum;
            let seed_of =
                |j: usize| base.wrapping_add((stream + j as i64).wrapping_mul(1_000_000_007));
            let opts = StepOptions {
                loss_scale: state.scaler.map_or(1.0, |s| s.scale),
                ..step_opts
            };
            let loss = forward_backward(&model, &micro, &gather, &opts, &seed_of)?;
            buckets.all_reduce_mean(comm)?;
            // The loss scaler (amp): unscale before clipping; a step with inf/NaN gradients is
            // skipped (every rank sees the same averaged gradients, so all skip together).
            let finite = state.scaler.is_none_or(|s| s.unscale(&opt.params));
            if let Some(max) = p.grad_clip_norm {
                clip_grad_norm(&opt.params, max);
            }
            if finite {
                opt.step(lr);
            }
            if let Some(s) = state.scaler.as_mut() {
                s.update(!finite);
            }
            model.clamp_logit_scale();
            state.step += 1;
            state.step_in_epoch += 1;
            state.data_position = batches.position();
            let loss_v = loss.double_value(&[]);
            if !loss_v.is_finite() {
                bail!("loss is {loss_v} at step {}: stopping", state.step);
            }
            ddp::dist(dist.heartbeat(state.step as u64))?;
            let step_samples = p.batch_size * accum * world.world_size as i64;
            let step_t = end.elapsed().as_secs_f64();
            batch_t += step_t;
            window += 1;
            end = Instant::now();

            let count = state.step_in_epoch;
            log.progress().update(
                epoch,
                count,
                batches_per_epoch,
                loss_v,
                step_samples as f64 / step_t,
            );
            if (count - 1) % p.log_every_n_steps.max(1) == 0 || count == batches_per_epoch {
                let (bt, dt) = (batch_t / window as f64, data_t / window as f64);
                let sps = step_samples as f64 / bt;
                let per_gpu = sps / world.world_size as f64;
                // The loss of the whole global batch: the mean over ranks of their local losses.
                let loss_v = if world.world_size > 1 {
                    let mut l = loss.to_kind(tch::Kind::Float).reshape([1]);
                    ddp::dist(comm.all_reduce(&mut l, ReduceOp::Mean))?;
                    l.double_value(&[0])
                } else {
                    loss_v
                };
                let scale = model.logit_scale.exp().double_value(&[]);
                // OpenCLIP's AverageMeter: updated at log steps only (weighted by the batch).
                loss_sum += loss_v * step_samples as f64;
                loss_n += step_samples;
                let avg = loss_sum / loss_n as f64;
                let mfu = peak
                    .map(|peak| format!(" MFU: {:.1}%", 100.0 * sps * flops_per_sample / peak))
                    .unwrap_or_default();
                log.info(&format!(
                    "Train Epoch: {epoch} [{:>sample_digits$}/{samples_per_epoch} ({:.0}%)] Data (t): {dt:.3} Batch (t): {bt:.3}, {}/s, {}/s/gpu LR: {lr:5.6} Logit Scale: {scale:.3} Contrastive_loss: {} ({}) Loss: {} ({}) Data wait: {:.0}%{mfu}",
                    count * step_samples,
                    100.0 * count as f64 / batches_per_epoch as f64,
                    alt_g(sps, 6), alt_g(per_gpu, 6),
                    alt_g(loss_v, 5), alt_g(avg, 5), alt_g(loss_v, 5), alt_g(avg, 5),
                    100.0 * dt / bt.max(1e-12),
                ));
                if let Some(tb) = tensorboard.as_mut() {
                    // OpenCLIP's scalars (window values, not averages) at its step index.
                    tb.add_scalars(
                        state.step - 1,
                        &[
                            ("train/data_time", dt),
                            ("train/batch_time", bt),
                            ("train/samples_per_second", sps),
                            ("train/samples_per_second_per_gpu", per_gpu),
                            ("train/scale", scale),
                            ("train/lr", lr),
                            ("train/contrastive_loss", loss_v),
                            ("train/loss", loss_v),
                        ],
                    )?;
                }
                (data_t, batch_t, window) = (0.0, 0.0, 0);
            }
            if state.step_in_epoch == batches_per_epoch {
                state.epoch += 1;
                state.step_in_epoch = 0;
                state.data_position = data.epoch_start(state.epoch);
            }
            let every = p.save_every_n_steps.is_some_and(|n| state.step % n == 0);
            // A signal may reach the ranks at different steps: stop when any rank got one.
            let stop = ddp::any(comm, device, preempted.load(Ordering::SeqCst))?;
            if every || stop {
                let path = save(&state, &format!("step_{}.safetensors", state.step), &opt)?;
                log.info(&format!("Saved checkpoint {}", path.display()));
            }
            if stop {
                log.warn(&format!(
                    "Preemption signal: checkpointed step {} and stopping (exit {EXIT_PREEMPTED})",
                    state.step
                ));
                dist.shutdown()?;
                return Ok(EXIT_PREEMPTED);
            }
        }
        drop(batches);
        let completed = state.epoch;
        if completed == p.epochs || (p.save_frequency > 0 && completed % p.save_frequency == 0) {
            let path = save(&state, &format!("epoch_{completed}.safetensors"), &opt)?;
            log.info(&format!("Saved checkpoint {}", path.display()));
            if master && p.delete_previous_checkpoint {
                let _ = std::fs::remove_file(
                    ckpt_dir.join(format!("epoch_{}.safetensors", completed - 1)),
                );
            }
        }
        if p.save_most_recent {
            save(&state, "epoch_latest.safetensors", &opt)?;
        }
        run_eval(completed, state.step, &mut log, &mut tensorboard)?;
    }
    log.info("Training finished.");
    dist.shutdown()?;
    Ok(0)
}
