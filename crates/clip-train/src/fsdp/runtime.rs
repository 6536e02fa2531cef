//! What happens around each unit during a step: the [`clip_model::UnitHooks`] the model calls
//! (gather before a unit's forward, free after it), the gradient hook on a unit's output that
//! gathers it again before its backward, and the post-accumulate-grad hooks that reduce-scatter
//! a unit's gradient into the shards as soon as its last gradient is in, then free it.
//!
//! **Threads.** On the CPU everything runs on the training thread, the collectives included (the
//! backward runs there and calls the hooks). On CUDA the backward's hooks run on autograd's device
//! thread while the training thread waits in `backward()`: either way one thread at a time, and
//! every rank makes the same calls in the same order (the same graph, walked in the same order).
//!
//! **Streams (CUDA; compiled, not run: no GPU here).** As FSDP2 does, the collectives run on a
//! communication stream of their own: a unit's all-gather is issued there after an event on the
//! compute stream (the shards are current) and the compute stream waits for it only when the
//! unit is needed, so the next unit's gather (issued when this one starts: forward prefetch, and
//! the previous unit's in the backward) runs while this one computes. Reduce-scatters run there
//! too, after an event recorded where the gradients were made. Buffers allocated on one stream
//! and used on the other are `record_stream`ed. The step's own collectives (the loss's) wait for
//! the communication stream first ([`Ordered`]), so every GPU runs them all in one order.
//!
//! **Failures.** A collective that fails inside a hook cannot return an error through the
//! model's forward or libtorch's backward: the process prints it and exits with the failure's
//! status (70 for a job failure: a dead or hung peer), as the watchdog does.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use anyhow::{anyhow, bail, Result};
use clip_dist::{Collectives, ReduceOp};
use clip_model::UnitHooks;
use tch::{Device, Kind, Tensor};
use torch_ext::cuda::{record_stream, Event, Stream, StreamGuard};
use torch_ext::grad_hooks::{on_grad, PostAccumulateGradHook};

use super::layout::Group;
use super::Topology;

/// One unit's shards and where it stands in the step.
pub(crate) struct UnitRt {
    pub name: String,
    pub groups: Vec<Group>,
    /// Its parameters hold their values (gathered, or a gather issued on the comm stream).
    gathered: bool,
    /// CUDA: the gather issued on the comm stream ends at this event.
    ready: Option<Event>,
    /// Its backward has started (recomputes keep the parameters).
    in_backward: bool,
    /// Trainable parameters whose gradient this backward has accumulated.
    fired: usize,
    pub trainable: usize,
    /// Gradient reductions this step (one per backward through the unit).
    reductions: u32,
}

impl UnitRt {
    pub(crate) fn new(name: String, groups: Vec<Group>) -> UnitRt {
        let trainable = groups
            .iter()
            .flat_map(|g| &g.params)
            .filter(|p| p.trainable)
            .count();
        UnitRt {
            name,
            groups,
            gathered: false,
            ready: None,
            in_backward: false,
            fired: 0,
            trainable,
            reductions: 0,
        }
    }
}

/// The collectives of the current step, borrowed for its duration (see [`Runtime::scope`]).
#[derive(Clone, Copy)]
struct CommPtr(*const (dyn Collectives + 'static));

// The pointer is only dereferenced while the `Scope` that set it lives, and `Collectives` is
// Send + Sync.
unsafe impl Send for CommPtr {}

pub(crate) struct Inner {
    pub units: Vec<UnitRt>,
    comm: Option<CommPtr>,
    /// Every unit gathered and kept (evaluation, checkpoint gathers): the hooks do nothing.
    pinned: bool,
    /// The post-accumulate-grad hooks (dropped with the runtime).
    hooks: Vec<PostAccumulateGradHook>,
}

/// Settings fixed at construction.
pub(crate) struct Settings {
    pub reshard_after_forward: bool,
    pub topology: Topology,
    /// The dtype gradients are reduced in (`--grad-reduce-dtype`).
    pub reduce: Kind,
    /// CUDA: the device and the communication stream.
    pub cuda: Option<(usize, Stream)>,
}

pub(crate) struct Runtime {
    inner: Mutex<Inner>,
    pub settings: Settings,
    this: Weak<Runtime>,
}

/// Ends a step's use of its collectives (see [`Runtime::scope`]).
pub(crate) struct Scope<'a> {
    rt: &'a Runtime,
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        self.rt.lock().comm = None;
    }
}

/// A failure inside a hook: there is no caller to return it to.
fn fatal(what: &str, e: anyhow::Error) -> ! {
    let status = crate::ddp::dist_error(&e).map_or(1, |d| d.fault().exit_status());
    eprintln!("FSDP: {what} failed: {e:#}");
    std::process::exit(status)
}

impl Runtime {
    pub(crate) fn new(units: Vec<UnitRt>, settings: Settings) -> Result<Arc<Runtime>> {
        let rt = Arc::new_cyclic(|this| Runtime {
            inner: Mutex::new(Inner {
                units,
                comm: None,
                pinned: false,
                hooks: vec![],
            }),
            settings,
            this: this.clone(),
        });
        let mut hooks = vec![];
        {
            let inner = rt.lock();
            for (u, unit) in inner.units.iter().enumerate() {
                for p in unit.groups.iter().flat_map(|g| &g.params) {
                    if p.trainable {
                        let weak = Arc::downgrade(&rt);
                        hooks.push(PostAccumulateGradHook::register(&p.tensor, move || {
                            if let Some(rt) = weak.upgrade() {
                                rt.grad_ready(u);
                            }
                        })?);
                    }
                }
            }
        }
        rt.lock().hooks = hooks;
        Ok(rt)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lends `comm` to the hooks until the returned scope drops.
    pub(crate) fn scope<'a>(&'a self, comm: &'a dyn Collectives) -> Scope<'a> {
        // SAFETY: only the lifetime is erased; `Scope::drop` takes the pointer back before `comm`
        // can go, and the hooks read it under the lock.
        let ptr: *const (dyn Collectives + 'a) = comm;
        let ptr: *const (dyn Collectives + 'static) = unsafe { std::mem::transmute(ptr) };
        self.lock().comm = Some(CommPtr(ptr));
        Scope { rt: self }
    }

    fn comm<'a>(&self, inner: &Inner) -> Result<&'a dyn Collectives> {
        let CommPtr(ptr) = inner
            .comm
            .ok_or_else(|| anyhow!("a unit was used outside a training step"))?;
        // SAFETY: set by a live `Scope` (see `scope`).
        Ok(unsafe { &*ptr })
    }

    /// Gathers every unit and keeps them (evaluation); [`Runtime::release_all`] ends it.
    pub(crate) fn gather_all(&self, comm: &dyn Collectives) -> Result<()> {
        let _scope = self.scope(comm);
        let mut inner = self.lock();
        for u in 0..inner.units.len() {
            self.gather(&mut inner, u)?;
        }
        self.wait_all(&mut inner)?;
        inner.pinned = true;
        Ok(())
    }

    pub(crate) fn release_all(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.pinned = false;
        for u in 0..inner.units.len() {
            free(&mut inner.units[u])?;
        }
        Ok(())
    }

    /// The compute stream waits for every gather issued.
    fn wait_all(&self, inner: &mut Inner) -> Result<()> {
        for u in 0..inner.units.len() {
            self.wait(inner, u)?;
        }
        Ok(())
    }

    /// Before a step's backwards: gradients zeroed, counts reset.
    pub(crate) fn begin_step(&self) -> Result<()> {
        let mut inner = self.lock();
        tch::no_grad(|| {
            for unit in &mut inner.units {
                unit.reductions = 0;
                for g in &unit.groups {
                    let _ = g.grad.shallow_clone().zero_();
                }
            }
        });
        Ok(())
    }

    /// After a step's backwards: every trainable unit reduced as often as the others (once per
    /// backward), none half-way; whatever the backward left gathered (units without trainable
    /// parameters) freed; on CUDA the compute stream waits for the reductions.
    pub(crate) fn end_step(&self) -> Result<()> {
        let mut inner = self.lock();
        let mut counts = inner
            .units
            .iter()
            .filter(|u| u.trainable > 0)
            .map(|u| (u.reductions, &u.name));
        if let Some((first, _)) = counts.next() {
            if let Some((n, name)) = counts.find(|(n, _)| *n != first || *n == 0) {
                bail!("FSDP unit {name} got {n} gradient reductions this step, another unit {first}: the backward must reach every trainable unit");
            }
        }
        if let Some(u) = inner.units.iter().find(|u| u.fired != 0) {
            bail!(
                "FSDP unit {} got only {} of its {} gradients in a backward",
                u.name,
                u.fired,
                u.trainable
            );
        }
        for u in 0..inner.units.len() {
            inner.units[u].in_backward = false;
            if !inner.pinned {
                free(&mut inner.units[u])?;
            }
        }
        if let Some((device, comm_stream)) = &self.settings.cuda {
            Stream::current(*device)?.wait_stream(comm_stream)?;
        }
        Ok(())
    }

    /// Issues unit `u`'s all-gather (on the comm stream on CUDA) unless it is gathered.
    fn gather(&self, inner: &mut Inner, u: usize) -> Result<()> {
        if inner.units[u].gathered {
            return Ok(());
        }
        let comm = self.comm(inner)?;
        // On CUDA: after what the compute stream has enqueued (the optimizer's update of the
        // shards, the step's collectives), on the comm stream.
        let (compute, _guard) = self.on_comm_stream()?;
        let unit = &mut inner.units[u];
        for g in &unit.groups {
            let device = g.full.device();
            let send = tch::no_grad(|| g.shard.to_device(device).to_kind(g.gather));
            let out = self.settings.topology.all_gather(comm, &send)?;
            torch_ext::storage::fill_from(&g.full, out)?;
        }
        unit.gathered = true;
        if let (Some(compute), Some((_, comm_stream))) = (compute, self.settings.cuda) {
            for g in &unit.groups {
                record_stream(&g.full, &compute)?;
            }
            unit.ready = Some(comm_stream.record_event()?);
        }
        Ok(())
    }

    /// On CUDA: the compute stream (this thread's current one: the training thread's, or
    /// autograd's device thread's, whose current stream is the forward's), and a guard making
    /// the comm stream current after it waits for what the compute stream has enqueued.
    fn on_comm_stream(&self) -> Result<(Option<Stream>, Option<StreamGuard>)> {
        let Some((device, comm_stream)) = self.settings.cuda else {
            return Ok((None, None));
        };
        let compute = Stream::current(device)?;
        comm_stream.wait_stream(&compute)?;
        Ok((Some(compute), Some(StreamGuard::new(comm_stream)?)))
    }

    /// The compute stream waits for unit `u`'s gather (nothing on the CPU).
    fn wait(&self, inner: &mut Inner, u: usize) -> Result<()> {
        if let (Some(event), Some((device, _))) = (inner.units[u].ready.take(), self.settings.cuda)
        {
            Stream::current(device)?.wait_event(&event)?;
        }
        Ok(())
    }

    /// Gathers `u` and has it ready for the compute stream; on CUDA, first issues `next`'s
    /// gather too (prefetch), so it runs while `u` computes.
    fn ensure(&self, inner: &mut Inner, u: usize, next: Option<usize>) -> Result<()> {
        self.gather(inner, u)?;
        if let (Some(n), Some(_)) = (next, self.settings.cuda) {
            if n < inner.units.len() {
                self.gather(inner, n)?;
            }
        }
        self.wait(inner, u)
    }

    /// The backward has reached unit `u`'s output: gather it for its backward (and its
    /// recompute), prefetching the unit before it.
    fn pre_backward(&self, u: usize) {
        let mut inner = self.lock();
        if inner.pinned {
            return;
        }
        inner.units[u].in_backward = true;
        if let Err(e) = self.ensure(&mut inner, u, u.checked_sub(1)) {
            fatal(
                &format!("gathering {} for its backward", inner.units[u].name),
                e,
            );
        }
    }

    /// A trainable parameter of unit `u` has its gradient: once all have, reduce-scatter them.
    fn grad_ready(&self, u: usize) {
        let mut inner = self.lock();
        let unit = &mut inner.units[u];
        unit.fired += 1;
        if unit.fired < unit.trainable {
            return;
        }
        unit.fired = 0;
        if let Err(e) = self.reduce(&mut inner, u) {
            fatal(
                &format!("reducing the gradients of {}", inner.units[u].name),
                e,
            );
        }
    }

    /// After its backward, frees unit `u`'s parameters and reduce-scatters its gradients (mean
    /// over the ranks, in the reduce dtype) into its shards' gradients, freeing the full ones.
    fn reduce(&self, inner: &mut Inner, u: usize) -> Result<()> {
        let comm = self.comm(inner)?;
        let reduce = self.settings.reduce;
        let cuda = self.settings.cuda;
        let (_, _guard) = self.on_comm_stream()?;
        let pinned = inner.pinned;
        let unit = &mut inner.units[u];
        // Every node of the unit's backward that reads its parameters has run (each sends its
        // trainable parameters a gradient): they go before the collectives.
        unit.in_backward = false;
        if !pinned {
            free(unit)?;
        }
        for g in unit.groups.iter().filter(|g| g.trainable()) {
            let grads: Vec<Tensor> = g.params.iter().map(|p| p.tensor.grad()).collect();
            let flat = tch::no_grad(|| {
                let mut parts: Vec<Tensor> = g
                    .params
                    .iter()
                    .zip(&grads)
                    .map(|(p, gr)| match gr.defined() {
                        true => gr.reshape([-1]).to_kind(reduce),
                        false => Tensor::zeros([p.numel], (reduce, gr_device(g))),
                    })
                    .collect();
                let pad = g.full.numel() as i64 - g.numel;
                parts.push(Tensor::zeros([pad], (reduce, gr_device(g))));
                Tensor::cat(&parts, 0)
            });
            // The full gradients go before the collective: only the flat copy stays.
            if let Some((_, comm_stream)) = &cuda {
                for gr in grads.iter().filter(|g| g.defined()) {
                    record_stream(gr, comm_stream)?;
                }
            }
            drop(grads);
            let tensors: Vec<&Tensor> = g.params.iter().map(|p| &p.tensor).collect();
            torch_ext::optim::set_grads_to_none(&tensors)?;
            let mine = self.settings.topology.reduce_mean(comm, &flat)?;
            drop(flat);
            tch::no_grad(|| {
                let mine = mine.to_device(g.grad.device()).to_kind(g.storage);
                let _ = g.grad.shallow_clone().g_add_(&mine);
            });
        }
        unit.reductions += 1;
        Ok(())
    }
}

fn gr_device(g: &Group) -> Device {
    g.full.device()
}

/// Frees unit `u`'s gathered parameters (their memory; shapes stay).
fn free(unit: &mut UnitRt) -> Result<()> {
    if !unit.gathered {
        return Ok(());
    }
    for g in &unit.groups {
        torch_ext::storage::release(&g.full)?;
    }
    unit.gathered = false;
    unit.ready = None;
    Ok(())
}

impl UnitHooks for Runtime {
    fn before(&self, unit: usize) {
        let mut inner = self.lock();
        if inner.pinned {
            return;
        }
        if let Err(e) = self.ensure(&mut inner, unit, Some(unit + 1)) {
            fatal(&format!("gathering {}", inner.units[unit].name), e);
        }
    }

    fn after(&self, unit: usize, out: Tensor) -> Tensor {
        let mut inner = self.lock();
        let keep =
            inner.pinned || inner.units[unit].in_backward || !self.settings.reshard_after_forward;
        if !keep {
            if let Err(e) = free(&mut inner.units[unit]) {
                fatal(&format!("freeing {}", inner.units[unit].name), e);
            }
        }
        drop(inner);
        if out.requires_grad() {
            let weak = self.this.clone();
            let hooked = on_grad(&out, move || {
                if let Some(rt) = weak.upgrade() {
                    rt.pre_backward(unit);
                }
            });
            if let Err(e) = hooked {
                fatal("hooking a unit's backward", e);
            }
        }
        out
    }
}

/// The collectives the step itself makes (the loss's) while FSDP's run on the comm stream: on
/// CUDA each first makes the caller's stream wait for the comm stream, so that every GPU runs
/// all collectives in the order the host issued them. A plain pass-through on the CPU.
pub(crate) struct Ordered<'a> {
    pub comm: &'a dyn Collectives,
    pub cuda: Option<(usize, Stream)>,
}

impl Ordered<'_> {
    fn settle(&self) -> clip_dist::Result<()> {
        let Some((device, comm_stream)) = &self.cuda else {
            return Ok(());
        };
        Stream::current(*device)
            .and_then(|s| s.wait_stream(comm_stream))
            .map_err(|e| {
                clip_dist::Error::Unavailable(format!("ordering after FSDP's collectives: {e:#}"))
            })
    }
}

impl Collectives for Ordered<'_> {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> clip_dist::Result<()> {
        self.settle()?;
        self.comm.all_reduce(t, op)
    }
    fn all_gather(&self, t: &Tensor) -> clip_dist::Result<Tensor> {
        self.settle()?;
        self.comm.all_gather(t)
    }
    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> clip_dist::Result<Tensor> {
        self.settle()?;
        self.comm.reduce_scatter(t, op)
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> clip_dist::Result<()> {
        self.settle()?;
        self.comm.broadcast(t, root)
    }
    fn barrier(&self) -> clip_dist::Result<()> {
        self.settle()?;
        self.comm.barrier()
    }
    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> clip_dist::Result<()> {
        self.settle()?;
        self.comm.send_recv(sends, recvs)
    }
    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> clip_dist::Result<Vec<u8>> {
        self.comm.broadcast_bytes(bytes, root)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> clip_dist::Result<Vec<Vec<u8>>> {
        self.comm.all_gather_bytes(bytes)
    }
    // Host bytes over the control tree: no device work to order after.
    fn gather_bytes(&self, bytes: &[u8]) -> clip_dist::Result<Vec<Vec<u8>>> {
        self.comm.gather_bytes(bytes)
    }
    fn any_of(&self, flags: &[bool]) -> clip_dist::Result<Vec<bool>> {
        self.comm.any_of(flags)
    }
}
