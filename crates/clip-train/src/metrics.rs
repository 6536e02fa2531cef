//! Everything the run reports, in one place: OpenCLIP's `Train Epoch:` line with its meters,
//! `Eval Epoch:` lines and `results.jsonl`, TensorBoard scalars and wandb's history
//! ([`MetricsLogger`]); beyond OpenCLIP's, model FLOP utilisation (MFU) where the device's peak is
//! known, and the progress bar drawn on an interactive terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Map, Value};
use tch::Device;

use crate::pyfmt::{alt_g, repr_float};
use crate::rundir::Log;
use crate::tensorboard::SummaryWriter;
use crate::wandb::{WandbPlan, WandbRun};

/// Dense bf16 peaks (FLOP/s; fp16's are the same on these cards) by the marketing name
/// `nvidia-smi` prints; first match wins.
const BF16_PEAKS: &[(&str, f64)] = &[
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12), // SXM / HBM3
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
];

/// The device's peak FLOP/s for this precision, if known: `CLIP_TRAIN_PEAK_TFLOPS` overrides
/// (any device; how a CPU run or an unlisted card gets an MFU); else the 16-bit peak of a listed
/// CUDA card under a 16-bit precision. Unknown → None, and the log line leaves MFU out.
pub fn peak_flops(device: Device, half: bool) -> Option<f64> {
    if let Some(t) = std::env::var("CLIP_TRAIN_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
    {
        return Some(t * 1e12);
    }
    let Device::Cuda(index) = device else {
        return None;
    };
    if !half {
        return None;
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i"])
        .arg(index.to_string())
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout);
    BF16_PEAKS
        .iter()
        .find(|(n, _)| name.contains(n))
        .map(|(_, p)| *p)
}

/// A one-line progress bar on stderr, redrawn after every step when stderr is a terminal;
/// log lines clear it first so the two never interleave.
pub struct Progress {
    enabled: bool,
    drawn: bool,
}

impl Progress {
    /// Enabled when stderr is an interactive terminal.
    pub fn new() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Never draws (ranks other than 0).
    pub fn disabled() -> Self {
        Progress {
            enabled: false,
            drawn: false,
        }
    }

    /// Draws `epoch E [#####.....] n/N loss L X samples/s` (L: the last logged loss).
    pub fn update(&mut self, epoch: i64, done: i64, total: i64, loss: f64, samples_per_s: f64) {
        if !self.enabled {
            return;
        }
        const WIDTH: i64 = 30;
        let filled = (WIDTH * done / total.max(1)).clamp(0, WIDTH) as usize;
        let bar = format!(
            "{}{}",
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled)
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kepoch {epoch} [{bar}] {done}/{total} loss {loss:.4} {samples_per_s:.1} samples/s"
        );
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the bar (before a log line is printed).
    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// One optimizer step as the log line reports it.
pub struct StepReport {
    pub epoch: i64,
    /// Optimizer steps taken in this epoch, this one included.
    pub count: i64,
    pub lr: f64,
    /// Seconds waiting for the input, and for the whole step.
    pub data_secs: f64,
    pub step_secs: f64,
}

/// The figures only a log step computes (they read the device or talk to the other ranks).
pub struct LogStepValues {
    /// The loss of the whole global batch (mean over ranks).
    pub global_loss: f64,
    pub logit_scale: f64,
    /// Optimizer steps skipped so far for inf/NaN gradients (amp's loss scaler's, or a
    /// non-finite gradient norm): the run's steps minus AdamW's own count.
    pub skipped_steps: i64,
}

/// The run's reporting: rank 0 writes `out.log`, TensorBoard, wandb and `results.jsonl`; the
/// other ranks only print their warnings and errors (their [`Log`]).
pub struct MetricsLogger {
    pub log: Log,
    tensorboard: Option<SummaryWriter>,
    /// Dropped after its first error (logged): wandb is a report, not worth stopping training.
    wandb: Option<WandbRun>,
    /// `results.jsonl` beside the checkpoints (rank 0).
    results: Option<PathBuf>,
    /// (flops per sample, the device's peak FLOP/s) when MFU can be reported.
    mfu: Option<(f64, f64)>,
    world_size: i64,
    /// Samples per optimizer step over all ranks.
    step_samples: i64,
    steps_per_epoch: i64,
    samples_per_epoch: i64,
    log_every: i64,
    /// Whether the run trains (an evaluation-only run logs to wandb without a step).
    training: bool,
    meters: Meters,
}

/// OpenCLIP's meters: the loss average (updated at log steps only, weighted by the batch), and
/// the data / batch time averaged over the steps since the last log line.
#[derive(Default)]
struct Meters {
    loss_sum: f64,
    loss_n: i64,
    /// The last logged loss, which the progress bar shows (the loss is read on log steps only).
    last_loss: f64,
    data_secs: f64,
    batch_secs: f64,
    window: i64,
}

/// What the log line needs to know about the run's shape.
pub struct RunShape {
    pub world_size: i64,
    pub step_samples: i64,
    pub steps_per_epoch: i64,
    pub samples_per_epoch: i64,
    pub log_every: i64,
    pub mfu: Option<(f64, f64)>,
    pub training: bool,
}

impl MetricsLogger {
    pub fn new(
        log: Log,
        tensorboard: Option<SummaryWriter>,
        results: Option<PathBuf>,
        shape: RunShape,
    ) -> MetricsLogger {
        MetricsLogger {
            log,
            tensorboard,
            wandb: None,
            results,
            mfu: shape.mfu,
            world_size: shape.world_size,
            step_samples: shape.step_samples,
            steps_per_epoch: shape.steps_per_epoch,
            samples_per_epoch: shape.samples_per_epoch,
            log_every: shape.log_every.max(1),
            training: shape.training,
            meters: Meters::default(),
        }
    }

    /// Starts the wandb run (rank 0): `wandb.init` with `config`, `wandb.save(params_file)`.
    pub fn start_wandb(
        &mut self,
        plan: &WandbPlan,
        name: &str,
        config: Value,
        params_file: &std::path::Path,
    ) -> Result<()> {
        let (run, dir) = WandbRun::start(plan, name, config, params_file)?;
        self.log.info(&format!("wandb run {name} in {dir}"));
        self.wandb = Some(run);
        Ok(())
    }

    /// `wandb.finish(exit_code)` at the run's end (0 done, 75 preempted); a failure is logged.
    pub fn finish_wandb(&mut self, exit_code: i32) {
        if let Some(run) = self.wandb.take() {
            if let Err(e) = run.finish(exit_code) {
                self.log.error(&format!("wandb: {e:#}"));
            }
        }
    }

    /// `wandb.log(data, step=step)`; the first failure is logged and ends wandb logging.
    fn wandb_log(&mut self, data: Map<String, Value>, step: Option<i64>) {
        let Some(run) = self.wandb.as_mut() else {
            return;
        };
        if let Err(e) = run.log(data, step) {
            self.log.error(&format!(
                "wandb: {e:#}; training goes on without wandb (out.log and TensorBoard still log)"
            ));
            self.wandb = None;
        }
    }

    /// Resets the meters (OpenCLIP builds new ones every epoch).
    pub fn start_epoch(&mut self, epoch: i64) {
        self.meters = Meters::default();
        self.log.info(&format!("Start epoch {epoch}"));
    }

    /// Whether step `count` of the epoch writes a log line: the first of every
    /// `--log-every-n-steps` and the epoch's last.
    pub fn is_log_step(&self, count: i64) -> bool {
        (count - 1) % self.log_every == 0 || count == self.steps_per_epoch
    }

    /// Records a step; on a log step (`values` given) writes the `Train Epoch:` line, the
    /// TensorBoard scalars and wandb's `train/…` + `step`, OpenCLIP's, at its step index.
    pub fn step(&mut self, r: &StepReport, values: Option<LogStepValues>) -> Result<()> {
        let m = &mut self.meters;
        m.data_secs += r.data_secs;
        m.batch_secs += r.step_secs;
        m.window += 1;
        let samples = self.step_samples as f64;
        if let Some(v) = &values {
            m.last_loss = v.global_loss;
        }
        let loss = m.last_loss;
        self.log.progress().update(
            r.epoch,
            r.count,
            self.steps_per_epoch,
            loss,
            samples / r.step_secs,
        );
        let Some(v) = values else {
            return Ok(());
        };
        let m = &mut self.meters;
        let (bt, dt) = (
            m.batch_secs / m.window as f64,
            m.data_secs / m.window as f64,
        );
        let sps = samples / bt;
        let per_gpu = sps / self.world_size as f64;
        m.loss_sum += v.global_loss * samples;
        m.loss_n += self.step_samples;
        let avg = m.loss_sum / m.loss_n as f64;
        (m.data_secs, m.batch_secs, m.window) = (0.0, 0.0, 0);
        let mfu = self
            .mfu
            .map(|(flops, peak)| format!(" MFU: {:.1}%", 100.0 * sps * flops / peak))
            .unwrap_or_default();
        let digits = ((self.samples_per_epoch + 1) as f64).log10().ceil() as usize;
        let (loss, lr, scale) = (v.global_loss, r.lr, v.logit_scale);
        self.log.info(&format!(
            "Train Epoch: {} [{:>digits$}/{} ({:.0}%)] Data (t): {dt:.3} Batch (t): {bt:.3}, {}/s, {}/s/gpu LR: {lr:5.6} Logit Scale: {scale:.3} Contrastive_loss: {} ({}) Loss: {} ({}) Data wait: {:.0}% Skipped steps: {}{mfu}",
            r.epoch,
            r.count * self.step_samples,
            self.samples_per_epoch,
            100.0 * r.count as f64 / self.steps_per_epoch as f64,
            alt_g(sps, 6), alt_g(per_gpu, 6),
            alt_g(loss, 5), alt_g(avg, 5), alt_g(loss, 5), alt_g(avg, 5),
            100.0 * dt / bt.max(1e-12),
            v.skipped_steps,
        ));
        // OpenCLIP's scalars (window values, not averages) at its step index: steps_per_epoch *
        // epoch + i, which stays above the previous epoch's eval step (wandb drops a step that
        // goes back) even when an epoch ended early.
        let step = self.steps_per_epoch * r.epoch + r.count - 1;
        let scalars = [
            ("train/data_time", dt),
            ("train/batch_time", bt),
            ("train/samples_per_second", sps),
            ("train/samples_per_second_per_gpu", per_gpu),
            ("train/scale", scale),
            ("train/lr", lr),
            ("train/contrastive_loss", loss),
            ("train/loss", loss),
        ];
        if let Some(tb) = self.tensorboard.as_mut() {
            tb.add_scalars(step, &scalars)?;
        }
        let mut data: Map<String, Value> = scalars
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        // OpenCLIP's "for backwards compatibility".
        data.insert("step".into(), step.into());
        self.wandb_log(data, Some(step));
        Ok(())
    }

    /// An evaluation's metrics: the `Eval Epoch:` line, a `results.jsonl` line (OpenCLIP's
    /// `json.dumps` of them), `val/…` TensorBoard scalars, and wandb's `val/…` + `epoch` at step
    /// steps_per_epoch * epoch (no step without training), as OpenCLIP's `evaluate`. Nothing
    /// when there are none.
    pub fn eval(&mut self, epoch: i64, metrics: &[(String, f64)]) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        self.log.info(&format!(
            "Eval Epoch: {epoch} {}",
            metrics
                .iter()
                .map(|(k, v)| format!("{k}: {v:.4}"))
                .collect::<Vec<_>>()
                .join("\t")
        ));
        if let Some(path) = &self.results {
            let line = format!(
                "{{{}}}\n",
                metrics
                    .iter()
                    .map(|(k, v)| format!("\"{k}\": {}", json_repr(k, *v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            f.write_all(line.as_bytes())?;
        }
        if let Some(tb) = self.tensorboard.as_mut() {
            let scalars: Vec<(String, f64)> = metrics
                .iter()
                .map(|(k, v)| (format!("val/{k}"), *v))
                .collect();
            let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            tb.add_scalars(epoch, &refs)?;
        }
        let mut data: Map<String, Value> = metrics
            .iter()
            .map(|(k, v)| (format!("val/{k}"), json_number(k, *v)))
            .collect();
        data.insert("epoch".into(), epoch.into());
        let step = self.training.then_some(self.steps_per_epoch * epoch);
        self.wandb_log(data, step);
        Ok(())
    }
}

/// An eval metric as OpenCLIP holds it: `epoch` and `num_samples` are ints, the rest floats.
fn is_int_metric(name: &str) -> bool {
    matches!(name, "epoch" | "num_samples")
}

/// The metric as Python's `json.dumps` writes it.
fn json_repr(name: &str, v: f64) -> String {
    if is_int_metric(name) {
        format!("{}", v as i64)
    } else {
        repr_float(v)
    }
}

/// The metric as a JSON value of its Python type.
fn json_number(name: &str, v: f64) -> Value {
    if is_int_metric(name) {
        (v as i64).into()
    } else {
        v.into()
    }
}
