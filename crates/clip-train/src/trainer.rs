//! The trainer: [`Trainer::build`] assembles the parts a [`Plan`] asks for — rendezvous
//! (`clip_dist`), the run directory and [`MetricsLogger`] (rank 0 writes), the model (+
//! `--pretrained`, `--lock-*`, precision), the optimizer (`--opt`) and the gradient buckets, the [`Checkpointer`]
//! (resume, save) and the [`Evaluator`] — then [`Trainer::train`] runs epochs of
//! [`Trainer::train_step`] (the step's forward/backward in [`crate::step`], the gradient average
//! in [`crate::ddp`], clipping, the loss scaler, the optimizer), checkpoints when due or preempted, and
//! evaluates after epochs.
//!
//! Every rank takes the same steps: running out of shards and a preemption signal are agreed
//! over clip-dist's control tree ([`crate::control`]), so all ranks end an epoch or stop at the
//! same step without a device round-trip, each rank exchanging a few host messages whatever the
//! world size. `--profile-steps` records steps with libtorch's profiler, each step's
//! phases as named ranges (`data`, `to_device`, `forward_backward`, `grad_allreduce`,
//! `clip_grad`, `optimizer`; summarised by `clip-tool profile`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clip_dist::{Collectives, Dist, WorldInfo};
use clip_model::{weights, Clip, Tower};
use tch::{nn::VarStore, Device, Tensor};

use crate::checkpoint::TrainState;
use crate::checkpointer::{Checkpointer, Resumed, Write};
use crate::control;
use crate::data::{DataPosition, Epoch, HostMemory, SavedPositions};
use crate::ddp::{self, DistGather, GradBuckets};
use crate::divergence::{Diverged, Divergence};
use crate::evaluator::Evaluator;
use crate::fsdp::{Fsdp, GradSync};
use crate::metrics::{peak_flops, LogStepValues, MetricsLogger, RunShape, StepReport};
use crate::nonfinite::{self, SkippedSteps};
use crate::optim_spec::OptimSpec;
use crate::optimizer::Optimizer;
use crate::param_groups::{ModelLayout, TowerLayers};
use crate::plan::{ModelPlan, Plan, TrainPlan};
use crate::precision::{Precision, Weights};
use crate::prefetch::{self, DeviceBatch};
use crate::remote_sync::{Remote, RemoteSync};
use crate::rundir::{self, Log};
use crate::scaler::{GradScaler, ScalerState};
use crate::step::{forward_backward, StepOptions};
use crate::tensorboard::SummaryWriter;
use crate::timing::StepTimer;
use crate::tool::profile::STEP_PREFIX;
use torch_ext::profiler::{Profiler, Range};

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// A preemption signal: the step was checkpointed and the run stopped (exit 75).
    Preempted,
}

/// Runs a validated plan to its end (or to a preemption checkpoint).
pub fn run(plan: Plan) -> Result<Outcome> {
    let (mut trainer, dist) = Trainer::build(plan)?;
    let outcome = trainer.train(&dist);
    // Even a failed run leaves its last checkpoint complete, not a temp file, and (with
    // --remote-sync) the remote up to date: a preempted node's disk may not come back.
    trainer.checkpoints.wait(&mut trainer.metrics.log);
    // Leave the job only after a clean end: an error above is reported by the caller, and the
    // other ranks' watchdogs name this one.
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            trainer.finish_remote_sync();
            return Err(e);
        }
    };
    // Test hook: this rank dies just before the final barrier, so the tests can check what its
    // peers make of that (exit 70, naming it). Never set outside `tests/`.
    if std::env::var_os("CLIP_TRAIN_TEST_DIE_BEFORE_FINAL_BARRIER").is_some() {
        std::process::abort();
    }
    // The other ranks leave first; rank 0's final sync then holds nobody up.
    let left = dist.shutdown();
    // wandb.finish as OpenCLIP's end (a preempted run says so with its exit status; `--resume
    // latest` continues it). After an error the sink finishes the run as failed on its own.
    trainer.metrics.finish_wandb(match outcome {
        Outcome::Finished => 0,
        Outcome::Preempted => crate::EXIT_PREEMPTED,
    });
    trainer.finish_remote_sync();
    left?;
    Ok(outcome)
}

/// What [`Trainer::train_step`] did.
pub struct StepDone {
    /// This rank's loss, on the device.
    pub loss: Tensor,
    /// The step's learning rate.
    pub lr: f64,
    /// `--precision amp`'s found_inf (on the device, 1 when the loss scaler skipped the update
    /// for inf/NaN gradients): a non-finite loss on such a step is not a divergence.
    pub skipped: Option<Tensor>,
}

/// Test hook, inert unless set: `CLIP_TRAIN_TEST_NAN_AT_STEP=N[:RANK]` fills the images of step
/// N (counting from 1) with NaN, on RANK only when given, so the tests can make a run diverge
/// at a known step (crates/clip-train/tests/it/train_options.rs). Never set outside `tests/`.
fn test_nan_batch(micro: &mut [(Tensor, Tensor)], step: i64, rank: usize) {
    // Read once: this runs every step.
    static HOOK: std::sync::OnceLock<Option<(i64, Option<usize>)>> = std::sync::OnceLock::new();
    let hook = HOOK.get_or_init(|| {
        let hook = std::env::var("CLIP_TRAIN_TEST_NAN_AT_STEP").ok()?;
        let (at, only) = match hook.split_once(':') {
            Some((s, r)) => (s, Some(r.parse::<usize>().expect("a rank"))),
            None => (hook.as_str(), None),
        };
        Some((at.parse::<i64>().expect("a step"), only))
    });
    let Some((at, only)) = *hook else {
        return;
    };
    if at == step && only.is_none_or(|r| r == rank) {
        for (images, _) in micro.iter_mut() {
            let _ = images.fill_(f64::NAN);
        }
    }
}

/// The optimizer side of a run (absent when it only evaluates).
struct Optimization {
    plan: TrainPlan,
    opt: Optimizer,
    /// `--precision amp`'s loss scaler, live on the device (its state is checkpointed through
    /// [`TrainState::scaler`]).
    scaler: Option<GradScaler>,
    /// DDP's gradient buckets, or `--fsdp`'s shards.
    buckets: GradSync,
    step_opts: StepOptions,
    /// Raised by SIGUSR1 / SIGTERM (slurm's warning), polled between steps.
    preempted: Arc<AtomicBool>,
    /// Where the batches go (webdataset's host buffers).
    host: HostMemory,
    /// `CLIP_TRAIN_TIME_STEPS`' clock.
    timer: Option<StepTimer>,
    /// The streak of steps skipped for non-finite gradients, on the device.
    skipped: SkippedSteps,
}

pub struct Trainer {
    world: WorldInfo,
    device: Device,
    precision: Precision,
    seed: i64,
    /// Owns the model's variables.
    vs: VarStore,
    model: Clip,
    metrics: MetricsLogger,
    checkpoints: Checkpointer,
    evaluator: Evaluator,
    optimization: Option<Optimization>,
    state: TrainState,
    /// This rank's data position: the current epoch's start (or the resumed position), taken
    /// afresh from the epoch's batches when a checkpoint is due mid-epoch.
    position: Option<DataPosition>,
    /// `--remote-sync`'s background copy of the run directory (rank 0).
    remote_sync: Option<RemoteSync>,
    /// The first non-finite loss, kept on the device until a check reads it.
    divergence: Divergence,
    /// `--profile-steps`' profiler while it records, and where its trace goes.
    profiler: Option<Profiler>,
    profile_dir: std::path::PathBuf,
}

impl Trainer {
    /// Joins the job and builds every part; restores a checkpoint when `--resume` names one.
    pub fn build(plan: Plan) -> Result<(Trainer, Dist)> {
        let world = plan.world;
        let timeout = plan.dist.timeout;
        let mut dist = clip_dist::init(world, plan.dist.clone())?;
        dist.start_watchdog(timeout)?;
        // The default name carries rank 0's clock (OpenCLIP broadcasts it too).
        let name = ddp::broadcast_string(dist.collectives(), &plan.name)?;
        let run_dir = plan.logs.join(&name);
        let ckpt_dir = run_dir.join("checkpoints");
        let remote = plan
            .remote_sync
            .as_ref()
            .map(|r| Remote::new(&r.url, &name));
        let shape = run_shape(&plan);
        let mut params = plan.params;
        params.name = Some(name.clone());
        // Only rank 0 writes (logs, params.txt, TensorBoard, checkpoints); the others print their
        // warnings and errors to stderr, tagged with their rank.
        let (log, tensorboard) = if world.rank == 0 {
            std::fs::create_dir_all(&ckpt_dir)
                .with_context(|| format!("cannot create {}", ckpt_dir.display()))?;
            rundir::write_params_txt(&run_dir, &params, &world)?;
            let tb = plan
                .report
                .tensorboard
                .then(|| SummaryWriter::new(&run_dir.join("tensorboard")))
                .transpose()?;
            (Log::to_file(&run_dir.join("out.log"))?, tb)
        } else {
            (Log::for_rank(world.rank), None)
        };
        let results = (world.rank == 0).then(|| ckpt_dir.join("results.jsonl"));
        let mut metrics = MetricsLogger::new(log, tensorboard, results, shape);
        if let (0, Some(w)) = (world.rank, &plan.report.wandb) {
            let (train, val) = (plan.train.as_ref(), plan.eval.val.as_ref());
            let config =
                crate::wandb::run_config(&params, &run_dir, &world, &plan.report, train, val)?;
            metrics.start_wandb(w, &name, config, &run_dir.join("params.txt"))?;
        }
        if world.world_size > 1 {
            metrics.log.info(&format!(
                "Distributed: rank {} of {} (local rank {}), device {:?}, {:?}",
                world.rank, world.world_size, world.local_rank, plan.device, plan.dist.backend
            ));
        }
        crate::device::apply_cuda_settings(plan.device)?;
        crate::fsdp::prepare_host_memory(
            plan.train.as_ref().and_then(|t| t.fsdp.as_ref()),
            plan.device,
        );
        tch::manual_seed(plan.seed);
        // Initialised from the CPU generator and then moved: one seed, the same weights on any
        // device (the CUDA generator draws other numbers).
        let mut vs = VarStore::new(Device::Cpu);
        let model = build_model(
            &vs,
            &plan.model,
            plan.precision,
            &params.model,
            &mut metrics.log,
        )?;
        vs.set_device(plan.device);
        if let Some(t) = &plan.train {
            for line in crate::fsdp::state_report(&model, t.fsdp.as_ref(), world.world_size) {
                metrics.log.info(&line);
            }
        }
        let optimization = plan
            .train
            .map(|t| {
                let reduced = plan.dist.runs_backend(world.world_size);
                Optimization::new(t, &model, &world, plan.precision, reduced)
            })
            .transpose()?;
        if let Some(o) = &optimization {
            log_optimizer(&o.plan.optimizer.spec, &o.opt, &mut metrics.log);
        }
        let optimizer = optimization.as_ref().map(|o| o.opt.name.clone());
        let mut trainer = Trainer {
            world,
            device: plan.device,
            precision: plan.precision,
            seed: plan.seed,
            vs,
            model,
            metrics,
            checkpoints: Checkpointer::new(ckpt_dir, world, remote.clone()),
            evaluator: Evaluator::new(plan.eval, params.epochs),
            optimization,
            state: TrainState {
                name,
                epoch: 0,
                step: 0,
                step_in_epoch: 0,
                data_position: None,
                scaler: plan.precision.scales_loss().then(ScalerState::default),
                optimizer_step: None,
                optimizer,
            },
            position: None,
            remote_sync: None,
            divergence: Divergence::new(plan.device),
            profiler: None,
            profile_dir: run_dir.join("profile"),
        };
        let resumed = trainer.checkpoints.resume(
            &plan.resume,
            dist.collectives(),
            &mut trainer.metrics.log,
        )?;
        if let Some(r) = resumed {
            trainer.restore(r)?;
        }
        if let (Some(remote), Some(p), 0) = (remote, &plan.remote_sync, world.rank) {
            let log = &mut trainer.metrics.log;
            trainer.remote_sync = Some(RemoteSync::start(remote, run_dir, p.every, log)?);
        }
        Ok((trainer, dist))
    }

    /// Continues from a checkpoint: weights, optimizer moments, step counters, data position, and
    /// the loss scaler (a checkpoint from another precision starts a new one).
    fn restore(&mut self, r: Resumed) -> Result<()> {
        let path = r.path.display().to_string();
        let state = r.loaded.state;
        let opt_step = state.optimizer_step.unwrap_or(state.step);
        match self.optimization.as_mut() {
            // --fsdp: each rank copies out its own shards (any layout, full or sharded).
            Some(Optimization {
                buckets: GradSync::Fsdp(f),
                opt,
                ..
            }) => f
                .load(&r.loaded.model, &r.loaded.optimizer, opt, opt_step)
                .context(path)?,
            o => {
                weights::load_state_dict(&self.vs, r.loaded.model).context(path.clone())?;
                if let Some(o) = o {
                    o.opt
                        .load_state(&r.loaded.optimizer, opt_step)
                        .context(path)?;
                }
            }
        }
        let scaler = match self.precision.scales_loss() {
            true => state.scaler.or(Some(ScalerState::default())),
            false => None,
        };
        if let Some(o) = self.optimization.as_mut() {
            o.scaler = scaler.map(|s| GradScaler::new(s, self.device));
        }
        self.position = r.position;
        let saved = state.data_position.as_ref().map(SavedPositions::ranks);
        let step_in_epoch = match saved.filter(|s| s.len() != self.world.world_size) {
            Some(saved) if state.step_in_epoch > 0 => self.continue_on_world(saved, &state)?,
            _ => state.step_in_epoch,
        };
        self.state = TrainState {
            name: self.state.name.clone(),
            scaler,
            step_in_epoch,
            optimizer: self.state.optimizer.clone(),
            ..state
        };
        Ok(())
    }

    /// A mid-epoch checkpoint of another world size: the rest of its epoch on this one (see
    /// [`TrainData::continue_on_world`]); the steps of the epoch counted as done.
    fn continue_on_world(&mut self, saved: &[DataPosition], state: &TrainState) -> Result<i64> {
        let Some(o) = self.optimization.as_ref() else {
            return Ok(state.step_in_epoch); // evaluation only: no data to continue
        };
        let c = o.plan.data.continue_on_world(
            saved,
            state.step_in_epoch,
            o.plan.accum_freq,
            state.step,
        )?;
        let log = &mut self.metrics.log;
        log.info(&format!(
            "Resuming on {} ranks a checkpoint of {}: {}",
            self.world.world_size,
            saved.len(),
            c.info
        ));
        if let Some(w) = &c.warning {
            log.warn(w);
        }
        self.position = Some(c.position);
        Ok(c.step_in_epoch)
    }

    /// Every epoch from the current one, or one evaluation when there is no training data.
    pub fn train(&mut self, dist: &Dist) -> Result<Outcome> {
        let Some(epochs) = self.optimization.as_ref().map(|o| o.plan.epochs) else {
            // No training data: evaluate the loaded weights once, as OpenCLIP does.
            self.evaluate(dist)?;
            return Ok(Outcome::Finished);
        };
        let o = self.optimization.as_ref().expect("training run");
        for w in &o.plan.data.warnings {
            self.metrics.log.warn(w);
        }
        self.metrics.log.info(&o.plan.summary);
        let ahead = match prefetch::enabled() {
            true => "one step ahead",
            false => "at each step (CLIP_TRAIN_PREFETCH=0)",
        };
        // webdataset's and CSV's host buffers hold the crossing dtype; synthetic batches are f32
        let buffers = o.plan.data.kind() != crate::data::DataKind::Synthetic;
        let kind = match o.host.image_kind {
            tch::Kind::BFloat16 if buffers => "bf16",
            _ => "fp32",
        };
        self.metrics.log.info(&format!(
            "Input batches: taken {ahead}, images to the device as {kind}"
        ));
        self.check_same_weights(dist.collectives())?;
        while self.state.epoch < epochs {
            if self.train_epoch(dist)? == Outcome::Preempted {
                self.save_profile_if_due(true)?;
                return Ok(Outcome::Preempted);
            }
            self.end_of_epoch(dist.collectives())?;
            self.evaluate(dist)?;
        }
        self.save_profile_if_due(true)?;
        // The last checkpoint is complete before the run reports success.
        self.checkpoints.wait(&mut self.metrics.log);
        self.metrics.log.info("Training finished.");
        Ok(Outcome::Finished)
    }

    /// `--remote-sync`'s final pass (rank 0), waited for.
    fn finish_remote_sync(&mut self) {
        if let Some(sync) = self.remote_sync.take() {
            sync.finish();
        }
    }

    /// Every rank must start from the same weights (seeded init, or the same checkpoint).
    fn check_same_weights(&mut self, comm: &dyn Collectives) -> Result<()> {
        if self.world.world_size == 1 {
            return Ok(());
        }
        // --fsdp: the whole model as every rank built it, before it was sharded.
        let fsdp = self.optimization.as_ref().and_then(|o| o.buckets.fsdp());
        let sum = match fsdp {
            Some(f) => f.initial_checksum,
            None => ddp::weights_checksum(self.model.named_parameters()),
        };
        ddp::check_same_everywhere(comm, self.device, sum, "the initial weights' checksum")?;
        self.metrics.log.info(&format!(
            "Initial weights identical on all {} ranks (crc32 {sum:08x})",
            self.world.world_size
        ));
        Ok(())
    }

    /// The rest of the current epoch, step by step. Ends early (on every rank) when any rank's
    /// shards run out, and with [`Outcome::Preempted`] after a preemption checkpoint.
    ///
    /// A step that does not log reads nothing back from the device: the loss stays there (read
    /// on log steps), its divergence check too ([`Divergence`]), and the ranks agree on stopping
    /// through the store.
    fn train_epoch(&mut self, dist: &Dist) -> Result<Outcome> {
        let comm = dist.collectives();
        let o = self.optimization.as_ref().expect("training run");
        let (accum, steps_per_epoch) = (o.plan.accum_freq, o.plan.steps_per_epoch);
        let epoch = self.state.epoch;
        self.metrics.start_epoch(epoch);
        let start = self.state.step_in_epoch * accum;
        let data = Arc::clone(&o.plan.data);
        let mut batches = data.epoch(epoch, start, self.position.as_ref(), &o.host)?;
        let mut end = Instant::now();
        // The next step's batches, taken (and their copy started) before this step's compute.
        let mut ahead: Option<Result<Vec<DeviceBatch>>> = None;
        while self.state.epoch == epoch {
            self.start_profile_if_due()?;
            let step_range = Range::new(&format!("{STEP_PREFIX}{}", self.state.step + 1));
            let micro = match ahead.take() {
                Some(taken) => taken?,
                None => self.next_micro_batches(&mut batches, accum, epoch)?,
            };
            // Every rank must take the same number of steps: when any rank's shards run out, the
            // epoch ends on all of them (OpenCLIP's DDP would hang instead); a partial
            // accumulation is dropped, as OpenCLIP's loop drops it.
            if control::shards_ran_out(comm, micro.len() < accum as usize)? {
                self.metrics.log.warn(&format!(
                    "epoch {epoch} ended after {} of {steps_per_epoch} batches: the shards ran out (--train-num-samples larger than the data?)",
                    self.state.step_in_epoch
                ));
                self.check_divergence(comm)?;
                self.next_epoch();
                break;
            }
            let data_secs = end.elapsed().as_secs_f64();
            // Step i+1's batches before step i's compute, so that on a GPU their copy overlaps
            // it; never across the epoch's end. They stay out of the data position until
            // trained (a checkpoint after this step resumes with them).
            if prefetch::enabled() && self.state.step_in_epoch + 1 < steps_per_epoch {
                ahead = Some(self.next_micro_batches(&mut batches, accum, epoch));
            }
            let mut inputs: Vec<(Tensor, Tensor)> = micro
                .iter()
                .map(DeviceBatch::inputs)
                .collect::<Result<_>>()?;
            test_nan_batch(&mut inputs, self.state.step + 1, self.world.rank);
            let done = self.train_step(&inputs, comm)?;
            batches.trained(micro.len());
            self.time_step()?;
            // The host buffers go back to the ring: on the CPU nothing reads them any more; on
            // CUDA the ring waits for each one's copy event before it is written again.
            drop((inputs, micro));
            // A signal on any rank stops every rank at this step.
            let o = self.optimization.as_ref().expect("training run");
            let stop = control::after_step(
                dist,
                &mut self.divergence,
                (self.state.step, epoch),
                &done.loss,
                done.skipped.as_ref(),
                o.preempted.load(Ordering::SeqCst),
            )?;
            self.checkpoints.poll(&mut self.metrics.log);
            let log_step = self.metrics.is_log_step(self.state.step_in_epoch);
            if log_step {
                self.check_divergence(comm)?;
            }
            // Without a log step's read the host runs ahead of the device: the times average
            // out over a log window, whose last step waits for the device.
            let step_secs = end.elapsed().as_secs_f64();
            end = Instant::now();
            let report = StepReport {
                epoch,
                count: self.state.step_in_epoch,
                lr: done.lr,
                data_secs,
                step_secs,
            };
            self.report_step(&report, log_step.then_some(&done.loss), comm)?;
            if self.state.step_in_epoch == steps_per_epoch {
                self.next_epoch();
            }
            let outcome = self.save_if_due(comm, stop, &batches)?;
            drop(step_range);
            self.save_profile_if_due(false)?;
            if outcome == Outcome::Preempted {
                return Ok(Outcome::Preempted);
            }
        }
        Ok(Outcome::Finished)
    }

    /// Up to `accum` batches on their way to the device (fewer: this rank's shards ran out),
    /// in the profile's `data` and `to_device` ranges.
    fn next_micro_batches(
        &mut self,
        batches: &mut Epoch,
        accum: i64,
        epoch: i64,
    ) -> Result<Vec<DeviceBatch>> {
        let mut host = Vec::with_capacity(accum as usize);
        let data_range = Range::new("data");
        let waiting = Instant::now();
        while host.len() < accum as usize {
            match batches.next_batch() {
                Some(Ok(batch)) => host.push(batch),
                Some(Err(e)) => {
                    self.metrics.log.error(&format!("training data: {e:#}"));
                    return Err(e.context(format!("training data, epoch {epoch}")));
                }
                None => break,
            }
        }
        drop(data_range);
        if let Some(t) = self.optimization.as_mut().and_then(|o| o.timer.as_mut()) {
            t.waited_for_data(waiting.elapsed().as_secs_f64());
        }
        let _r = Range::new("to_device");
        let (_, image_kind) = prefetch::image_kinds(self.precision);
        host.into_iter()
            .map(|b| prefetch::to_device(b, self.device, image_kind))
            .collect()
    }

    /// `CLIP_TRAIN_TIME_STEPS`: the timed window opens or closes after this step (its line in
    /// the log).
    fn time_step(&mut self) -> Result<()> {
        let o = self.optimization.as_mut().expect("training run");
        let line = match o.timer.as_mut() {
            Some(t) => t.step_done(self.state.step)?,
            None => None,
        };
        if let Some(line) = line {
            self.metrics.log.info(&line);
        }
        Ok(())
    }

    /// Stops the run if a recorded step's loss was not finite on any rank (see [`Divergence`]),
    /// or if `CLIP_TRAIN_MAX_SKIPPED` steps in a row were skipped for non-finite gradients (see
    /// [`SkippedSteps`]: every rank counts the same streak, so all stop at the same check).
    fn check_divergence(&mut self, comm: &dyn Collectives) -> Result<()> {
        if let Some(d) = self.divergence.check(comm)? {
            return Err(self.diverged(d));
        }
        let streak = self.optimization.as_mut().and_then(|o| o.skipped.check());
        match streak {
            None => Ok(()),
            Some(s) => {
                self.checkpoints.wait(&mut self.metrics.log);
                let msg = format!(
                    "{s}: the run diverged, stopping; newest finite checkpoint: {}",
                    self.checkpoints.newest_name()
                );
                self.metrics.log.error(&msg);
                Err(anyhow::anyhow!(msg))
            }
        }
    }

    /// The run's end when the loss stopped being finite: a one-line error naming the step and
    /// the newest checkpoint to go back to (written before the weights went bad), instead of
    /// training on NaNs (big_vision stops the same way).
    fn diverged(&mut self, d: Diverged) -> anyhow::Error {
        self.checkpoints.wait(&mut self.metrics.log);
        let msg = format!(
            "the loss is {} at step {} (epoch {}): the run diverged, stopping; newest good checkpoint: {}",
            d.loss,
            d.step,
            d.epoch,
            self.checkpoints.newest_name()
        );
        self.metrics.log.error(&msg);
        anyhow::anyhow!(msg)
    }

    /// `--profile-steps A:B`: starts libtorch's profiler before global step A.
    fn start_profile_if_due(&mut self) -> Result<()> {
        let o = self.optimization.as_ref().expect("training run");
        if let Some((a, _)) = o.plan.profile_steps {
            if self.profiler.is_none() && self.state.step + 1 == a {
                self.profiler = Some(Profiler::start(self.device)?);
            }
        }
        Ok(())
    }

    /// Writes the profile after global step B (or, `ended`, when the run ends before it):
    /// `{logs}/{name}/profile/rank{R}_steps{A}-{B}.pt.trace.json`.
    fn save_profile_if_due(&mut self, ended: bool) -> Result<()> {
        let o = self.optimization.as_ref().expect("training run");
        let Some((a, b)) = o.plan.profile_steps else {
            return Ok(());
        };
        if !ended && self.state.step < b {
            return Ok(());
        }
        let Some(profiler) = self.profiler.take() else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.profile_dir)
            .with_context(|| format!("cannot create {}", self.profile_dir.display()))?;
        let last = self.state.step.min(b);
        let file = format!("rank{}_steps{a}-{last}.pt.trace.json", self.world.rank);
        let path = self.profile_dir.join(file);
        profiler.save(&path)?;
        self.metrics.log.info(&format!(
            "Profile of steps {a} to {last} written to {}",
            path.display()
        ));
        Ok(())
    }

    /// One optimizer step over `micro`: forward/backward, the gradient average, the loss
    /// scaler's check, clipping, the optimizer, the logit-scale clamp.
    pub fn train_step(
        &mut self,
        micro: &[(Tensor, Tensor)],
        comm: &dyn Collectives,
    ) -> Result<StepDone> {
        let o = self.optimization.as_mut().expect("training run");
        // OpenCLIP's step: steps_per_epoch * epoch + i (equal to the optimizer steps taken
        // unless an earlier epoch's shards ran out before its plan).
        let lr = o
            .plan
            .schedule
            .lr(o.plan.steps_per_epoch * self.state.epoch + self.state.step_in_epoch);
        let fb_range = Range::new("forward_backward");
        if !o.buckets.own_grads() {
            o.opt.zero_grad()?;
        }
        // Drop-path masks from a generator seeded by (seed, step, rank, micro-batch): a resumed
        // run draws the same ones without saving RNG state.
        let base = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.state.step);
        let stream = self.world.rank as i64 * o.plan.accum_freq;
        let seed_of = |j: usize| base.wrapping_add((stream + j as i64).wrapping_mul(1_000_000_007));
        let (scale, rank) = (
            o.scaler.as_ref().map(|s| s.scale().shallow_clone()),
            self.world.rank,
        );
        let opts = StepOptions {
            loss_scale: nonfinite::test_loss_scale(scale, self.state.step + 1, rank, self.device),
            ..o.step_opts
        };
        // The gradient average runs bucket by bucket during the backward (ddp::GradBuckets), so
        // on many ranks it shows inside `forward_backward`; `grad_allreduce` is what is left.
        let loss = o.buckets.reduce_during(comm, |comm| {
            forward_backward(&self.model, micro, &DistGather(comm), &opts, &seed_of)
        })?;
        drop(fb_range);
        let allreduce_range = Range::new("grad_allreduce");
        if let Some(line) = o.buckets.report() {
            self.metrics.log.info(&line);
        }
        drop(allreduce_range);
        // The loss scaler (amp): unscale before clipping. A step with inf/NaN gradients —
        // amp's check, or a gradient norm that is not finite — is skipped (every rank sees the
        // same averaged gradients, so all skip together), decided on the device by found_inf,
        // which every `--opt`'s step reads (and amp's own, the scale update).
        let clip_range = Range::new("clip_grad");
        // --fsdp: amp's found_inf agreed over the ranks, and the norm the whole model's (every
        // rank holds other shards): every rank skips the same steps.
        let amp_inf = match &o.scaler {
            Some(s) => Some(o.buckets.agree_found_inf(s.unscale(&o.opt.params)?, comm)?),
            None => None,
        };
        // The norm stays on the device: only its finiteness is used.
        let norm = match o.plan.grad_clip_norm {
            Some(max) => o.buckets.clip_grad_norm(&o.opt.params, max, comm)?,
            None => o.buckets.grad_norm(&o.opt, comm)?,
        };
        let found_inf = nonfinite::found_inf(&norm, amp_inf.as_ref());
        drop(clip_range);
        let _opt_range = Range::new("optimizer");
        o.opt.step(lr, Some(&found_inf))?;
        o.buckets.after_step()?;
        if let (Some(s), Some(inf)) = (o.scaler.as_mut(), &amp_inf) {
            s.update(inf);
        }
        o.skipped
            .record(self.state.step + 1, self.state.epoch, &found_inf);
        if let Some(first) = o.opt.params.first() {
            nonfinite::test_nan_weight(self.state.step + 1, &first.tensor);
        }
        self.model.clamp_logit_scale();
        self.state.step += 1;
        self.state.step_in_epoch += 1;
        Ok(StepDone {
            loss,
            lr,
            skipped: amp_inf,
        })
    }

    /// The progress bar every step; the log line and TensorBoard on log steps (`loss`: this
    /// rank's loss, given on log steps only — the only steps that read the device).
    fn report_step(
        &mut self,
        report: &StepReport,
        loss: Option<&Tensor>,
        comm: &dyn Collectives,
    ) -> Result<()> {
        let values = if let Some(loss) = loss {
            // The optimizer does not count a skipped step: the difference is the run's skipped steps
            // (the same on every rank).
            let o = self.optimization.as_ref().expect("training run");
            Some(LogStepValues {
                global_loss: ddp::global_loss(comm, loss)?,
                logit_scale: self.model.logit_scale.exp().double_value(&[]),
                skipped_steps: self.state.step - o.opt.steps_taken(),
            })
        } else {
            None
        };
        self.metrics.step(report, values)
    }

    /// Moves the state to the start of the next epoch.
    fn next_epoch(&mut self) {
        let o = self.optimization.as_ref().expect("training run");
        self.state.epoch += 1;
        self.state.step_in_epoch = 0;
        self.position = Some(o.plan.data.epoch_start(self.state.epoch));
    }

    /// `--save-every-n-steps` (in the background) and the preemption checkpoint (complete
    /// before the exit); `stop`: a signal reached some rank (agreed by all).
    /// `batches`: the epoch the step came from; its data position (which copies every stream's
    /// shuffle-buffer list) is taken only for a checkpoint, and only while the epoch is still
    /// going (at its end `next_epoch` has set the next epoch's start).
    fn save_if_due(
        &mut self,
        comm: &dyn Collectives,
        stop: bool,
        batches: &Epoch,
    ) -> Result<Outcome> {
        let o = self.optimization.as_ref().expect("training run");
        let every = o
            .plan
            .saves
            .every_n_steps
            .is_some_and(|n| self.state.step % n == 0);
        if every || stop {
            if self.state.step_in_epoch > 0 {
                self.position = Some(batches.position());
            }
            let write = if stop { Write::Now } else { Write::Background };
            let file = format!("step_{}.safetensors", self.state.step);
            self.save(&file, write, comm, None)?;
        }
        if !stop {
            return Ok(Outcome::Finished);
        }
        self.metrics.log.warn(&format!(
            "Preemption signal: checkpointed step {} and stopping (exit {})",
            self.state.step,
            crate::EXIT_PREEMPTED
        ));
        Ok(Outcome::Preempted)
    }

    /// The checkpoints due at an epoch's end: `epoch_N` (every `--save-frequency` epochs and the
    /// last), `epoch_latest` with `--save-most-recent`.
    fn end_of_epoch(&mut self, comm: &dyn Collectives) -> Result<()> {
        let o = self.optimization.as_ref().expect("training run");
        let saves = &o.plan.saves;
        let completed = self.state.epoch;
        let (delete_previous, most_recent) = (saves.delete_previous, saves.most_recent);
        if completed == o.plan.epochs || (saves.frequency > 0 && completed % saves.frequency == 0) {
            let previous = delete_previous.then(|| format!("epoch_{}.safetensors", completed - 1));
            let file = format!("epoch_{completed}.safetensors");
            self.save(&file, Write::Background, comm, previous)?;
        }
        if most_recent {
            self.save("epoch_latest.safetensors", Write::Background, comm, None)?;
        }
        Ok(())
    }

    /// Checkpoints the current state as `file` (see [`Checkpointer::save`]).
    fn save(
        &mut self,
        file: &str,
        write: Write,
        comm: &dyn Collectives,
        then_delete: Option<String>,
    ) -> Result<()> {
        // Never a checkpoint after a non-finite loss: the stop must name the newest good one.
        self.check_divergence(comm)?;
        let o = self.optimization.as_ref().expect("training run");
        let mut state = self.state.clone();
        let opt_step = o.opt.steps_taken();
        state.optimizer_step = (opt_step != state.step).then_some(opt_step);
        state.scaler = o.scaler.as_ref().map(GradScaler::state);
        let position = self
            .position
            .clone()
            .unwrap_or_else(|| o.plan.data.epoch_start(state.epoch));
        if let Some(f) = o.buckets.fsdp() {
            let log = &mut self.metrics.log;
            let (ck, opt) = (&mut self.checkpoints, &o.opt);
            return f.save(
                ck,
                file,
                write,
                comm,
                &state,
                &position,
                opt,
                then_delete,
                log,
            );
        }
        self.checkpoints.save(
            file,
            write,
            comm,
            &state,
            &position,
            self.model.named_parameters(),
            &o.opt.state_tensors(),
            then_delete,
            &mut self.metrics.log,
        )
    }

    /// The evaluations due after the completed epochs, every rank a share of them (each
    /// heartbeats as it goes); rank 0 reports the combined metrics.
    fn evaluate(&mut self, dist: &Dist) -> Result<()> {
        let step = self.state.step as u64;
        let mut beat = || Ok(dist.heartbeat(step)?);
        // --fsdp: the whole model gathered for the evaluation, freed after it.
        let fsdp = self.optimization.as_ref().and_then(|o| o.buckets.fsdp());
        let fsdp = fsdp.filter(|_| self.evaluator.any_due(self.state.epoch));
        if let Some(f) = fsdp {
            f.gather_all(dist.collectives())?;
        }
        let metrics = self.evaluator.evaluate(
            &self.model,
            self.state.epoch,
            dist.collectives(),
            &mut self.metrics.log,
            &mut beat,
        );
        if let Some(f) = fsdp {
            f.release()?;
        }
        let metrics = metrics?;
        if self.world.rank != 0 {
            return Ok(());
        }
        self.metrics.eval(self.state.epoch, &metrics)
    }
}

impl Optimization {
    fn new(
        plan: TrainPlan,
        model: &Clip,
        world: &WorldInfo,
        precision: Precision,
        reduced: bool,
    ) -> Result<Self> {
        let device = model.logit_scale.device();
        let trainable: Vec<(String, Tensor)> = model
            .named_parameters()
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        let layout = model_layout(model);
        let o = &plan.optimizer;
        let (opt, buckets) = match &plan.fsdp {
            Some(f) => {
                // The plan refuses --fsdp with any other optimizer.
                let config = o.adamw().expect("--fsdp steps --opt adamw");
                let fsdp = Fsdp::new(model, f, world, plan.grad_reduce)?;
                (fsdp.adamw(config)?, GradSync::Fsdp(fsdp))
            }
            None => (
                Optimizer::build(&trainable, &o.spec, &o.rules, &layout)?,
                GradSync::Ddp(GradBuckets::new(
                    &trainable,
                    plan.grad_reduce,
                    plan.ddp_buckets,
                    reduced,
                )?),
            ),
        };
        let step_opts = StepOptions {
            autocast: precision.autocast().map(|k| (device, k)),
            loss_scale: None,
            train: true,
            loss: plan.loss,
        };
        let preempted = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGUSR1, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&preempted))?;
        }
        // The step's micro-batches and the next step's, and two for the assembler.
        let host = HostMemory {
            device,
            image_kind: prefetch::image_kinds(precision).0,
            buffers: 2 * plan.accum_freq as usize + 2,
        };
        Ok(Optimization {
            host,
            timer: plan.timed_steps.map(|w| StepTimer::new(w, device)),
            skipped: SkippedSteps::new(device, plan.max_skipped, precision.scales_loss()),
            plan,
            opt,
            scaler: precision
                .scales_loss()
                .then(|| GradScaler::new(ScalerState::default(), device)),
            buckets,
            step_opts,
            preempted,
        })
    }
}

/// The model as planned: OpenCLIP's init from the seed (set by the caller), `--pretrained`,
/// checkpointing, the precision's weight dtype, the locked towers.
fn build_model(
    vs: &VarStore,
    plan: &ModelPlan,
    precision: Precision,
    name: &str,
    log: &mut Log,
) -> Result<Clip> {
    let model = Clip::new(&vs.root(), &plan.cfg)?;
    if let Some(path) = &plan.pretrained {
        crate::checkpoint::load_weights(vs, path, &plan.cfg)?;
        log.info(&format!(
            "Loaded pretrained weights from {}",
            path.display()
        ));
    }
    if let Some(path) = &plan.pretrained_image {
        crate::pretrained_image::load(vs, &model, path)?;
        log.info(&format!(
            "Loaded timm's pretrained image trunk from {}",
            path.display()
        ));
    }
    model.set_grad_checkpointing(plan.grad_checkpointing);
    // Low-precision weights (no autocast): OpenCLIP's `bf16` keeps some weights fp32 (see
    // `Clip::to_bf16`).
    if let Weights::Bf16 {
        text_layer_norms_fp32,
    } = precision.weights()
    {
        model.to_bf16(text_layer_norms_fp32);
    }
    if let Some(unlocked) = plan.lock_image {
        // ConvNeXt and ViT have no BatchNorm: --lock-image-freeze-bn-stats has nothing to freeze.
        model.lock_image_tower(unlocked);
    }
    if let Some(unlocked) = plan.lock_text {
        // OpenCLIP 3.3.0 asserts --lock-text-freeze-layer-norm (LayerNorms are locked like
        // every other weight either way); clip-train locks them without asking for the flag.
        model.lock_text_tower(unlocked);
    }
    let trainable: i64 = model
        .named_parameters()
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(_, t)| t.numel() as i64)
        .sum();
    log.info(&format!(
        "Model {name}: {} parameters ({trainable} trainable)",
        model.parameter_count()
    ));
    Ok(model)
}

/// What the optimizer's groups need to know about the model: its `no_weight_decay()` names and
/// its towers' layer groups.
pub fn model_layout(model: &Clip) -> ModelLayout {
    let tower = |t: Tower| {
        let g = model.layer_groups(t);
        TowerLayers {
            count: g.count,
            of: g.groups,
        }
    };
    ModelLayout {
        no_weight_decay: model.no_weight_decay(),
        image: tower(Tower::Image),
        text: tower(Tower::Text),
    }
}

/// The run's first lines about the optimizer: OpenCLIP's `Created … optimizer: …` line and one
/// line per parameter group.
fn log_optimizer(spec: &OptimSpec, opt: &Optimizer, log: &mut Log) {
    let settings: Vec<String> = spec
        .summary
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    log.info(&format!(
        "Created {} ({}) optimizer: {}",
        spec.class,
        spec.name,
        settings.join(", ")
    ));
    for line in opt.describe_groups() {
        log.info(&line);
    }
}

/// What the log line needs: samples per step over all ranks, the epoch plan, MFU's inputs.
fn run_shape(plan: &Plan) -> RunShape {
    let batch_size = plan.params.batch_size;
    let world_size = plan.world.world_size as i64;
    let (step_samples, steps_per_epoch, samples_per_epoch, log_every) = match &plan.train {
        Some(t) => (
            batch_size * t.accum_freq * world_size,
            t.steps_per_epoch,
            t.data.samples_per_epoch,
            t.log_every_n_steps,
        ),
        None => (batch_size * world_size, 1, 1, 1),
    };
    let flops = clip_model::flops::train_flops(&plan.model.cfg, plan.model.grad_checkpointing);
    RunShape {
        world_size,
        step_samples,
        steps_per_epoch,
        samples_per_epoch,
        log_every,
        mfu: peak_flops(plan.device, plan.precision.is_16_bit()).map(|peak| (flops, peak)),
        training: plan.train.is_some(),
    }
}
