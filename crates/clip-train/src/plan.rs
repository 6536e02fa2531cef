//! The command line validated once into a [`Plan`] that the trainer only executes (ripgrep's
//! low-level → high-level args). [`validate`] makes every check that can refuse a run and builds
//! everything expensive to find out (the model config, the training data's epoch plan, the
//! ImageNet folder scan, the val loader, the learning-rate schedule); an error here is a usage
//! error (exit 2) and nothing has been written. Past it, the run only fails on things no check
//! could see (a rank dying, a corrupt shard, a full disk).
//!
//! Every flag passes through the exhaustive destructure in [`validate`]: a flag added to
//! [`Params`] does not compile until it is either used here or refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use clip_data::transform::ImageTransform;
use clip_dist::{Backend, InitOptions, WorldInfo};
use clip_model::{ClipConfig, VisionTower};
use tch::{Device, Kind};

use crate::data::{SavedLayout, TrainData};
use crate::device::parse_device;
use crate::loss::LossLayout;
use crate::optim_spec::{Algo, OptimSpec};
use crate::optimizer::AdamWConfig;
use crate::param_groups::{DevRules, Rules};
use crate::params::Params;
use crate::precision::Precision;
use crate::scheduler::LrSchedule;
use crate::siglip::SigLipDist;
use crate::step::LossKind;
use crate::val::ValData;
use crate::wandb::WandbPlan;
use crate::zeroshot::{EvalOptions, ImageFolder};

/// A refusal of the command line: the launcher exits 2, as argparse does.
#[derive(Debug)]
pub struct Usage(pub anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Usage {}

/// Where to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    Fresh,
    /// The newest checkpoint of the run that verifies (rank 0 picks), or fresh if none.
    Latest,
    File(PathBuf),
}

/// The model as the run builds it.
pub struct ModelPlan {
    pub cfg: ClipConfig,
    pub pretrained: Option<PathBuf>,
    /// `--pretrained-image` without `--pretrained`: timm's trunk weights, found in the local
    /// Hugging Face cache (with `--pretrained`, OpenCLIP loads only the CLIP weights).
    pub pretrained_image: Option<PathBuf>,
    pub grad_checkpointing: bool,
    /// `--lock-image`, with the number of last groups left trainable
    /// (`--lock-image-unlocked-groups`).
    pub lock_image: Option<usize>,
    /// `--lock-text`, with the number of last layers left trainable.
    pub lock_text: Option<usize>,
}

/// The training half of a run (absent for an evaluation-only run).
pub struct TrainPlan {
    /// This rank's data, its epoch plan fixed (shared: an epoch's batches borrow it while the
    /// trainer steps).
    pub data: Arc<TrainData>,
    /// Micro-batches per optimizer step (`--accum-freq`).
    pub accum_freq: i64,
    /// Optimizer steps per epoch: OpenCLIP's `num_batches // accum_freq`.
    pub steps_per_epoch: i64,
    pub epochs: i64,
    pub schedule: LrSchedule,
    /// `--opt` and its settings, and how parameters are grouped.
    pub optimizer: OptimizerPlan,
    pub grad_clip_norm: Option<f64>,
    /// The dtype gradients are averaged in (`--grad-reduce-dtype`).
    pub grad_reduce: Kind,
    /// Gradient buckets: overlapped with the backward or not, their size (environment).
    pub ddp_buckets: crate::ddp::BucketOptions,
    /// Skipped steps in a row that stop the run (`CLIP_TRAIN_MAX_SKIPPED`).
    pub max_skipped: i64,
    /// ClipLoss in its layout, or `--siglip`'s SigLipLoss.
    pub loss: LossKind,
    pub log_every_n_steps: i64,
    /// `--profile-steps A:B`: the global steps (from 1, inclusive) libtorch's profiler records.
    pub profile_steps: Option<(i64, i64)>,
    /// `CLIP_TRAIN_TIME_STEPS=W:N`: the steps timed for benchmarks (`timing.rs`).
    pub timed_steps: Option<crate::timing::StepWindow>,
    pub saves: SavePlan,
    /// The log's `Data:` line: the source and its epoch plan.
    pub summary: String,
    /// `--fsdp`: sharded parameters, gradients and optimizer state (None: DDP).
    pub fsdp: Option<crate::fsdp::FsdpPlan>,
}

/// The optimizer a run builds (see [`crate::optim_spec`] and [`crate::param_groups`]).
#[derive(Debug, Clone)]
pub struct OptimizerPlan {
    pub spec: OptimSpec,
    pub rules: Rules,
}

impl OptimizerPlan {
    /// The settings of `--opt adamw` with OpenCLIP 3.3.0's two groups (what `--fsdp` steps on
    /// its shards); None for any other optimizer or grouping.
    pub fn adamw(&self) -> Option<AdamWConfig> {
        match (&self.spec.algo, &self.rules) {
            (Algo::AdamW { betas, eps }, Rules::Main) if self.spec.name == "adamw" => {
                Some(AdamWConfig {
                    beta1: betas.0,
                    beta2: betas.1,
                    eps: *eps,
                    weight_decay: self.spec.weight_decay,
                })
            }
            _ => None,
        }
    }
}

/// When checkpoints are written.
pub struct SavePlan {
    /// Every N epochs (0: only the last).
    pub frequency: i64,
    pub every_n_steps: Option<i64>,
    pub most_recent: bool,
    pub delete_previous: bool,
}

/// What is evaluated after which epochs (and alone, without training data).
pub struct EvalPlan {
    pub zeroshot: Option<ImageFolder>,
    pub zeroshot_frequency: i64,
    pub val: Option<ValData>,
    pub val_frequency: i64,
    pub options: EvalOptions,
    pub transform: ImageTransform,
}

/// Where rank 0 reports besides `out.log` (`--report-to`).
pub struct Reporting {
    pub tensorboard: bool,
    pub wandb: Option<WandbPlan>,
}

/// A validated run: what [`crate::trainer::run`] executes.
pub struct Plan {
    /// The parsed flags, for `params.txt`.
    pub params: Params,
    pub world: WorldInfo,
    pub device: Device,
    pub dist: InitOptions,
    pub precision: Precision,
    /// `--seed`: the model's initialisation and every random draw of the run derive from it.
    pub seed: i64,
    /// `--name`, or OpenCLIP's default from this rank's clock (rank 0's wins at start).
    pub name: String,
    pub logs: PathBuf,
    pub report: Reporting,
    /// `--remote-sync`: where rank 0 mirrors the run directory, and how often.
    pub remote_sync: Option<RemoteSyncPlan>,
    pub resume: Resume,
    pub model: ModelPlan,
    pub train: Option<TrainPlan>,
    pub eval: EvalPlan,
}

/// `--remote-sync URL` with its frequency (`--remote-sync-protocol s3`; fsspec is refused).
#[derive(Debug, Clone)]
pub struct RemoteSyncPlan {
    /// `s3://bucket[/prefix]`: the run goes to `URL/{name}/`.
    pub url: String,
    pub every: std::time::Duration,
}

/// Every check that can refuse the command line, in one pass; builds the [`Plan`].
pub fn validate(p: Params) -> Result<Plan, Usage> {
    plan(p).map_err(Usage)
}

fn plan(p: Params) -> Result<Plan> {
    refuse_unsupported(&p)?;
    check_numbers(&p)?;
    if p.batch_size < 1 || p.epochs < 1 || p.workers < 0 || p.warmup < 0 {
        bail!("--batch-size and --epochs must be at least 1, --workers and --warmup at least 0");
    }
    let world = WorldInfo::from_env()?;
    let precision = Precision::parse(&p.precision)?;
    let (device, backend) = dist_backend(&p, &world)?;
    let dist = InitOptions::from_env(&world, p.dist_url.as_deref(), backend)?;
    let cfg = siglip_model(&p, model_config(&p)?);
    refuse_lp_linear_projection(&p, &cfg, precision)?;
    // A Hugging Face tokenizer's files are there, before anything is written (each part that
    // tokenizes builds its own from `cfg`).
    if cfg.text.hf_tokenizer_name.is_some() {
        crate::tokenizer::for_model(&cfg, &p.model)?;
    }
    let loss = loss_kind(&p)?;
    let eval = eval_plan(&p, &cfg, device, precision)?;
    let eval_only = p.train_data.is_none()
        && p.dataset_type != "synthetic"
        && (eval.zeroshot.is_some() || eval.val.is_some());
    let resume = match p.resume.as_deref() {
        None => Resume::Fresh,
        Some("latest") => Resume::Latest,
        Some(path) if Path::new(path).is_file() => Resume::File(path.into()),
        Some(path) => bail!("--resume {path}: no such checkpoint"),
    };
    let layout = saved_layout(&p, &resume, &world)?;
    let fsdp = crate::fsdp::FsdpPlan::from_params(&p, &world, precision)?;
    let train = if eval_only {
        if fsdp.is_some() {
            bail!("--fsdp shards training, and this run only evaluates (no --train-data)");
        }
        None
    } else {
        let plan = train_plan(&p, &cfg, &world, loss, layout)?;
        if fsdp.is_some() && plan.optimizer.adamw().is_none() {
            let o = &plan.optimizer;
            let groups = match o.rules {
                Rules::Dev(_) => ", the development branch's parameter groups",
                _ => "",
            };
            bail!("not supported yet: --fsdp with --opt {}{groups} (--fsdp shards the state of --opt adamw with OpenCLIP 3.3.0's two groups)", o.spec.name);
        }
        Some(TrainPlan { fsdp, ..plan })
    };
    if let Some(t) = &train {
        check_resumed_optimizer(&p, &resume, &t.optimizer.spec.name)?;
    }
    let pretrained = match p.pretrained.as_str() {
        "" => None,
        path if Path::new(path).is_file() => Some(PathBuf::from(path)),
        path => bail!("--pretrained {path}: no such file"),
    };
    let name = p
        .name
        .clone()
        .unwrap_or_else(|| crate::rundir::default_name(&p));
    let logs = PathBuf::from(&p.logs);
    if logs.join(&name).join("out.log").exists() && resume == Resume::Fresh {
        bail!("experiment {} already exists: use --name to start a new one or --resume to continue it", logs.join(&name).display());
    }
    let lock_text = match p.lock_text_unlocked_layers {
        n if n < 0 => bail!("--lock-text-unlocked-layers must be at least 0"),
        n => p.lock_text.then_some(n as usize),
    };
    let pretrained_image = match (p.pretrained_image, &pretrained, &cfg.vision.tower) {
        (true, None, VisionTower::Timm(t)) => Some(crate::pretrained_image::locate(
            &t.timm_model_name,
            &|k| std::env::var(k).ok(),
        )?),
        // Refused rather than ignored: OpenCLIP's own ViT tower has no timm weights to load.
        (true, None, VisionTower::Vit(_)) => bail!(
            "--pretrained-image: model {} has OpenCLIP's ViT image tower, which has no timm pretrained weights",
            p.model
        ),
        _ => None,
    };
    let lock_image = match p.lock_image_unlocked_groups {
        n if n < 0 => bail!("--lock-image-unlocked-groups must be at least 0"),
        n => p.lock_image.then_some(n as usize),
    };
    let model = ModelPlan {
        cfg,
        pretrained,
        pretrained_image,
        grad_checkpointing: p.grad_checkpointing,
        lock_image,
        lock_text,
    };
    Ok(Plan {
        report: reporting(&p)?,
        remote_sync: remote_sync_plan(&p)?,
        world,
        device,
        dist,
        precision,
        seed: p.seed,
        name,
        logs,
        resume,
        model,
        train,
        eval,
        params: p,
    })
}

/// `--remote-sync`: an `s3://` URL, natively; fsspec (OpenCLIP's slow generic path) is refused.
fn remote_sync_plan(p: &Params) -> Result<Option<RemoteSyncPlan>> {
    let Some(url) = &p.remote_sync else {
        return Ok(None);
    };
    if p.remote_sync_protocol != "s3" {
        bail!(
            "not supported: --remote-sync-protocol {} (clip-train syncs to s3:// natively: use s3)",
            p.remote_sync_protocol
        );
    }
    if p.remote_sync_frequency < 1 {
        bail!(
            "--remote-sync-frequency must be at least 1 second, found {}",
            p.remote_sync_frequency
        );
    }
    crate::remote_sync::Remote::check_url(url)?;
    Ok(Some(RemoteSyncPlan {
        url: url.clone(),
        every: std::time::Duration::from_secs(p.remote_sync_frequency as u64),
    }))
}

/// `--report-to`; with wandb, the Python that runs it must import it ([`WandbPlan::new`]).
fn reporting(p: &Params) -> Result<Reporting> {
    let (tensorboard, wandb) = report_to(&p.report_to)?;
    if wandb && p.debug {
        bail!("not supported yet: --debug with --report-to wandb (OpenCLIP's wandb.watch of the model's gradients)");
    }
    Ok(Reporting {
        tensorboard,
        wandb: wandb.then(|| WandbPlan::new(p)).transpose()?,
    })
}

/// (tensorboard, wandb) from `--report-to`: a comma-separated list of `tensorboard`, `wandb` and
/// `all` (both), as OpenCLIP reads it; anything else is refused rather than ignored.
fn report_to(value: &str) -> Result<(bool, bool)> {
    let (mut tensorboard, mut wandb) = (false, false);
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "tensorboard" => tensorboard = true,
            "wandb" => wandb = true,
            "all" => (tensorboard, wandb) = (true, true),
            other => {
                bail!("--report-to {other}: expected tensorboard, wandb or all (comma-separated)")
            }
        }
    }
    Ok((tensorboard, wandb))
}

/// Refuses the flags whose non-default values clip-train does not implement, and names every
/// flag it accepts: the destructure is exhaustive, so a new flag in [`Params`] must be sorted
/// into one list or the other before the crate compiles.
fn refuse_unsupported(p: &Params) -> Result<()> {
    #[rustfmt::skip]
    let Params {
        // Implemented: read by the plan or the parts it builds.
        train_data: _, train_data_upsampling_factors: _, val_data: _, train_num_samples: _,
        val_num_samples: _, dataset_type: _, dataset_resampled: _, csv_separator: _,
        csv_img_key: _, csv_caption_key: _, imagenet_val: _, logs: _, name: _, workers: _,
        batch_size: _, epochs: _, epochs_cooldown: _, lr: _, beta1: _, beta2: _, eps: _, wd: _,
        warmup: _, lr_scheduler: _, lr_cooldown_end: _, lr_cooldown_power: _,
        save_frequency: _, save_most_recent: _, zeroshot_frequency: _, val_frequency: _,
        resume: _, precision: _, model: _, pretrained: _, lock_image: _, image_mean: _,
        image_std: _, aug_cfg: _, grad_checkpointing: _, local_loss: _, gather_with_grad: _,
        accum_freq: _, device: _, dist_url: _, dist_backend: _, report_to: _, seed: _,
        no_set_device_rank: _, grad_reduce_dtype: _, grad_clip_norm: _, lock_text: _,
        lock_text_unlocked_layers: _, log_every_n_steps: _, delete_previous_checkpoint: _,
        save_every_n_steps: _, profile_steps: _, print_params: _, remote_sync: _, remote_sync_frequency: _,
        remote_sync_protocol: _, siglip: _, loss_dist_impl: _, image_interpolation: _,
        image_resize_mode: _, pretrained_image: _, lock_image_unlocked_groups: _,
        force_context_length: _, force_image_size: _, force_quick_gelu: _, force_patch_dropout: _,
        force_custom_text: _,
        momentum: _, opt: _, opt_kwargs: _, opt_fallback_list: _, text_layer_decay: _,
        image_layer_decay: _, wd_exclude_patterns: _, text_pooler_in_head: _,
        // Read by `fsdp::FsdpPlan::from_params`.
        fsdp: _, fsdp_no_reshard_after_forward: _, fsdp_offload_cpu: _, fsdp_checkpoint: _,
        fsdp_shard_size: _,
        // wandb's project and notes: read by `reporting` (and unused without wandb, as in
        // OpenCLIP).
        wandb_project_name: _, wandb_notes: _,
        // Accepted with nothing to do: ConvNeXt and ViT have no BatchNorm to freeze; OpenCLIP 3.3.0
        // asserts --lock-text-freeze-layer-norm and clip-train locks the LayerNorms anyway;
        // there is no DDP graph to make static; the CoCa weights only matter for CoCa models,
        // which no config builds; --debug only adds OpenCLIP's debug lines.
        lock_image_freeze_bn_stats: _, lock_text_freeze_layer_norm: _, ddp_static_graph: _,
        coca_caption_loss_weight: _, coca_contrastive_loss_weight: _,
        debug: _,
        // Refused below unless left at their defaults.
        imagenet_v2, cache_dir, log_local, use_bn_sync, skip_scheduler,
        torchscript, torchcompile, trace, copy_codebase, horovod,
        distill_model, distill_pretrained, use_bnb_linear,
    } = p;
    // Each entry: the flag, and whether it differs from its default.
    #[rustfmt::skip]
    let given = [
        ("--imagenet-v2", imagenet_v2.is_some()), ("--cache-dir", cache_dir.is_some()),
        ("--log-local", *log_local),
        ("--use-bn-sync", *use_bn_sync), ("--skip-scheduler", *skip_scheduler),
        ("--torchscript", *torchscript),
        ("--torchcompile", *torchcompile), ("--trace", *trace),
        ("--copy-codebase", *copy_codebase), ("--horovod", *horovod),
        ("--distill-model", distill_model.is_some()),
        ("--distill-pretrained", distill_pretrained.is_some()),
        ("--use-bnb-linear", use_bnb_linear.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
        bail!("not supported yet: {flag}");
    }
    Ok(())
}

/// `--model`'s config with the `--force-*` overrides applied as OpenCLIP's `create_model` applies
/// them (to the config, before the model is built), checked by building nothing.
fn model_config(p: &Params) -> Result<ClipConfig> {
    let mut cfg = ClipConfig::load(&p.model)?;
    if p.force_quick_gelu {
        cfg.quick_gelu = true;
        if let Some(section) = cfg.act_kwargs_with_quick_gelu() {
            bail!("--force-quick-gelu with --model {}: its `{section}.act_kwargs` would go to QuickGELU, which takes no arguments (OpenCLIP fails)", p.model);
        }
    }
    if p.force_custom_text {
        cfg.custom_text = true;
    }
    if let Some(n) = p.force_context_length {
        if n < 1 {
            bail!("--force-context-length {n}: must be at least 1");
        }
        cfg.text.context_length = n;
    }
    if let Some(size) = &p.force_image_size {
        cfg.vision.set_image_size(match size.as_slice() {
            [s] if *s > 0 => (*s, *s),
            [h, w] if *h > 0 && *w > 0 => (*h, *w),
            _ => bail!("--force-image-size {size:?}: one or two positive sizes (SIZE or H W)"),
        });
        if let VisionTower::Vit(v) = &cfg.vision.tower {
            if cfg.vision.image_size.0 < v.patch_size || cfg.vision.image_size.1 < v.patch_size {
                bail!(
                    "--force-image-size {size:?}: smaller than one {}-pixel patch of {}",
                    v.patch_size,
                    p.model
                );
            }
        }
    }
    if let Some(rate) = p.force_patch_dropout {
        match &mut cfg.vision.tower {
            _ if !(0.0..1.0).contains(&rate) => {
                bail!("--force-patch-dropout {rate}: must be in [0, 1)")
            }
            VisionTower::Vit(v) => v.patch_dropout = rate,
            VisionTower::Timm(_) => bail!(
                "--force-patch-dropout: model {} has a timm image tower, built without patch dropout",
                p.model
            ),
        }
    }
    Ok(cfg)
}

/// `--precision bf16` builds a ViT model with OpenCLIP's `convert_weights_to_lp`, which in 3.3.0
/// fails on an nn.Linear `text_projection` (it reads the module's `.data`): refused there, as
/// there is no OpenCLIP model to match. A timm-tower model is cast whole and works.
fn refuse_lp_linear_projection(p: &Params, cfg: &ClipConfig, precision: Precision) -> Result<()> {
    let linear = cfg.text.projection && cfg.text.proj_bias;
    if precision == Precision::Bf16 && linear && matches!(cfg.vision.tower, VisionTower::Vit(_)) {
        bail!(
            "--precision bf16 with --model {}: OpenCLIP 3.3.0's convert_weights_to_lp fails on its nn.Linear text_projection (text_cfg.proj_bias); use amp_bf16 or pure_bf16",
            p.model
        );
    }
    Ok(())
}

/// The device (`cuda:{local_rank}` on many ranks unless `--no-set-device-rank`; `cuda:0` when
/// CUDA_VISIBLE_DEVICES lists one device, slurm's one GPU per task; a local rank past several
/// visible devices refused, `clip_dist::several_visible_problem`) and the
/// collectives backend: NCCL on CUDA, the TCP backend on CPU (`--dist-backend gloo` picks it on
/// GPUs too).
fn dist_backend(p: &Params, world: &WorldInfo) -> Result<(Device, Backend)> {
    let device = match parse_device(&p.device)? {
        Device::Cuda(_) if world.world_size > 1 && !p.no_set_device_rank => {
            if let Some(problem) = clip_dist::several_visible_problem_here(world.local_rank) {
                bail!("--device {}: {problem}", p.device);
            }
            let index = clip_dist::local_cuda_device_from_env(world.local_rank);
            parse_device(&format!("cuda:{index}"))?
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

/// `--imagenet-val` and `--val-data`: scanned and checked now, evaluated after epochs.
fn eval_plan(
    p: &Params,
    cfg: &ClipConfig,
    device: Device,
    precision: Precision,
) -> Result<EvalPlan> {
    let (mean, std) = crate::data::normalization(p, &cfg.preprocess)?;
    let (interpolation, resize_mode) = crate::data::image_options(p, &cfg.preprocess)?;
    let (h, w) = cfg.vision.image_size;
    let zeroshot = match &p.imagenet_val {
        Some(_) if h != w => bail!(
            "--imagenet-val: the eval transform is square; model {} has {h}x{w}",
            p.model
        ),
        Some(dir) => Some(ImageFolder::scan(Path::new(dir))?),
        None => None,
    };
    let val = p
        .val_data
        .as_deref()
        .map(|spec| ValData::new(p, cfg, spec))
        .transpose()?;
    Ok(EvalPlan {
        zeroshot,
        zeroshot_frequency: p.zeroshot_frequency,
        val,
        val_frequency: p.val_frequency,
        options: EvalOptions {
            device,
            autocast: precision.autocast(),
            input_kind: precision.input_kind(),
            batch_size: p.batch_size.max(1) as usize,
            workers: p.workers.max(1) as usize,
        },
        transform: ImageTransform::eval(h as u32, mean, std)
            .with_interpolation(interpolation)
            .with_resize_mode(resize_mode),
    })
}

/// The checkpoint a resume will start from (for `latest`, the newest local one) and its header's
/// state; None when there is none or its header does not read (the resume itself reports it, or
/// skips it for `latest`).
fn resumed_state(p: &Params, resume: &Resume) -> Option<(PathBuf, crate::checkpoint::TrainState)> {
    let path = match resume {
        Resume::Fresh => return None,
        Resume::File(path) => path.clone(),
        Resume::Latest => {
            let name = p
                .name
                .clone()
                .unwrap_or_else(|| crate::rundir::default_name(p));
            let dir = Path::new(&p.logs).join(name).join("checkpoints");
            crate::checkpoint::candidates(&dir).into_iter().next()?
        }
    };
    let state = crate::checkpoint::peek_state(&path).ok()?;
    Some((path, state))
}

/// A resume continues the checkpoint's optimizer state, so it must be the same `--opt`.
fn check_resumed_optimizer(p: &Params, resume: &Resume, opt: &str) -> Result<()> {
    let Some((path, state)) = resumed_state(p, resume) else {
        return Ok(());
    };
    let saved = state.optimizer.as_deref().unwrap_or("adamw");
    if saved != opt {
        bail!(
            "--resume {}: its optimizer state is --opt {saved}'s, this run's is --opt {opt} (resume with --opt {saved}, or start from its weights with --pretrained)",
            path.display()
        );
    }
    Ok(())
}

/// The data layout of the checkpoint a resume will start from (for `latest`, the newest local
/// one with a readable header: the header is all this reads), checked against this run: a
/// mid-epoch checkpoint of another number of ranks whose positions cannot be split (an older
/// clip-train's) is refused here, before anything is written.
fn saved_layout(p: &Params, resume: &Resume, world: &WorldInfo) -> Result<Option<SavedLayout>> {
    let Some((path, state)) = resumed_state(p, resume) else {
        return Ok(None);
    };
    let Some(layout) = state.data_position.map(|d| d.layout()) else {
        return Ok(None);
    };
    if layout.mid_epoch && layout.ranks != world.world_size && !layout.splittable {
        bail!(
            "--resume {}: taken mid-epoch by {} ranks by an older clip-train (data positions of sample counts only), resumed by {}: resume it with {} ranks, or from an epoch checkpoint",
            path.display(),
            layout.ranks,
            world.world_size,
            layout.ranks
        );
    }
    Ok(Some(layout))
}

/// The training data (this rank's share), the schedule over its epochs, the optimizer settings.
fn train_plan(
    p: &Params,
    cfg: &ClipConfig,
    world: &WorldInfo,
    loss: LossKind,
    layout: Option<SavedLayout>,
) -> Result<TrainPlan> {
    if matches!(loss, LossKind::Clip(_)) && cfg.init_logit_bias.is_some() {
        // OpenCLIP's ClipLoss fails on the extra `logit_bias` (evaluating such a model is fine).
        bail!(
            "--model {}: its config sets init_logit_bias (a SigLIP model); train it with --siglip",
            p.model
        );
    }
    if p.accum_freq < 1 {
        bail!("--accum-freq must be at least 1");
    }
    if p.save_every_n_steps.is_some_and(|n| n < 1) {
        bail!("--save-every-n-steps must be at least 1");
    }
    let profile_steps = p.profile_steps.as_deref().map(profile_steps).transpose()?;
    let streams = layout.and_then(|l| l.streams);
    let data =
        TrainData::new(p, cfg, world.rank, world.world_size, streams).map_err(
            |e| match streams {
                Some(n) => e.context(format!(
                    "--resume: the checkpoint's data is read as {n} streams per rank"
                )),
                None => e,
            },
        )?;
    if data.batches_per_epoch < p.accum_freq {
        bail!(
            "--accum-freq {} needs at least that many batches per epoch; the data gives {}",
            p.accum_freq,
            data.batches_per_epoch
        );
    }
    let steps_per_epoch = data.batches_per_epoch / p.accum_freq;
    let cooldown = p
        .epochs_cooldown
        .map(|e| (steps_per_epoch * e, p.lr_cooldown_power, p.lr_cooldown_end));
    let (lr, optimizer) = optimizer_plan(p)?;
    let schedule = LrSchedule::new(
        &p.lr_scheduler,
        lr,
        p.warmup,
        steps_per_epoch * p.epochs,
        cooldown,
    )?;
    let summary = format!(
        "Data: {} ({steps_per_epoch} batches of {} = {} samples per epoch)",
        p.train_data.as_deref().unwrap_or("synthetic"),
        p.batch_size,
        data.samples_per_epoch
    );
    crate::fault::check_env()?;
    Ok(TrainPlan {
        summary,
        data: Arc::new(data),
        accum_freq: p.accum_freq,
        steps_per_epoch,
        epochs: p.epochs,
        schedule,
        optimizer,
        grad_clip_norm: p.grad_clip_norm,
        grad_reduce: match p.grad_reduce_dtype.as_str() {
            "fp32" => Kind::Float,
            "bf16" => Kind::BFloat16,
            other => bail!("--grad-reduce-dtype {other}: expected fp32 or bf16"),
        },
        ddp_buckets: crate::ddp::BucketOptions::from_env(&|k| std::env::var(k).ok())?,
        timed_steps: crate::timing::StepWindow::from_env()?,
        max_skipped: crate::nonfinite::max_skipped_from_env(&|k| std::env::var(k).ok())?,
        loss,
        log_every_n_steps: p.log_every_n_steps,
        profile_steps,
        fsdp: None,
        saves: SavePlan {
            frequency: p.save_frequency,
            every_n_steps: p.save_every_n_steps,
            most_recent: p.save_most_recent,
            delete_previous: p.delete_previous_checkpoint,
        },
    })
}

/// `--profile-steps A:B`: two global steps, 1 ≤ A ≤ B.
fn profile_steps(s: &str) -> Result<(i64, i64)> {
    let range = s
        .split_once(':')
        .and_then(|(a, b)| Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?)));
    match range {
        Some((a, b)) if 1 <= a && a <= b => Ok((a, b)),
        _ => bail!("--profile-steps {s:?}: expected A:B, the first and last global step to profile (1 <= A <= B)"),
    }
}

/// `--siglip`'s model, as OpenCLIP's main.py asks the factory for it: `logit_scale` starts at
/// ln 10 and a `logit_bias` parameter at −10 (whatever the config says).
fn siglip_model(p: &Params, mut cfg: ClipConfig) -> ClipConfig {
    if p.siglip {
        cfg.init_logit_scale = 10f64.ln();
        cfg.init_logit_bias = Some(-10.0);
    }
    cfg
}

/// The loss: ClipLoss in `--local-loss` / `--gather-with-grad`'s layout, or SigLipLoss with
/// `--loss-dist-impl`'s communication. Each flag applies to one loss only; given to the other
/// (which OpenCLIP silently ignores) it is refused.
fn loss_kind(p: &Params) -> Result<LossKind> {
    if !p.siglip {
        if p.loss_dist_impl.is_some() {
            bail!("--loss-dist-impl applies to --siglip only");
        }
        return Ok(LossKind::Clip(LossLayout {
            local_loss: p.local_loss,
            gather_with_grad: p.gather_with_grad,
        }));
    }
    if p.local_loss || p.gather_with_grad {
        bail!("--local-loss and --gather-with-grad apply to ClipLoss, not --siglip (its --loss-dist-impl always gives the global batch's gradient)");
    }
    Ok(LossKind::SigLip(SigLipDist::parse(
        p.loss_dist_impl.as_deref(),
    )?))
}

/// The learning rate and the optimizer. A run that uses one of OpenCLIP's development-branch
/// optimizer flags (`--opt nadamw`, `--opt-kwargs`, `--opt-fallback-list`, the layer decays,
/// `--wd-exclude`, `--text-pooler-own-group`) gets that branch's parameter groups; otherwise
/// OpenCLIP 3.3.0's (main.py's for `adamw`, timm's for `timm/…`).
pub fn optimizer_plan(p: &Params) -> Result<(f64, OptimizerPlan)> {
    let spec = crate::optim_spec::parse(p)?;
    let Some(lr) = p.lr else {
        bail!("--lr has no value: parse the flags with params::parse");
    };
    let timm = spec.name.starts_with("timm/");
    // `fallback_list` inside --opt-kwargs is the development branch's older spelling.
    let fallback = match &p.opt_fallback_list {
        Some(list) if !list.is_empty() => list.clone(),
        _ => match p.opt_kwargs.iter().rfind(|(k, _)| k == "fallback_list") {
            Some((_, v)) => fallback_patterns(v)?,
            None => vec![],
        },
    };
    if !fallback.is_empty() && !timm {
        bail!("--opt-fallback-list only applies to Muon-family timm optimizers (e.g. timm/nadamuon), not '{}'", p.opt);
    }
    let dev = spec.name == "nadamw"
        || !p.opt_kwargs.is_empty()
        || p.opt_fallback_list.is_some()
        || p.text_layer_decay.is_some()
        || p.image_layer_decay.is_some()
        || !p.wd_exclude_patterns.is_empty()
        || !p.text_pooler_in_head;
    let rules = match (dev, timm) {
        (true, _) => Rules::Dev(DevRules {
            wd_exclude: p.wd_exclude_patterns.clone(),
            fallback,
            image_layer_decay: p.image_layer_decay,
            text_layer_decay: p.text_layer_decay,
        }),
        (false, true) => Rules::Timm,
        (false, false) => Rules::Main,
    };
    if let Rules::Dev(d) = &rules {
        crate::param_groups::layer_decays(d)?;
    }
    Ok((lr, OptimizerPlan { spec, rules }))
}

/// `--opt-kwargs fallback_list=…`: a pattern or a list of them.
fn fallback_patterns(v: &clip_data::pyliteral::PyLiteral) -> Result<Vec<String>> {
    use clip_data::pyliteral::PyLiteral;
    let items = match v {
        PyLiteral::Str(_) => std::slice::from_ref(v),
        v => v.items().unwrap_or_default(),
    };
    items
        .iter()
        .map(|i| match i {
            PyLiteral::Str(s) => Ok(s.clone()),
            other => bail!("--opt-kwargs fallback_list: patterns are strings, found {other:?}"),
        })
        .collect()
}

/// The range a numeric flag must be in (NaN is in none of them).
#[derive(Clone, Copy)]
enum Range {
    /// A finite number ≥ 0 (torch's AdamW refuses a negative lr, eps or weight decay, its SGD a
    /// negative momentum).
    AtLeastZero,
    /// A finite number > 0.
    Positive,
    /// In [0, 1), as torch's AdamW wants its betas.
    Beta,
}

impl Range {
    fn holds(self, v: f64) -> bool {
        match self {
            Range::AtLeastZero => v.is_finite() && v >= 0.0,
            Range::Positive => v.is_finite() && v > 0.0,
            Range::Beta => (0.0..1.0).contains(&v),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Range::AtLeastZero => "a finite number, at least 0",
            Range::Positive => "a finite number above 0",
            Range::Beta => "in [0, 1)",
        }
    }
}

/// Every numeric flag finite and in the range its use needs — torch's optimizer's for AdamW's
/// settings, the formula's for the rest (a clip norm, the cooldown's power and end, loss weights,
/// counts and frequencies) — so that no flag makes a run train on NaNs (OpenCLIP crashes on most
/// of these values with a traceback, or trains on them). The model-dependent flags
/// (`--force-*`), sizes and data flags are checked where they are read.
fn check_numbers(p: &Params) -> Result<()> {
    #[rustfmt::skip]
    let reals = [
        ("--lr", p.lr, Range::AtLeastZero),
        ("--beta1", p.beta1, Range::Beta),
        ("--beta2", p.beta2, Range::Beta),
        ("--eps", p.eps, Range::AtLeastZero),
        ("--momentum", p.momentum, Range::AtLeastZero),
        ("--wd", Some(p.wd), Range::AtLeastZero),
        ("--grad-clip-norm", p.grad_clip_norm, Range::Positive),
        ("--lr-cooldown-end", Some(p.lr_cooldown_end), Range::AtLeastZero),
        ("--lr-cooldown-power", Some(p.lr_cooldown_power), Range::AtLeastZero),
        ("--coca-caption-loss-weight", Some(p.coca_caption_loss_weight), Range::AtLeastZero),
        ("--coca-contrastive-loss-weight", Some(p.coca_contrastive_loss_weight), Range::AtLeastZero),
    ];
    for (flag, value, range) in reals {
        if let Some(v) = value.filter(|v| !range.holds(*v)) {
            bail!("{flag} {v}: must be {}", range.describe());
        }
    }
    // Counts and frequencies (OpenCLIP divides by --log-every-n-steps; a negative frequency
    // would evaluate or save every epoch in Python's modulo).
    #[rustfmt::skip]
    let counts = [
        ("--log-every-n-steps", Some(p.log_every_n_steps), 1),
        ("--save-frequency", Some(p.save_frequency), 0),
        ("--zeroshot-frequency", Some(p.zeroshot_frequency), 0),
        ("--val-frequency", Some(p.val_frequency), 0),
        ("--epochs-cooldown", p.epochs_cooldown, 0),
        ("--val-num-samples", p.val_num_samples, 1),
    ];
    for (flag, value, least) in counts {
        if let Some(v) = value.filter(|v| *v < least) {
            bail!("{flag} {v}: must be at least {least}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::report_to;

    #[test]
    fn report_to_reads_openclips_lists() {
        assert_eq!(report_to("").unwrap(), (false, false));
        assert_eq!(report_to("tensorboard").unwrap(), (true, false));
        assert_eq!(report_to("wandb").unwrap(), (false, true));
        assert_eq!(report_to("wandb,tensorboard").unwrap(), (true, true));
        assert_eq!(report_to("tensorboard, wandb").unwrap(), (true, true));
        assert_eq!(report_to("all").unwrap(), (true, true));
        let e = report_to("wandb,mlflow").unwrap_err().to_string();
        assert!(e.contains("--report-to mlflow"), "{e}");
    }
}
