//! The gradient all-reduce of data parallelism, overlapped with the backward as PyTorch DDP does
//! (`gradient_as_bucket_view=True`, `static_graph=True`).
//!
//! **Gradients live in flat buckets.** Every trainable parameter's gradient is a view into one
//! flat tensor per bucket (buckets hold parameters of one dtype, in reverse parameter order —
//! roughly the order the backward produces them — up to `CLIP_TRAIN_DDP_BUCKET_CAP_MB`, DDP's
//! `bucket_cap_mb`, 25 by default). The backward adds into the views in place (AccumulateGrad's
//! `grad += new` when `.grad` is defined), so nothing is concatenated before the all-reduce nor
//! copied back after it.
//!
//! **The contract with the optimizer and everything else that reads `.grad`:**
//! [`GradBuckets::reduce_during`] zeroes the buckets and assigns every parameter's `.grad` to its
//! view *before* running the step's backwards, every step. Between steps anyone may read the
//! gradients, modify them in place (unscale, clip), zero them, or set them to None
//! (`zero_grad(set_to_none=True)`): the next step reassigns the views. Only assigning `.grad` a
//! different tensor *during* the backward breaks the contract (the reduction would miss it).
//!
//! **A bucket is reduced as soon as its last gradient is in.** Each parameter carries a
//! post-accumulate-grad hook (`torch_ext::grad_hooks`, the AccumulateGrad hook DDP's reducer
//! uses) that counts the backwards that reached it this step. The first step learns how many
//! that is per parameter (`--accum-freq` K: K for the towers, 1 for `logit_scale` /
//! `logit_bias`, whose gradient comes from the loss's own backward; gradient checkpointing still
//! accumulates once per backward) and reduces after the backward; from the second step on, a
//! bucket whose parameters have all reached their count is handed to a communication thread
//! while the backward goes on — so with K micro-batches only the last backward launches
//! reductions, as DDP's `no_sync`. Buckets are launched in bucket order on every rank, whatever
//! order they complete in. A step whose counts differ from the first's fails naming the
//! parameter. `CLIP_TRAIN_DDP_OVERLAP=0` reduces the same buckets after the whole backward on the
//! calling thread (the benchmark's and the tests' reference).
//!
//! **One collective at a time.** The loss's own collectives run on the training thread during
//! the step: the backend given to the step ([`Quiet`]) first waits until the communication
//! thread is idle, so every rank issues its collectives in the same order (the CPU backend's
//! mesh and a NCCL communicator take one caller at a time, in the same order everywhere).
//!
//! **Bits.** The all-reduce is elementwise (rank order, in `--grad-reduce-dtype`; a bucket of
//! another dtype is cast to it and back, as the concatenated reduction did), so how the
//! parameters are bucketed and when a bucket runs cannot change a single bit: every rank holds
//! the same averaged gradient, and overlapped, non-overlapped and the former
//! concatenate-and-copy reduction give the same weights (`tests/it/distributed.rs`).
//!
//! **Streams (CUDA).** As DDP's NCCL process group, the overlapped all-reduces run on a
//! communication stream of their own (one of torch's pool, taken once), not behind the backward's
//! kernels on the compute stream. When a bucket is launched, the hook — on autograd's device
//! thread, whose current stream is the one the gradients were accumulated on (the forward's) —
//! records an event there; the communication thread holds a stream guard for the comm stream (a
//! new thread's current stream would be the legacy default stream), makes the comm stream wait
//! for that event, and runs the cast to `--grad-reduce-dtype`, NCCL (which reads the current
//! stream) and the cast back there. Before the step returns to the optimizer, the training
//! thread's current stream waits for the comm stream (an event after the last bucket's
//! reduction), and so do the step's own collectives while buckets are in flight (`Quiet`, so every
//! GPU also runs the collectives in the same order): no host synchronisation anywhere. The
//! buckets, allocated on the compute stream and used on the comm stream, are `record_stream`ed to
//! it. The first step and `CLIP_TRAIN_DDP_OVERLAP=0` reduce on the training thread's current
//! stream; on the CPU nothing changes (no streams, the communication thread as described).

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Result};
use clip_dist::{Collectives, ReduceOp};
use tch::{Device, Kind, Tensor};
use torch_ext::cuda::{record_stream, Event, Stream, StreamGuard};
use torch_ext::grad_hooks::{set_grad, PostAccumulateGradHook};

use crate::fault::{self, Delay, Fault};

/// DDP's default `bucket_cap_mb`.
const DEFAULT_BUCKET_CAP_MB: f64 = 25.0;

/// How the gradients are bucketed and when they are reduced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketOptions {
    /// Reduce each bucket during the backward (false: all after it).
    pub overlap: bool,
    /// Bytes per bucket (a larger parameter gets a bucket of its own).
    pub cap_bytes: usize,
}

impl Default for BucketOptions {
    fn default() -> Self {
        BucketOptions {
            overlap: true,
            cap_bytes: (DEFAULT_BUCKET_CAP_MB * 1024.0 * 1024.0) as usize,
        }
    }
}

impl BucketOptions {
    /// `CLIP_TRAIN_DDP_OVERLAP` (1 default, 0) and `CLIP_TRAIN_DDP_BUCKET_CAP_MB` (MiB > 0).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut opts = BucketOptions::default();
        if let Some(v) = env("CLIP_TRAIN_DDP_OVERLAP") {
            opts.overlap = match v.as_str() {
                "1" => true,
                "0" => false,
                _ => bail!("CLIP_TRAIN_DDP_OVERLAP={v}: expected 0 or 1"),
            };
        }
        if let Some(v) = env("CLIP_TRAIN_DDP_BUCKET_CAP_MB") {
            match v.parse::<f64>() {
                Ok(mb) if mb > 0.0 && mb.is_finite() => {
                    opts.cap_bytes = ((mb * 1024.0 * 1024.0) as usize).max(1)
                }
                _ => bail!("CLIP_TRAIN_DDP_BUCKET_CAP_MB={v}: expected a positive number of MiB"),
            }
        }
        Ok(opts)
    }
}

/// What the hooks and the communication thread share.
#[derive(Default)]
struct Progress {
    /// Backwards that accumulated into each parameter this step.
    fired: Vec<u32>,
    /// Per parameter, the first step's `fired`: the step's last gradient is in at this count.
    expected: Option<Vec<u32>>,
    /// Per bucket, parameters still short of their count (overlapped steps only).
    pending: Vec<usize>,
    /// The next bucket to launch: buckets go to the communication thread in order.
    next: usize,
    /// Set while a step overlaps: where launched buckets go.
    launch: Option<Sender<Launch>>,
    /// Buckets launched and not yet reduced.
    in_flight: usize,
    /// A parameter that got a gradient after its bucket was launched.
    late: Option<usize>,
    /// Steps run, and the buckets the last one launched during its backward.
    steps: u64,
    launched_in_backward: usize,
    /// The backwards of this step delayed so far (`CLIP_TRAIN_DELAY=grads`).
    delayed: u32,
}

/// A bucket handed to the communication thread and, on CUDA, an event recorded on the stream
/// that produced its gradients after their kernels (the communication stream waits for it).
type Launch = (usize, Result<Option<Event>>);

struct Shared {
    progress: Mutex<Progress>,
    idle: Condvar,
    /// Bucket of each parameter.
    bucket_of: Vec<usize>,
    /// The CUDA device the buckets live on (None: on the CPU, no streams).
    cuda: Option<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hook of parameter `i`: counts, and launches the buckets now complete, in order.
    fn ready(&self, i: usize) {
        let mut p = self.lock();
        p.fired[i] += 1;
        self.delay_gradients(&mut p, i);
        let Some(expected) = p.expected.as_ref().map(|e| e[i]) else {
            return;
        };
        if p.launch.is_none() || p.fired[i] < expected {
            return;
        }
        if p.fired[i] > expected {
            p.late.get_or_insert(i);
            return;
        }
        let b = self.bucket_of[i];
        p.pending[b] -= 1;
        while p.next < p.pending.len() && p.pending[p.next] == 0 {
            let launch = (p.next, self.produced());
            // The receiver lives until the launch sender is taken away.
            let _ = p.launch.as_ref().map(|tx| tx.send(launch));
            p.in_flight += 1;
            p.next += 1;
        }
    }

    /// `CLIP_TRAIN_DELAY=grads` (the negative controls' setting, `fault.rs`): at the first hook
    /// of each backward of an overlapped step, the compute stream is kept busy, so the rest of
    /// the backward's gradients are written long after their buckets are launched — only the
    /// communication stream's wait for the event orders the all-reduce after them.
    fn delay_gradients(&self, p: &mut Progress, i: usize) {
        let Some(device) = self.cuda else { return };
        if p.launch.is_some() && p.fired[i] > p.delayed && fault::delayed(Delay::Grads) {
            p.delayed = p.fired[i];
            // A failure is the device's: the backward's own kernels report it.
            let _ = torch_ext::cuda::occupy(device, 100);
        }
    }

    /// On CUDA, an event after the kernels enqueued so far on this thread's current stream: the
    /// hook runs on autograd's device thread, whose current stream is the one the backward
    /// accumulates the gradients on (the forward's).
    fn produced(&self) -> Result<Option<Event>> {
        self.cuda
            .map(|d| Stream::current(d)?.record_event())
            .transpose()
    }

    /// Blocks while the communication thread has buckets to reduce.
    fn wait_idle(&self) {
        let mut p = self.lock();
        while p.in_flight > 0 {
            p = self.idle.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The trainable parameters' gradients as views into flat all-reduce buckets (see the module
/// documentation for the contract). In a world of one there are no buckets and no hooks.
pub struct GradBuckets {
    names: Vec<String>,
    params: Vec<Tensor>,
    /// Each parameter's gradient view into its bucket.
    views: Vec<Tensor>,
    flats: Vec<Tensor>,
    dtype: Kind,
    opts: BucketOptions,
    shared: Arc<Shared>,
    /// On CUDA, the stream the overlapped all-reduces run on (one of torch's pool).
    comm_stream: Option<Stream>,
    _hooks: Vec<PostAccumulateGradHook>,
}

/// Where each parameter's gradient lives: (bucket, offset in elements).
type Placement = Vec<(usize, i64)>;

/// Buckets in reverse parameter order, one open bucket per dtype; returns each parameter's
/// place and each bucket's (dtype, elements).
fn assign(params: &[Tensor], cap_bytes: usize) -> (Placement, Vec<(Kind, i64)>) {
    let mut buckets: Vec<(Kind, i64)> = vec![];
    let mut open: Vec<(Kind, usize)> = vec![];
    let mut place = vec![(0, 0); params.len()];
    for (i, p) in params.iter().enumerate().rev() {
        let (kind, n) = (p.kind(), p.numel() as i64);
        let bytes = |elements: i64| elements as usize * kind.elt_size_in_bytes();
        let current = open.iter().find(|(k, _)| *k == kind).map(|(_, b)| *b);
        let b = match current {
            Some(b) if bytes(buckets[b].1 + n) <= cap_bytes || buckets[b].1 == 0 => b,
            _ => {
                buckets.push((kind, 0));
                open.retain(|(k, _)| *k != kind);
                open.push((kind, buckets.len() - 1));
                buckets.len() - 1
            }
        };
        place[i] = (b, buckets[b].1);
        buckets[b].1 += n;
    }
    (place, buckets)
}

impl GradBuckets {
    /// Buckets for `params` (all requiring grad), reduced in `dtype` over the ranks — unless
    /// `reduced` is false (a world of one on the local stand-in: nothing to reduce, no buckets).
    pub fn new(
        params: &[(String, Tensor)],
        dtype: Kind,
        opts: BucketOptions,
        reduced: bool,
    ) -> Result<Self> {
        let params = if reduced { params } else { &[][..] };
        let tensors: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        let (place, sizes) = assign(&tensors, opts.cap_bytes);
        let flats: Vec<Tensor> = tch::no_grad(|| {
            sizes
                .iter()
                .map(|&(kind, n)| Tensor::zeros([n], (kind, tensors[0].device())))
                .collect()
        });
        let views = tch::no_grad(|| {
            place
                .iter()
                .zip(&tensors)
                .map(|(&(b, at), p)| {
                    flats[b]
                        .narrow(0, at, p.numel() as i64)
                        .view(p.size().as_slice())
                })
                .collect()
        });
        let cuda = match tensors.first().map(|t| t.device()) {
            Some(Device::Cuda(d)) => Some(d),
            _ => None,
        };
        let comm_stream = cuda.map(Stream::from_pool).transpose()?;
        if let Some(stream) = &comm_stream {
            // Allocated on the compute stream, read and written on the communication stream.
            for f in &flats {
                record_stream(f, stream)?;
            }
        }
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            idle: Condvar::new(),
            bucket_of: place.iter().map(|&(b, _)| b).collect(),
            cuda,
        });
        let hooks = tensors
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let shared = Arc::clone(&shared);
                PostAccumulateGradHook::register(p, move || shared.ready(i))
            })
            .collect::<Result<_>>()?;
        Ok(GradBuckets {
            names: params.iter().map(|(k, _)| k.clone()).collect(),
            params: tensors,
            views,
            flats,
            dtype,
            opts,
            shared,
            comm_stream,
            _hooks: hooks,
        })
    }

    /// Whether the buckets own the gradients (they are zeroed and reassigned every step; false
    /// in a world of one, where the optimizer's `zero_grad` keeps them).
    pub fn own_grads(&self) -> bool {
        !self.params.is_empty()
    }

    /// Runs `backward` — the step's forwards and backwards, given the collectives to use meanwhile
    /// — with every gradient a view into its bucket, and leaves every gradient averaged over the
    /// ranks: bucket by bucket during the backward, or after it (first step, or
    /// `CLIP_TRAIN_DDP_OVERLAP=0`).
    pub fn reduce_during<T>(
        &self,
        comm: &dyn Collectives,
        backward: impl FnOnce(&dyn Collectives) -> Result<T>,
    ) -> Result<T> {
        if !self.own_grads() {
            return backward(comm);
        }
        self.attach()?;
        let overlap = self.opts.overlap && self.shared.lock().expected.is_some();
        if !overlap {
            let out = backward(comm)?;
            self.check_counts()?;
            for flat in &self.flats {
                reduce_mean(flat, self.dtype, comm)?;
            }
            return Ok(out);
        }
        std::thread::scope(|s| {
            let (tx, rx) = channel::<Launch>();
            self.shared.lock().launch = Some(tx);
            let flats: Vec<Tensor> = self.flats.iter().map(|f| f.shallow_clone()).collect();
            let (shared, dtype, stream) = (Arc::clone(&self.shared), self.dtype, self.comm_stream);
            let comm_thread = s.spawn(move || -> Result<()> {
                // NCCL (and any cast) runs on this thread's current stream: the comm stream.
                let (_on_comm_stream, mut result) = match stream.map(StreamGuard::new).transpose() {
                    Ok(guard) => (guard, Ok(())),
                    Err(e) => (None, Err(e)),
                };
                for (b, produced) in rx {
                    if result.is_ok() {
                        result = reduce_launched(&flats[b], produced, stream, dtype, comm);
                    }
                    shared.lock().in_flight -= 1;
                    shared.idle.notify_all();
                }
                result
            });
            let out = backward(&Quiet {
                comm,
                shared: &self.shared,
                comm_stream: self.comm_stream,
            });
            // Ends the communication thread once the buckets launched are reduced.
            let mut p = self.shared.lock();
            (p.launch, p.launched_in_backward) = (None, p.next);
            drop(p);
            let reduced = comm_thread
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the gradient communication thread panicked")));
            let out = out?;
            reduced?;
            // The optimizer reads the gradients on this thread's current stream: it waits (on
            // the GPU) for the comm stream's last bucket.
            if let Some(comm_stream) = &self.comm_stream {
                Stream::current(comm_stream.device())?.wait_stream(comm_stream)?;
            }
            self.check_counts()?;
            Ok(out)
        })
    }

    /// After this process's second step (the first that can overlap), one line for the log: how
    /// many buckets there are and how many were all-reduced during the backward.
    pub fn report(&self) -> Option<String> {
        let p = self.shared.lock();
        (p.steps == 2).then(|| {
            format!(
                "DDP gradient buckets: {}, all-reduced during the backward: {}",
                self.flats.len(),
                p.launched_in_backward
            )
        })
    }

    /// Zeroes the buckets, makes every `.grad` its view and resets the step's counts.
    fn attach(&self) -> Result<()> {
        tch::no_grad(|| {
            for f in &self.flats {
                let _ = f.shallow_clone().zero_();
            }
        });
        for (p, v) in self.params.iter().zip(&self.views) {
            set_grad(p, v)?;
        }
        let mut p = self.shared.lock();
        p.fired = vec![0; self.params.len()];
        p.pending = vec![0; self.flats.len()];
        for &b in &self.shared.bucket_of {
            p.pending[b] += 1;
        }
        p.next = 0;
        p.late = None;
        p.steps += 1;
        p.launched_in_backward = 0;
        p.delayed = 0;
        Ok(())
    }

    /// After the step's backwards: every parameter got a gradient, and (from the second step
    /// on) exactly as many as in the first step — else the overlapped reduction was wrong.
    fn check_counts(&self) -> Result<()> {
        let mut p = self.shared.lock();
        if let Some(i) = p.fired.iter().position(|&n| n == 0) {
            bail!("parameter {} got no gradient this step", self.names[i]);
        }
        if let Some(i) = p.late {
            bail!(
                "parameter {} got a gradient after its bucket was all-reduced (more backwards reached it than in the first step)",
                self.names[i]
            );
        }
        match &p.expected {
            None => p.expected = Some(p.fired.clone()),
            Some(e) => {
                if let Some(i) = (0..e.len()).find(|&i| e[i] != p.fired[i]) {
                    bail!(
                        "parameter {} got {} gradients this step, {} in the first: the backward must reach the same parameters every step",
                        self.names[i],
                        p.fired[i],
                        e[i]
                    );
                }
            }
        }
        Ok(())
    }
}

/// On the communication thread, a launched bucket: on CUDA the comm stream (current on this
/// thread) first waits for the event after the kernels that produced its gradients, so the
/// reduction runs after them and alongside the rest of the backward.
fn reduce_launched(
    flat: &Tensor,
    produced: Result<Option<Event>>,
    comm_stream: Option<Stream>,
    dtype: Kind,
    comm: &dyn Collectives,
) -> Result<()> {
    if let (Some(stream), Some(event)) = (comm_stream, produced?) {
        // The planted fault of a negative control (`fault.rs`) skips the one wait that matters.
        if !fault::planted(Fault::SkipCommWait) {
            stream.wait_event(&event)?;
        }
    }
    reduce_mean(flat, dtype, comm)
}

/// Replaces `flat` (a bucket) with its mean over the ranks, computed in `dtype` (the sum under
/// the planted fault `sum-grads`, `fault.rs`).
fn reduce_mean(flat: &Tensor, dtype: Kind, comm: &dyn Collectives) -> Result<()> {
    let op = match fault::planted(Fault::SumGrads) {
        true => ReduceOp::Sum,
        false => ReduceOp::Mean,
    };
    tch::no_grad(|| {
        let mut flat = flat.shallow_clone();
        if flat.kind() == dtype {
            comm.all_reduce(&mut flat, op)?;
        } else {
            let mut cast = flat.to_kind(dtype);
            comm.all_reduce(&mut cast, op)?;
            flat.copy_(&cast);
        }
        Ok(())
    })
}

/// The collectives the step itself uses while buckets are in flight: each call first waits for
/// the communication thread to go idle, so collectives leave every rank in the same order — and
/// on CUDA the caller's current stream waits for the comm stream, so they also run on every GPU
/// in that order (the step's collectives are on the compute stream, the buckets' on the comm
/// stream).
struct Quiet<'a> {
    comm: &'a dyn Collectives,
    shared: &'a Shared,
    comm_stream: Option<Stream>,
}

impl Quiet<'_> {
    fn wait_idle(&self) -> clip_dist::Result<()> {
        self.shared.wait_idle();
        let Some(comm_stream) = &self.comm_stream else {
            return Ok(());
        };
        Stream::current(comm_stream.device())
            .and_then(|current| current.wait_stream(comm_stream))
            .map_err(|e| {
                clip_dist::Error::Unavailable(format!(
                    "ordering after the gradient buckets' all-reduces: {e:#}"
                ))
            })
    }
}

impl Collectives for Quiet<'_> {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> clip_dist::Result<()> {
        self.wait_idle()?;
        self.comm.all_reduce(t, op)
    }
    fn all_gather(&self, t: &Tensor) -> clip_dist::Result<Tensor> {
        self.wait_idle()?;
        self.comm.all_gather(t)
    }
    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> clip_dist::Result<Tensor> {
        self.wait_idle()?;
        self.comm.reduce_scatter(t, op)
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> clip_dist::Result<()> {
        self.wait_idle()?;
        self.comm.broadcast(t, root)
    }
    fn barrier(&self) -> clip_dist::Result<()> {
        self.wait_idle()?;
        self.comm.barrier()
    }
    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> clip_dist::Result<()> {
        self.wait_idle()?;
        self.comm.send_recv(sends, recvs)
    }
    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> clip_dist::Result<Vec<u8>> {
        self.wait_idle()?;
        self.comm.broadcast_bytes(bytes, root)
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> clip_dist::Result<Vec<Vec<u8>>> {
        self.wait_idle()?;
        self.comm.all_gather_bytes(bytes)
    }
    fn gather_bytes(&self, bytes: &[u8]) -> clip_dist::Result<Vec<Vec<u8>>> {
        self.wait_idle()?;
        self.comm.gather_bytes(bytes)
    }
    fn any_of(&self, flags: &[bool]) -> clip_dist::Result<Vec<bool>> {
        self.wait_idle()?;
        self.comm.any_of(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn buckets_take_parameters_in_reverse_order_by_dtype_up_to_the_cap() {
        let t = |n: i64, kind| Tensor::zeros([n], (kind, Device::Cpu));
        let params = [
            t(10, Kind::Float),
            t(3, Kind::BFloat16),
            t(4, Kind::Float),
            t(30, Kind::Float),
            t(2, Kind::Float),
        ];
        // 64 bytes: 16 f32 or 32 bf16 elements; a larger parameter gets a bucket of its own.
        let (place, buckets) = assign(&params, 64);
        let f = Kind::Float;
        assert_eq!(buckets, vec![(f, 2), (f, 30), (f, 14), (Kind::BFloat16, 3)]);
        assert_eq!(place, vec![(2, 4), (3, 0), (2, 0), (1, 0), (0, 0)]);
    }

    #[test]
    fn options_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            BucketOptions::from_env(&env(&[])).unwrap(),
            BucketOptions::default()
        );
        let o = BucketOptions::from_env(&env(&[
            ("CLIP_TRAIN_DDP_OVERLAP", "0"),
            ("CLIP_TRAIN_DDP_BUCKET_CAP_MB", "0.5"),
        ]))
        .unwrap();
        assert_eq!((o.overlap, o.cap_bytes), (false, 512 * 1024));
        for bad in [
            ("CLIP_TRAIN_DDP_OVERLAP", "yes"),
            ("CLIP_TRAIN_DDP_BUCKET_CAP_MB", "0"),
        ] {
            let e = BucketOptions::from_env(&move |k: &str| (k == bad.0).then(|| bad.1.into()));
            assert!(e.unwrap_err().to_string().contains(bad.0));
        }
    }
}
