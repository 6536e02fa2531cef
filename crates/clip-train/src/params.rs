//! OpenCLIP v3.3.0's command line (`open_clip_train/params.py`), flag for flag: the same names,
//! defaults, choices and value types, so a user's `python -m open_clip_train.main <flags>` line
//! works with `clip-train` in its place. Generated from OpenCLIP's own argparse parser (help
//! texts included) and checked against it by `scripts/compare-flags.py`.
//!
//! Differences, on purpose: `--clip-grad-norm` (the model card's spelling) is an alias of
//! `--grad-clip-norm`; `--save-every-n-steps` and `--profile-steps` are ours; `--opt-kwargs`,
//! `--opt-fallback-list`, `--text-layer-decay`, `--image-layer-decay` (`--visual-layer-decay`),
//! `--wd-exclude` and `--text-pooler-own-group` are OpenCLIP's development branch's (4.2.0.dev0),
//! as it parses them; every error is one line with exit status 2.
//! The `--fsdp` flags come from OpenCLIP's development branch too (same names, help and
//! defaults), `--fsdp-shard-size` is ours.
//! Whether a flag is *implemented* is the trainer's business: it refuses the ones it does not
//! implement with "not supported yet: --X" rather than ignoring them.

use clap::Parser;
use serde::Serialize;

use clip_data::pyliteral::PyLiteral;

#[derive(Parser, Debug, Clone, Serialize)]
#[command(
    name = "clip-train",
    version,
    about = "Train CLIP models: OpenCLIP's training launcher, in Rust on libtorch.",
    allow_negative_numbers = true,
    infer_long_args = true,
    // argparse lets a repeated flag override the earlier value.
    args_override_self = true
)]
pub struct Params {
    /// Path to file(s) with training data. When using webdataset, multiple datasources can be combined using the `::` separator.
    #[arg(long = "train-data")]
    pub train_data: Option<String>,
    /// When using multiple data sources with webdataset and sampling with replacement, this can be used to upsample specific data sources. Similar to --train-data, this should be a string with as many numbers as there are data sources, separated by `::` (e.g. 1::2::0.5) By default, datapoints are sampled uniformly regardless of the dataset sizes.
    #[arg(long = "train-data-upsampling-factors")]
    pub train_data_upsampling_factors: Option<String>,
    /// Path to file(s) with validation data
    #[arg(long = "val-data")]
    pub val_data: Option<String>,
    /// Number of samples in dataset. Required for webdataset if not available in info file.
    #[arg(long = "train-num-samples")]
    pub train_num_samples: Option<i64>,
    /// Number of samples in dataset. Useful for webdataset if not available in info file.
    #[arg(long = "val-num-samples")]
    pub val_num_samples: Option<i64>,
    /// Which type of dataset to process.
    #[arg(long = "dataset-type", default_value = "auto", value_parser = ["webdataset", "csv", "synthetic", "auto"])]
    pub dataset_type: String,
    /// Whether to use sampling with replacement for webdataset shard selection.
    #[arg(long = "dataset-resampled")]
    pub dataset_resampled: bool,
    /// For csv-like datasets, which separator to use.
    #[arg(long = "csv-separator", default_value = "\t")]
    pub csv_separator: String,
    /// For csv-like datasets, the name of the key for the image paths.
    #[arg(long = "csv-img-key", default_value = "filepath")]
    pub csv_img_key: String,
    /// For csv-like datasets, the name of the key for the captions.
    #[arg(long = "csv-caption-key", default_value = "title")]
    pub csv_caption_key: String,
    /// Path to imagenet val set for conducting zero shot evaluation.
    #[arg(long = "imagenet-val")]
    pub imagenet_val: Option<String>,
    /// Path to imagenet v2 for conducting zero shot evaluation.
    #[arg(long = "imagenet-v2")]
    pub imagenet_v2: Option<String>,
    /// Override system default cache path for model & tokenizer file downloads.
    #[arg(long = "cache-dir")]
    pub cache_dir: Option<String>,
    /// Where to store tensorboard logs. Use None to avoid storing logs.
    #[arg(long = "logs", default_value = "./logs/")]
    pub logs: String,
    /// log files on local master, otherwise global master only.
    #[arg(long = "log-local")]
    pub log_local: bool,
    /// Optional identifier for the experiment when storing logs. Otherwise use current time.
    #[arg(long = "name")]
    pub name: Option<String>,
    /// Number of dataloader workers per GPU.
    #[arg(long = "workers", default_value_t = 4)]
    pub workers: i64,
    /// Batch size per GPU.
    #[arg(long = "batch-size", default_value_t = 64)]
    pub batch_size: i64,
    /// Number of epochs to train for.
    #[arg(long = "epochs", default_value_t = 32)]
    pub epochs: i64,
    /// When scheduler w/ cooldown used, perform cooldown from total_epochs - cooldown_epochs onwards.
    #[arg(long = "epochs-cooldown")]
    pub epochs_cooldown: Option<i64>,
    /// Learning rate.
    #[arg(long = "lr")]
    pub lr: Option<f64>,
    /// Adam beta 1.
    #[arg(long = "beta1")]
    pub beta1: Option<f64>,
    /// Adam beta 2.
    #[arg(long = "beta2")]
    pub beta2: Option<f64>,
    /// Adam epsilon.
    #[arg(long = "eps")]
    pub eps: Option<f64>,
    /// Weight decay.
    #[arg(long = "wd", default_value_t = 0.2)]
    pub wd: f64,
    /// Momentum (for timm optimizers).
    #[arg(long = "momentum")]
    pub momentum: Option<f64>,
    /// Number of steps to warmup for.
    #[arg(long = "warmup", default_value_t = 10000)]
    pub warmup: i64,
    /// Which optimizer to use. Choices are ['adamw', or any timm optimizer 'timm/{opt_name}'].
    #[arg(long = "opt", default_value = "adamw")]
    pub opt: String,
    /// (OpenCLIP's development branch) Additional optimizer keyword arguments, `key=value` with a Python-literal value (`fallback_lr_scale=0.5`), applied last.
    #[arg(long = "opt-kwargs", num_args = 0.., action = clap::ArgAction::Set, value_name = "KEY=VALUE", value_parser = parse_kwarg)]
    #[serde(serialize_with = "serialize_kwargs")]
    pub opt_kwargs: Vec<(String, PyLiteral)>,
    /// (OpenCLIP's development branch) Parameter-name glob patterns a Muon-family timm optimizer hands to its AdamW fallback.
    #[arg(long = "opt-fallback-list", num_args = 0.., action = clap::ArgAction::Set, value_name = "PATTERN")]
    pub opt_fallback_list: Option<Vec<String>>,
    /// (OpenCLIP's development branch) Layer-wise LR decay for the text tower: lr * decay**(depth from the head). Off when unset (or 1.0).
    #[arg(long = "text-layer-decay")]
    pub text_layer_decay: Option<f64>,
    /// (OpenCLIP's development branch) Layer-wise LR decay for the image tower; the projection head stays at full LR. Off when unset (or 1.0).
    #[arg(long = "image-layer-decay", visible_alias = "visual-layer-decay")]
    pub image_layer_decay: Option<f64>,
    /// (OpenCLIP's development branch) Extra parameter-name glob patterns (fnmatch on the full name) whose parameters skip weight decay.
    #[arg(long = "wd-exclude", num_args = 0.., action = clap::ArgAction::Set, value_name = "PATTERN")]
    pub wd_exclude_patterns: Vec<String>,
    /// (OpenCLIP's development branch) Give the text readout pooler its own layer-decay / lock group (CLIP's own text tower has no pooler: no effect there).
    #[arg(long = "text-pooler-own-group", action = clap::ArgAction::SetFalse)]
    pub text_pooler_in_head: bool,
    /// Whether to use batch norm sync.
    #[arg(long = "use-bn-sync")]
    pub use_bn_sync: bool,
    /// Use this flag to skip the learning rate decay.
    #[arg(long = "skip-scheduler")]
    pub skip_scheduler: bool,
    /// LR scheduler. One of: 'cosine', 'const' (constant), 'const-cooldown' (constant w/ cooldown). Default: cosine
    #[arg(long = "lr-scheduler", default_value = "cosine")]
    pub lr_scheduler: String,
    /// End learning rate for cooldown schedule. Default: 0
    #[arg(long = "lr-cooldown-end", default_value_t = 0.0)]
    pub lr_cooldown_end: f64,
    /// Power for polynomial cooldown schedule. Default: 1.0 (linear decay)
    #[arg(long = "lr-cooldown-power", default_value_t = 1.0)]
    pub lr_cooldown_power: f64,
    /// How often to save checkpoints.
    #[arg(long = "save-frequency", default_value_t = 1)]
    pub save_frequency: i64,
    /// Always save the most recent model trained to epoch_latest.pt.
    #[arg(long = "save-most-recent")]
    pub save_most_recent: bool,
    /// How often to run zero shot.
    #[arg(long = "zeroshot-frequency", default_value_t = 2)]
    pub zeroshot_frequency: i64,
    /// How often to run evaluation with val data.
    #[arg(long = "val-frequency", default_value_t = 1)]
    pub val_frequency: i64,
    /// path to latest checkpoint (default: none)
    #[arg(long = "resume")]
    pub resume: Option<String>,
    /// Floating point precision.
    #[arg(long = "precision", default_value = "amp", value_parser = ["amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32"])]
    pub precision: String,
    /// Name of the vision backbone to use.
    #[arg(long = "model", default_value = "RN50")]
    pub model: String,
    /// Use a pretrained CLIP model weights with the specified tag or file path.
    #[arg(long = "pretrained", default_value = "")]
    pub pretrained: String,
    /// Load imagenet pretrained weights for image tower backbone if available.
    #[arg(long = "pretrained-image")]
    pub pretrained_image: bool,
    /// Lock full image tower by disabling gradients.
    #[arg(long = "lock-image")]
    pub lock_image: bool,
    /// Leave last n image tower layer groups unlocked.
    #[arg(long = "lock-image-unlocked-groups", default_value_t = 0)]
    pub lock_image_unlocked_groups: i64,
    /// Freeze BatchNorm running stats in image tower for any locked layers.
    #[arg(long = "lock-image-freeze-bn-stats")]
    pub lock_image_freeze_bn_stats: bool,
    /// Override default image mean value of dataset
    #[arg(long = "image-mean", num_args = 1.., action = clap::ArgAction::Set)]
    pub image_mean: Option<Vec<f64>>,
    /// Override default image std deviation of of dataset
    #[arg(long = "image-std", num_args = 1.., action = clap::ArgAction::Set)]
    pub image_std: Option<Vec<f64>>,
    /// Override default image resize interpolation
    #[arg(long = "image-interpolation", value_parser = ["bicubic", "bilinear", "random"])]
    pub image_interpolation: Option<String>,
    /// Override default image resize (& crop) mode during inference
    #[arg(long = "image-resize-mode", value_parser = ["shortest", "longest", "squash"])]
    pub image_resize_mode: Option<String>,
    /// Augmentation settings, `key=value` with a Python-literal value (`scale=(0.5, 1.0)`).
    #[arg(long = "aug-cfg", num_args = 0.., action = clap::ArgAction::Set, value_name = "KEY=VALUE", value_parser = parse_kwarg)]
    #[serde(serialize_with = "serialize_kwargs")]
    pub aug_cfg: Vec<(String, PyLiteral)>,
    /// Enable gradient checkpointing.
    #[arg(long = "grad-checkpointing")]
    pub grad_checkpointing: bool,
    /// calculate loss w/ local features @ global (instead of realizing full global @ global matrix)
    #[arg(long = "local-loss")]
    pub local_loss: bool,
    /// enable full distributed gradient for feature gather
    #[arg(long = "gather-with-grad")]
    pub gather_with_grad: bool,
    /// Override default context length
    #[arg(long = "force-context-length")]
    pub force_context_length: Option<i64>,
    /// Override default image size
    #[arg(long = "force-image-size", num_args = 1.., action = clap::ArgAction::Set)]
    pub force_image_size: Option<Vec<i64>>,
    /// Force use of QuickGELU activation for non-OpenAI transformer models.
    #[arg(long = "force-quick-gelu")]
    pub force_quick_gelu: bool,
    /// Override the patch dropout during training, for fine tuning with no dropout near the end as in the paper
    #[arg(long = "force-patch-dropout")]
    pub force_patch_dropout: Option<f64>,
    /// Force use of CustomTextCLIP model (separate text-tower).
    #[arg(long = "force-custom-text")]
    pub force_custom_text: bool,
    /// torch.jit.script the model, also uses jit version of OpenAI models if pretrained=='openai'
    #[arg(long = "torchscript")]
    pub torchscript: bool,
    /// torch.compile() the model, requires pytorch 2.0 or later.
    #[arg(long = "torchcompile")]
    pub torchcompile: bool,
    /// torch.jit.trace the model for inference / eval only
    #[arg(long = "trace")]
    pub trace: bool,
    /// Update the model every --acum-freq steps.
    #[arg(long = "accum-freq", default_value_t = 1)]
    pub accum_freq: i64,
    /// Accelerator to use.
    #[arg(long = "device", default_value = "cuda")]
    pub device: String,
    /// url used to set up distributed training
    #[arg(long = "dist-url")]
    pub dist_url: Option<String>,
    /// distributed backend. "nccl" for GPU, "hccl" for Ascend NPU
    #[arg(long = "dist-backend")]
    pub dist_backend: Option<String>,
    /// Options are ['wandb', 'tensorboard', 'wandb,tensorboard']
    #[arg(long = "report-to", default_value = "")]
    pub report_to: String,
    /// Notes if logging with wandb
    #[arg(long = "wandb-notes", default_value = "")]
    pub wandb_notes: String,
    /// Name of the project if logging with wandb.
    #[arg(long = "wandb-project-name", default_value = "open-clip")]
    pub wandb_project_name: String,
    /// If true, more information is logged.
    #[arg(long = "debug")]
    pub debug: bool,
    /// If true, we copy the entire base on the log directory, and execute from there.
    #[arg(long = "copy-codebase")]
    pub copy_codebase: bool,
    /// Use horovod for distributed training.
    #[arg(long = "horovod")]
    pub horovod: bool,
    /// Enable static graph optimization for DDP in PyTorch >= 1.11.
    #[arg(long = "ddp-static-graph")]
    pub ddp_static_graph: bool,
    /// Don't set device index from local rank (when CUDA_VISIBLE_DEVICES restricted to one per proc).
    #[arg(long = "no-set-device-rank")]
    pub no_set_device_rank: bool,
    /// (clip-train) The dtype gradients are averaged in across ranks: fp32, or bf16 (half the
    /// bytes on the wire, rounding each gradient to bf16 once).
    #[arg(long = "grad-reduce-dtype", default_value = "fp32", value_parser = ["fp32", "bf16"])]
    pub grad_reduce_dtype: String,
    /// Use FSDP2 (fully_shard) instead of DDP for distributed training.
    #[arg(long = "fsdp")]
    pub fsdp: bool,
    /// Disable resharding parameters after forward pass. Lower communication but higher memory.
    #[arg(long = "fsdp-no-reshard-after-forward")]
    pub fsdp_no_reshard_after_forward: bool,
    /// Offload FSDP parameters to CPU when not in use.
    #[arg(long = "fsdp-offload-cpu")]
    pub fsdp_offload_cpu: bool,
    /// FSDP checkpoint type. 'full' gathers to rank 0 as a single .pt file. 'sharded' uses DCP per-rank shards in a directory (faster, lower memory).
    #[arg(long = "fsdp-checkpoint", default_value = "full", value_parser = ["full", "sharded"])]
    pub fsdp_checkpoint: String,
    /// (clip-train) Hybrid sharding with --fsdp: shard within groups of N consecutive ranks (a
    /// node), replicate across the groups (gradients all-reduced between them). Default: shard
    /// over all ranks.
    #[arg(long = "fsdp-shard-size")]
    pub fsdp_shard_size: Option<i64>,
    /// Default random seed.
    #[arg(long = "seed", default_value_t = 0)]
    pub seed: i64,
    /// Gradient clip.
    #[arg(long = "grad-clip-norm", visible_alias = "clip-grad-norm")]
    pub grad_clip_norm: Option<f64>,
    /// Lock full text tower by disabling gradients.
    #[arg(long = "lock-text")]
    pub lock_text: bool,
    /// Leave last n text tower layer groups unlocked.
    #[arg(long = "lock-text-unlocked-layers", default_value_t = 0)]
    pub lock_text_unlocked_layers: i64,
    /// Freeze LayerNorm running stats in text tower for any locked layers.
    #[arg(long = "lock-text-freeze-layer-norm")]
    pub lock_text_freeze_layer_norm: bool,
    /// Log every n steps to tensorboard/console/wandb.
    #[arg(long = "log-every-n-steps", default_value_t = 100)]
    pub log_every_n_steps: i64,
    /// Weight assigned to caption loss in CoCa.
    #[arg(long = "coca-caption-loss-weight", default_value_t = 2.0)]
    pub coca_caption_loss_weight: f64,
    /// Weight assigned to contrastive loss when training CoCa.
    #[arg(long = "coca-contrastive-loss-weight", default_value_t = 1.0)]
    pub coca_contrastive_loss_weight: f64,
    /// Optinoally sync with a remote path specified by this arg
    #[arg(long = "remote-sync")]
    pub remote_sync: Option<String>,
    /// How frequently to sync to a remote directly if --remote-sync is not None.
    #[arg(long = "remote-sync-frequency", default_value_t = 300)]
    pub remote_sync_frequency: i64,
    /// How to do the remote sync backup if --remote-sync is not None.
    #[arg(long = "remote-sync-protocol", default_value = "s3", value_parser = ["s3", "fsspec"])]
    pub remote_sync_protocol: String,
    /// If true, delete previous checkpoint after storing a new one.
    #[arg(long = "delete-previous-checkpoint")]
    pub delete_previous_checkpoint: bool,
    /// Which model arch to distill from, if any.
    #[arg(long = "distill-model")]
    pub distill_model: Option<String>,
    /// Which pre-trained weights to distill from, if any.
    #[arg(long = "distill-pretrained")]
    pub distill_pretrained: Option<String>,
    /// Replace the network linear layers from the bitsandbytes library. Allows int8 training/inference, etc.
    #[arg(long = "use-bnb-linear")]
    pub use_bnb_linear: Option<String>,
    /// Use SigLip (sigmoid) loss.
    #[arg(long = "siglip")]
    pub siglip: bool,
    /// A string to specify a specific distributed loss implementation.
    #[arg(long = "loss-dist-impl")]
    pub loss_dist_impl: Option<String>,
    /// Also save a checkpoint every N optimizer steps (clip-train's own flag).
    #[arg(long = "save-every-n-steps")]
    pub save_every_n_steps: Option<i64>,
    /// Record global steps A to B (A:B, inclusive, counting from 1) with libtorch's profiler and write a Chrome trace per rank to {logs}/{name}/profile/ (clip-train's own flag).
    #[arg(long = "profile-steps")]
    pub profile_steps: Option<String>,
    /// Print the parsed parameters as JSON and exit (for comparing with OpenCLIP's parser).
    #[arg(long = "print-params", hide = true)]
    #[serde(skip)]
    pub print_params: bool,
}

/// One `--aug-cfg` token: `key=value`, the value a Python literal, else the raw string (as
/// OpenCLIP's ParseKwargs falls back on ValueError).
fn parse_kwarg(token: &str) -> Result<(String, PyLiteral), String> {
    let mut parts = token.split('=');
    let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("{token:?} is not key=value"));
    };
    let value = PyLiteral::parse_or_string(value).map_err(|e| format!("{token:?}: {e}"))?;
    Ok((key.to_owned(), value))
}

fn serialize_kwargs<S: serde::Serializer>(
    kw: &[(String, PyLiteral)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(kw.len()))?;
    for (k, v) in kw {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

/// lr / beta1 / beta2 / eps left unset take the model's defaults (OpenCLIP's
/// `get_default_params`: the CLIP paper's values, ViT or not), except for timm optimizers.
pub fn apply_model_defaults(p: &mut Params) {
    // OpenCLIP leaves them unset for timm optimizers (`'timm' not in args.opt`).
    if p.opt.contains("timm") {
        return;
    }
    let vit = p.model.to_lowercase().contains("vit");
    p.lr.get_or_insert(5.0e-4);
    p.beta1.get_or_insert(0.9);
    p.beta2.get_or_insert(if vit { 0.98 } else { 0.999 });
    p.eps.get_or_insert(if vit { 1.0e-6 } else { 1.0e-8 });
}

/// Parses a command line (program name first) the way OpenCLIP's `parse_args` does.
pub fn parse<I, T>(args: I) -> Result<Params, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut p = Params::try_parse_from(args)?;
    apply_model_defaults(&mut p);
    Ok(p)
}
