//! `--fsdp`: parameters, gradients and AdamW's state sharded over the ranks, as FSDP2
//! (`fully_shard`) shards them for OpenCLIP's development branch.
//!
//! **Units** ([`clip_model::units`]): every transformer residual block and ConvNeXt block, and
//! each tower's root (the rest of the tower). A unit's parameters of one dtype are one flat
//! vector, padded and cut into equal shards ([`layout`]); each rank keeps its shard of the
//! parameters, of their gradient and of both AdamW moments. `logit_scale` and `logit_bias` (two
//! scalars, read by the loss outside any tower) stay whole on every rank, as DDP keeps them.
//!
//! **A step** ([`runtime`]): just before a unit's forward its parameters are all-gathered — in
//! bf16 under `--precision amp_bf16` (FSDP2's `MixedPrecisionPolicy(param_dtype=bf16)`, the
//! parameters' own dtype otherwise: fp32, or bf16 for `bf16` / `pure_bf16` weights) — and freed
//! after it unless `--fsdp-no-reshard-after-forward`. A gradient hook on its output gathers them
//! again when the backward reaches it (the `--grad-checkpointing` recompute runs on those), and as
//! soon as its last gradient is accumulated the unit's gradients are reduce-scattered (mean over
//! the ranks, in fp32 or `--grad-reduce-dtype`) and added into the shards' gradients; the full
//! gradients and parameters are freed. With `--accum-freq K` each of the K backwards reduces
//! (FSDP2's default: no full-size gradient is kept between them). AdamW (the fused kernel, the
//! same weight-decay groups: decided by each parameter's name and dimensions) steps the local
//! shards only; `--grad-clip-norm` scales by the norm over all shards (sum of squares,
//! all-reduced).
//!
//! **Differences from OpenCLIP's FSDP2 on purpose:** autocast stays on under `amp` / `amp_bf16`
//! (OpenCLIP turns it off under FSDP and computes in the gathered dtype alone), so LayerNorm,
//! softmax and the loss run in fp32 as they do without `--fsdp`; `amp` gathers fp32 (OpenCLIP:
//! fp16). Evaluation gathers the whole model once and evaluates as without `--fsdp` (OpenCLIP
//! gathers unit by unit, every rank stepping through the same batches).
//!
//! **Hybrid sharding** (`--fsdp-shard-size N`, ours): shards over groups of N consecutive ranks
//! (a node), the groups replicas of each other; gradients are reduce-scattered within a group
//! and all-reduced across groups ([`Topology`]).

mod layout;
mod runtime;
pub mod sharded;
mod state;
mod subgroup;

use std::sync::Arc;

use anyhow::{bail, Result};
use clip_dist::{Collectives, ReduceOp, WorldInfo};
use clip_model::{Clip, Hooks};
use tch::{Device, Kind, Tensor};

use crate::buckets::GradBuckets;
use crate::optimizer::{excluded_from_weight_decay, AdamW, AdamWConfig, GroupedParam, Param};
use crate::params::Params;
use crate::precision::Precision;
use layout::Group;
use runtime::{Ordered, Runtime, Settings, UnitRt};
use subgroup::SubGroup;

/// `--fsdp-checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Today's single file, gathered by rank 0 unit by unit.
    Full,
    /// One file per rank of a shard group and an index.
    Sharded,
}

/// `--fsdp` and its flags, validated.
#[derive(Debug, Clone)]
pub struct FsdpPlan {
    pub reshard_after_forward: bool,
    pub offload_cpu: bool,
    pub checkpoint: CheckpointKind,
    /// Ranks per shard group: the world, or `--fsdp-shard-size`.
    pub shard_size: usize,
    /// The dtype parameters are gathered in: bf16 under `amp_bf16`, else None (their own).
    pub gather: Option<Kind>,
}

impl FsdpPlan {
    /// The `--fsdp*` flags (None without `--fsdp`); every combination that cannot run is
    /// refused here.
    pub fn from_params(
        p: &Params,
        world: &WorldInfo,
        precision: Precision,
    ) -> Result<Option<Self>> {
        let checkpoint = match p.fsdp_checkpoint.as_str() {
            "full" => CheckpointKind::Full,
            "sharded" => CheckpointKind::Sharded,
            other => bail!("--fsdp-checkpoint {other}: expected full or sharded"),
        };
        let given = [
            (
                "--fsdp-no-reshard-after-forward",
                p.fsdp_no_reshard_after_forward,
            ),
            ("--fsdp-offload-cpu", p.fsdp_offload_cpu),
            (
                "--fsdp-checkpoint sharded",
                checkpoint == CheckpointKind::Sharded,
            ),
            ("--fsdp-shard-size", p.fsdp_shard_size.is_some()),
        ];
        if !p.fsdp {
            if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
                bail!("{flag} needs --fsdp");
            }
            return Ok(None);
        }
        let w = world.world_size;
        let shard_size = match p.fsdp_shard_size {
            None => w,
            Some(n) if n >= 1 && w.is_multiple_of(n as usize) => n as usize,
            Some(n) => {
                bail!("--fsdp-shard-size {n}: must be at least 1 and divide the world size {w}")
            }
        };
        if p.fsdp_offload_cpu && precision.scales_loss() {
            bail!("not supported yet: --fsdp-offload-cpu with --precision amp (the loss scaler's inf check lives on the GPU, the optimizer step on the host)");
        }
        Ok(Some(FsdpPlan {
            reshard_after_forward: !p.fsdp_no_reshard_after_forward,
            offload_cpu: p.fsdp_offload_cpu,
            checkpoint,
            shard_size,
            gather: (precision == Precision::AmpBf16).then_some(Kind::BFloat16),
        }))
    }
}

/// Which ranks share shards: shard groups of `ranks` consecutive ranks (all of them, unless
/// `--fsdp-shard-size`), each a replica of the others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Topology {
    /// Ranks per shard group.
    pub ranks: usize,
    /// This rank's index in its shard group.
    pub rank: usize,
    /// The world size and this rank's global rank.
    world: usize,
    global: usize,
}

impl Topology {
    fn new(ranks: usize, world: &WorldInfo) -> Topology {
        Topology {
            ranks,
            rank: world.rank % ranks,
            world: world.world_size,
            global: world.rank,
        }
    }

    fn hybrid(&self) -> bool {
        self.ranks != self.world
    }

    /// This rank's shard group.
    fn shard_group<'a>(&self, comm: &'a dyn Collectives) -> SubGroup<'a> {
        let first = self.global - self.rank;
        SubGroup::new(comm, (first..first + self.ranks).collect())
    }

    /// The ranks holding the same shard as this one, one per shard group.
    fn replicas<'a>(&self, comm: &'a dyn Collectives) -> SubGroup<'a> {
        let members = (0..self.world / self.ranks).map(|g| g * self.ranks + self.rank);
        SubGroup::new(comm, members.collect())
    }

    /// Every rank's `t` concatenated in shard-group order.
    fn all_gather(&self, comm: &dyn Collectives, t: &Tensor) -> Result<Tensor> {
        match (self.hybrid(), self.ranks) {
            (false, _) => Ok(comm.all_gather(t)?),
            (true, 1) => Ok(t.copy()),
            (true, _) => self.shard_group(comm).all_gather(t),
        }
    }

    /// `t` (`[R·S]`) averaged over all ranks, this rank's S elements of it: hybrid, summed
    /// within the shard group (reduce-scatter), then across the groups (all-reduce).
    fn reduce_mean(&self, comm: &dyn Collectives, t: &Tensor) -> Result<Tensor> {
        if !self.hybrid() {
            return Ok(comm.reduce_scatter(t, ReduceOp::Mean)?);
        }
        let mine = match self.ranks {
            1 => t.copy(),
            _ => self.shard_group(comm).reduce_scatter_sum(t)?,
        };
        let sum = self.replicas(comm).all_reduce_sum(&mine)?;
        Ok(tch::no_grad(|| sum / self.world as f64))
    }

    /// `t` summed over the ranks of the shard group (in place).
    fn sum_over_shards(&self, comm: &dyn Collectives, t: &mut Tensor) -> Result<()> {
        match (self.hybrid(), self.ranks) {
            (false, _) => comm.all_reduce(t, ReduceOp::Sum)?,
            (true, 1) => {}
            (true, _) => {
                let sum = self.shard_group(comm).all_reduce_sum(t)?;
                tch::no_grad(|| t.copy_(&sum));
            }
        }
        Ok(())
    }
}

/// `--fsdp` on the CPU, before the model is built: FSDP frees and allocates unit-sized buffers
/// all the time (the whole model once, sharded; then gathered parameters and full gradients
/// every step), of sizes glibc's dynamic mmap threshold soon serves from the heap, where freed
/// memory stays in the process — the resident size would creep back to the whole model's. A
/// fixed threshold of 1 MiB (`M_MMAP_THRESHOLD`; `MALLOC_MMAP_THRESHOLD_` in the environment)
/// maps every such buffer on its own, so freeing it returns it. GPU memory is torch's caching
/// allocator's business: nothing to do there.
pub fn prepare_host_memory(plan: Option<&FsdpPlan>, device: Device) {
    if plan.is_none() || device != Device::Cpu {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: a glibc allocator setting; no preconditions.
        unsafe { mallopt(M_MMAP_THRESHOLD, 1 << 20) };
    }
}

/// What the sharding freed of the whole model and the heap still holds goes back to the system.
fn return_freed_host_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only returns free pages; no preconditions.
        unsafe { malloc_trim(0) };
    }
}

/// A host copy of `t` (when the model computes on a GPU, allocated pinned — torch's caching
/// host allocator, as `torch_ext::pinned` does for the checkpoint snapshot — so copies run at
/// DMA speed).
pub(crate) fn host(t: &Tensor, device: Device) -> Result<Tensor> {
    let t = t.detach();
    Ok(match device {
        Device::Cuda(_) => {
            let pinned = torch_ext::pinned::empty(&t.size(), t.kind())?;
            tch::no_grad(|| pinned.shallow_clone().f_copy_(&t))?;
            pinned
        }
        _ => t.to_device(Device::Cpu).copy(),
    })
}

/// The dtypes of `params`, in order of first appearance: a unit's groups.
fn kinds_of(params: &[(String, Tensor)]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = vec![];
    for (_, t) in params {
        if !kinds.contains(&t.kind()) {
            kinds.push(t.kind());
        }
    }
    kinds
}

/// A model sharded for `--fsdp`: its units' shards and the hooks installed in the model.
pub struct Fsdp {
    rt: Arc<Runtime>,
    /// `logit_scale` / `logit_bias`: whole on every rank, gradients all-reduced.
    replicated: Vec<(String, Tensor)>,
    /// `--fsdp-offload-cpu`: host copies of the replicated scalars, which AdamW steps on the host
    /// with the shards (copied from the model's before each step, back after the update).
    masters: Vec<Tensor>,
    /// CRC-32 of the whole model's weights before sharding (every rank's must agree).
    pub initial_checksum: u32,
    plan: FsdpPlan,
    world: usize,
}

impl Fsdp {
    /// Shards `model` (built whole, identically on every rank) over the shard group and installs
    /// the hooks; from here on its units' parameters hold values only while gathered.
    pub fn new(model: &Clip, plan: &FsdpPlan, world: &WorldInfo, reduce: Kind) -> Result<Fsdp> {
        let initial_checksum = crate::ddp::weights_checksum(model.named_parameters());
        let topology = Topology::new(plan.shard_size, world);
        let device = model.logit_scale.device();
        let shard_device = if plan.offload_cpu {
            Device::Cpu
        } else {
            device
        };
        let mut units = vec![];
        for unit in model.units() {
            let mut groups: Vec<Group> = vec![];
            for kind in kinds_of(&unit.params) {
                let params: Vec<(String, Tensor)> = unit
                    .params
                    .iter()
                    .filter(|(_, t)| t.kind() == kind)
                    .map(|(k, t)| (k.clone(), t.shallow_clone()))
                    .collect();
                let gather = plan.gather.unwrap_or(kind);
                let g = Group::new(params, topology.ranks, topology.rank, gather, shard_device)?;
                groups.push(g);
            }
            units.push(UnitRt::new(unit.name, groups));
        }
        let cuda = match device {
            Device::Cuda(d) => Some((d, torch_ext::cuda::Stream::from_pool(d)?)),
            _ => None,
        };
        let settings = Settings {
            reshard_after_forward: plan.reshard_after_forward,
            topology,
            reduce,
            cuda,
        };
        let rt = Runtime::new(units, settings)?;
        model.set_unit_hooks(Some(rt.clone() as Hooks));
        if device == Device::Cpu {
            return_freed_host_memory();
        }
        let replicated: Vec<(String, Tensor)> = model
            .named_parameters()
            .iter()
            .filter(|(k, _)| k == "logit_scale" || k == "logit_bias")
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        let masters = match plan.offload_cpu {
            true => replicated
                .iter()
                .map(|(_, t)| Ok(host(t, device)?.set_requires_grad(true)))
                .collect::<Result<_>>()?,
            false => vec![],
        };
        Ok(Fsdp {
            rt,
            replicated,
            masters,
            initial_checksum,
            plan: plan.clone(),
            world: world.world_size,
        })
    }

    /// AdamW over this rank's shards (each parameter's piece of it, with the weight-decay group
    /// of the whole parameter) and the replicated scalars. The pieces share memory with the
    /// shards: the update lands in them, and the moments are views of the shards' moments.
    pub fn adamw(&self, config: AdamWConfig) -> Result<AdamW> {
        let rank = self.rt.settings.topology.rank;
        let inner = self.rt.lock();
        // (piece tensor, its name, whether the whole parameter decays, moments, gradient)
        let mut pieces = vec![];
        for g in inner.units.iter().flat_map(|u| &u.groups) {
            for piece in g.pieces(rank) {
                let p = &g.params[piece.param];
                if !p.trainable {
                    continue;
                }
                let view = |t: &Tensor| t.narrow(0, piece.at, piece.len);
                let tensor = view(&g.shard).detach().set_requires_grad(true);
                torch_ext::grad_hooks::set_grad(&tensor, &view(&g.grad))?;
                let decay = !excluded_from_weight_decay(&p.key, p.shape.len());
                pieces.push((
                    p.key.clone(),
                    tensor,
                    decay,
                    view(&g.exp_avg),
                    view(&g.exp_avg_sq),
                ));
            }
        }
        let mut given: Vec<GroupedParam> = pieces
            .into_iter()
            .map(|(name, tensor, decay, m, v)| GroupedParam {
                name,
                tensor,
                decay,
                moments: Some((m, v)),
            })
            .collect();
        let scalars = self.stepped_scalars();
        given.extend(
            self.replicated
                .iter()
                .zip(scalars)
                .map(|((k, _), t)| GroupedParam {
                    name: k.clone(),
                    tensor: t.shallow_clone(),
                    decay: !excluded_from_weight_decay(k, t.dim()),
                    moments: None,
                }),
        );
        Ok(AdamW::adamw_grouped(given, config))
    }

    /// The step's forwards and backwards (`f`, given the collectives to use meanwhile) with the
    /// shards' gradients zeroed first and, after, every unit's gradient reduced into them and
    /// the replicated scalars' gradients averaged over the ranks.
    pub fn run_step<T>(
        &self,
        comm: &dyn Collectives,
        f: impl FnOnce(&dyn Collectives) -> Result<T>,
    ) -> Result<T> {
        self.rt.begin_step()?;
        let tensors: Vec<&Tensor> = self.replicated.iter().map(|(_, t)| t).collect();
        torch_ext::optim::set_grads_to_none(&tensors)?;
        // The model's scalars may have changed since the update (the logit_scale clamp).
        for (m, (_, t)) in self.masters.iter().zip(&self.replicated) {
            tch::no_grad(|| m.shallow_clone().f_copy_(t))?;
        }
        let out = {
            let _scope = self.rt.scope(comm);
            let ordered = Ordered {
                comm,
                cuda: self.rt.settings.cuda,
            };
            f(&ordered)?
        };
        self.rt.end_step()?;
        let reduce = self.rt.settings.reduce;
        for (_, t) in &self.replicated {
            let mut g = t.grad();
            if !g.defined() || self.world == 1 {
                continue;
            }
            let mut wide = g.to_kind(reduce);
            comm.all_reduce(&mut wide, ReduceOp::Mean)?;
            tch::no_grad(|| g.copy_(&wide));
        }
        for (m, (_, t)) in self.masters.iter().zip(&self.replicated) {
            let g = t.grad();
            if g.defined() {
                torch_ext::grad_hooks::set_grad(m, &g.to_device(Device::Cpu))?;
            }
        }
        Ok(out)
    }

    /// The tensors AdamW steps for the replicated scalars: the model's, or with
    /// `--fsdp-offload-cpu` their host copies.
    fn stepped_scalars(&self) -> Vec<&Tensor> {
        match self.masters.is_empty() {
            true => self.replicated.iter().map(|(_, t)| t).collect(),
            false => self.masters.iter().collect(),
        }
    }

    /// After AdamW's update: with `--fsdp-offload-cpu`, the model's scalars take their host
    /// copies' new values (the shards need nothing: the next gather reads them).
    pub fn after_step(&self) -> Result<()> {
        for (m, (_, t)) in self.masters.iter().zip(&self.replicated) {
            tch::no_grad(|| t.shallow_clone().f_copy_(m))?;
        }
        Ok(())
    }

    /// The 2-norm of the whole model's gradient: each rank's sum of squares over its shards,
    /// summed over the shard group, plus the replicated scalars' (the same on every rank); on
    /// the device, the same on every rank. Also the gradients it is over.
    fn total_norm(&self, comm: &dyn Collectives) -> Result<(Tensor, Vec<Tensor>)> {
        let inner = self.rt.lock();
        let device = self.replicated[0].1.device();
        let mut grads: Vec<Tensor> = inner
            .units
            .iter()
            .flat_map(|u| &u.groups)
            .map(|g| g.grad.shallow_clone())
            .collect();
        drop(inner);
        let replicated: Vec<Tensor> = self
            .stepped_scalars()
            .into_iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let squares = |ts: &[Tensor]| {
            ts.iter()
                .fold(Tensor::zeros([], (Kind::Float, device)), |acc, g| {
                    acc + g
                        .to_kind(Kind::Float)
                        .square()
                        .sum(Kind::Float)
                        .to_device(device)
                })
        };
        let total = tch::no_grad(|| -> Result<Tensor> {
            let mut shards = squares(&grads);
            self.rt
                .settings
                .topology
                .sum_over_shards(comm, &mut shards)?;
            Ok((shards + squares(&replicated)).sqrt())
        })?;
        grads.extend(replicated);
        Ok((total, grads))
    }

    /// The whole model's gradient norm ([`Fsdp::total_norm`]) without clipping: the step's
    /// finiteness check (a non-finite norm on any rank's shards skips the step on every rank).
    pub fn grad_norm(&self, comm: &dyn Collectives) -> Result<Tensor> {
        Ok(self.total_norm(comm)?.0)
    }

    /// `--grad-clip-norm`: scales every gradient (the shards' and the replicated scalars') by
    /// `min(1, max / (total + 1e-6))`, total the whole model's gradient norm
    /// ([`Fsdp::total_norm`]). Returns the norm (on the device).
    pub fn clip_grad_norm(&self, max_norm: f64, comm: &dyn Collectives) -> Result<Tensor> {
        let (total, grads) = self.total_norm(comm)?;
        tch::no_grad(|| {
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for g in &grads {
                let _ = g.shallow_clone().g_mul_(&coef.to_device(g.device()));
            }
        });
        Ok(total)
    }

    /// `--precision amp`'s found_inf, agreed: every rank skips the step when any rank's shards
    /// hold an inf or NaN gradient.
    pub fn agree_found_inf(&self, found_inf: Tensor, comm: &dyn Collectives) -> Result<Tensor> {
        let mut any = found_inf;
        comm.all_reduce(&mut any, ReduceOp::Sum)?;
        Ok(tch::no_grad(|| any.clamp_max(1.0)))
    }

    /// Gathers the whole model and keeps it gathered (evaluation) until [`Fsdp::release`].
    pub fn gather_all(&self, comm: &dyn Collectives) -> Result<()> {
        self.rt.gather_all(comm)
    }

    pub fn release(&self) -> Result<()> {
        self.rt.release_all()
    }
}

/// Bytes of training state per rank: (parameters, gradients, optimizer state, largest gathered
/// unit and its name).
pub(crate) struct StateBytes {
    pub params: i64,
    pub grads: i64,
    pub optimizer: i64,
    pub largest_unit: (i64, String),
}

impl StateBytes {
    fn line(&self, what: &str) -> String {
        let gb = |b: i64| match b as f64 / 1e9 {
            g if g >= 10.0 => format!("{g:.1} GB"),
            g => format!("{g:.4} GB"),
        };
        let unit = match &self.largest_unit {
            (0, _) => String::new(),
            (b, name) => format!("; largest gathered unit: {name}, {}", gb(*b)),
        };
        format!(
            "Training state per rank, {what}: parameters {}, gradients {}, optimizer state {}, total {}{unit}",
            gb(self.params),
            gb(self.grads),
            gb(self.optimizer),
            gb(self.params + self.grads + self.optimizer)
        )
    }
}

/// The training state each rank holds for `model` (built, not yet sharded): whole (DDP:
/// `ranks` None), or sharded over `ranks` with parameters gathered in `gather` — as [`Fsdp::new`]
/// lays it out: per unit and dtype ⌈N / R⌉ elements of parameters, and where trainable of the
/// gradient and both AdamW moments; the replicated scalars whole.
pub(crate) fn state_bytes(model: &Clip, ranks: Option<usize>, gather: Option<Kind>) -> StateBytes {
    let bytes = |n: i64, k: Kind| n * k.elt_size_in_bytes() as i64;
    let mut s = StateBytes {
        params: 0,
        grads: 0,
        optimizer: 0,
        largest_unit: (0, String::new()),
    };
    let mut add = |n: i64, kind: Kind, trainable: bool| {
        s.params += bytes(n, kind);
        if trainable {
            s.grads += bytes(n, kind);
            s.optimizer += 2 * bytes(n, kind);
        }
    };
    let Some(r) = ranks else {
        for (_, t) in model.named_parameters() {
            add(t.numel() as i64, t.kind(), t.requires_grad());
        }
        return s;
    };
    let mut largest = (0, String::new());
    for unit in model.units() {
        let mut gathered = 0;
        for kind in kinds_of(&unit.params) {
            let of_kind = || unit.params.iter().filter(move |(_, t)| t.kind() == kind);
            let n: i64 = of_kind().map(|(_, t)| t.numel() as i64).sum();
            let trainable = of_kind().any(|(_, t)| t.requires_grad());
            let len = layout::shard_len(n, r);
            add(len, kind, trainable);
            gathered += bytes(len * r as i64, gather.unwrap_or(kind));
        }
        if gathered > largest.0 {
            largest = (gathered, unit.name);
        }
    }
    for (k, t) in model.named_parameters() {
        if k == "logit_scale" || k == "logit_bias" {
            add(t.numel() as i64, t.kind(), t.requires_grad());
        }
    }
    s.largest_unit = largest;
    s
}

/// The log's lines on the training state per rank: DDP's, and with `--fsdp` the sharding's.
pub fn state_report(model: &Clip, plan: Option<&FsdpPlan>, world: usize) -> Vec<String> {
    let mut lines = vec![state_bytes(model, None, None).line("DDP")];
    if let Some(p) = plan {
        let what = match p.shard_size == world {
            true => format!("FSDP over {world} ranks"),
            false => format!(
                "FSDP over groups of {} ranks ({} replicas)",
                p.shard_size,
                world / p.shard_size
            ),
        };
        lines.push(state_bytes(model, Some(p.shard_size), p.gather).line(&what));
    }
    lines
}

/// How gradients are kept in sync: DDP's buckets or FSDP's shards.
pub enum GradSync {
    Ddp(GradBuckets),
    Fsdp(Fsdp),
}

impl GradSync {
    /// Whether the optimizer must leave the gradients to this (not zero them itself).
    pub fn own_grads(&self) -> bool {
        match self {
            GradSync::Ddp(b) => b.own_grads(),
            GradSync::Fsdp(_) => true,
        }
    }

    /// Runs the step's backwards with the gradients kept in sync (see
    /// [`GradBuckets::reduce_during`], [`Fsdp::run_step`]).
    pub fn reduce_during<T>(
        &self,
        comm: &dyn Collectives,
        backward: impl FnOnce(&dyn Collectives) -> Result<T>,
    ) -> Result<T> {
        match self {
            GradSync::Ddp(b) => b.reduce_during(comm, backward),
            GradSync::Fsdp(f) => f.run_step(comm, backward),
        }
    }

    /// DDP's bucket report (once).
    pub fn report(&self) -> Option<String> {
        match self {
            GradSync::Ddp(b) => b.report(),
            GradSync::Fsdp(_) => None,
        }
    }

    /// `--grad-clip-norm` over the whole model's gradient.
    pub fn clip_grad_norm(
        &self,
        params: &[Param],
        max_norm: f64,
        comm: &dyn Collectives,
    ) -> Result<Tensor> {
        match self {
            GradSync::Ddp(_) => crate::optimizer::clip_grad_norm(params, max_norm),
            GradSync::Fsdp(f) => f.clip_grad_norm(max_norm, comm),
        }
    }

    /// The gradients' global norm, unclipped: the step's finiteness check when nothing clips
    /// (DDP: every rank's gradients are the same; FSDP: over every shard, a collective).
    pub fn grad_norm(&self, opt: &AdamW, comm: &dyn Collectives) -> Result<Tensor> {
        match self {
            GradSync::Ddp(_) => torch_ext::finite::grad_norm(&opt.tensors()),
            GradSync::Fsdp(f) => f.grad_norm(comm),
        }
    }

    /// The loss scaler's found_inf, the same on every rank.
    pub fn agree_found_inf(&self, found_inf: Tensor, comm: &dyn Collectives) -> Result<Tensor> {
        match self {
            GradSync::Ddp(_) => Ok(found_inf),
            GradSync::Fsdp(f) => f.agree_found_inf(found_inf, comm),
        }
    }

    /// After the optimizer's update (see [`Fsdp::after_step`]).
    pub fn after_step(&self) -> Result<()> {
        match self {
            GradSync::Ddp(_) => Ok(()),
            GradSync::Fsdp(f) => f.after_step(),
        }
    }

    pub fn fsdp(&self) -> Option<&Fsdp> {
        match self {
            GradSync::Ddp(_) => None,
            GradSync::Fsdp(f) => Some(f),
        }
    }
}
