//! Data-parallel plumbing for clip-train, with OpenCLIP's semantics
//! (`open_clip_train/distributed.py`): who this process is ([`WorldInfo`]), a rank-0 TCP store
//! for rendezvous and diagnosis ([`store`]), collectives over tensors behind one trait
//! ([`Collectives`]: CPU over TCP, NCCL on CUDA, or the trivial world of one), host collectives
//! (flags, bytes) over a control tree of TCP links on every backend, and a watchdog so a dead or
//! hung rank ends the job instead of hanging it. Nothing on a step's path goes through the
//! store: at W ranks each rank sends O(1) messages per call, and rank 0 no more than the others.
//!
//! Every call returns [`Error`], whose [`Error::fault`] tells a launch mistake from a failed job
//! (another rank died, hung or disagrees) and from a failure of this process.
//!
//! ```no_run
//! # fn main() -> clip_dist::Result<()> {
//! use clip_dist::{Backend, InitOptions, ReduceOp, WorldInfo};
//! let world = WorldInfo::from_env()?;
//! let opts = InitOptions::from_env(&world, None, Backend::Cpu)?;
//! let mut dist = clip_dist::init(world, opts)?;
//! dist.start_watchdog(clip_dist::timeout_from_env(|k| std::env::var(k).ok())?)?;
//! let mut grad = tch::Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu));
//! dist.collectives().all_reduce(&mut grad, ReduceOp::Mean)?;
//! let name = dist.collectives().broadcast_bytes(b"run-name", 0)?;
//! dist.heartbeat(1)?;
//! dist.shutdown()?;
//! # Ok(()) }
//! ```

mod device;
mod error;
mod flight;
mod group;
mod host;
mod links;
mod local;
mod nccl;
pub mod store;
mod tcp;
mod tree;
mod watchdog;
mod world;

pub use device::{
    cuda_runtime_here, driver_problem, driver_problem_here, local_cuda_device,
    local_cuda_device_from_env, min_driver, parse_driver_version, several_visible_problem,
    several_visible_problem_here, DRIVER_VERSION_FILE,
};
pub use error::{Error, Fault, Result, EXIT_DIST_FAILURE, EXIT_USAGE};
pub use store::{verdict, RankState, RankStatus, StoreClient, StoreServer, StoreStats};
pub use world::{
    is_using_distributed, is_using_distributed_with, master_from_env, parse_dist_url,
    timeout_from_env, WorldInfo, DEFAULT_TIMEOUT, LOCAL_RANK_VARS, RANK_VARS, TIMEOUT_VAR,
    WORLD_SIZE_VARS,
};

use group::Group;
use links::Links;
use local::LocalCollectives;
use nccl::NcclCollectives;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Tensor;
use tcp::TcpCollectives;
use watchdog::Watchdog;

/// How a reduction combines ranks' tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size.
    Mean,
}

/// Collectives, the same on every backend. Every rank must make the same calls in the same
/// order; tensors must have the same shape and dtype on every rank (f32 and bf16; f64 and i64
/// too, i64 without mean). Results are bitwise identical on every rank and from run to run.
pub trait Collectives: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// In place: every rank ends with the elementwise reduction of all ranks' `t`.
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()>;
    /// Every rank's `t` concatenated along dim 0 in rank order (a 0-dim `t` gives `[W]`).
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// `t` is `[W·n, …]`; this rank gets rows `rank·n .. (rank+1)·n` of the elementwise
    /// reduction of all ranks' `t`.
    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor>;
    /// In place: every rank ends with rank `root`'s `t`.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Point to point, all at once (`torch.distributed.batch_isend_irecv`, which OpenCLIP's
    /// SigLIP neighbour exchange uses): sends each `(peer, tensor)` of `sends` and receives into
    /// each `(peer, tensor)` of `recvs`, in place. At most one message each way per peer, never
    /// to or from this rank itself; each peer makes the matching call, and a message must have
    /// the shape and dtype of the tensor it arrives in. Unlike the collectives, only the ranks
    /// named take part.
    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> Result<()>;
    /// Rank `root`'s `bytes` on every rank. Any length, host bytes over the control tree on
    /// every backend (up the root's path to rank 0, then down to every rank): for names, paths
    /// and JSON, not for tensors.
    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>>;
    /// Every rank's `bytes` (lengths may differ), in rank order, on every rank; over the
    /// control tree like [`Collectives::broadcast_bytes`] (every rank receives all of them).
    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Every rank's `bytes` (lengths may differ), in rank order, on rank 0 only (an empty list
    /// on the others): each rank sends its subtree's up the control tree once, so rank 0 takes
    /// a few messages, not W − 1 round trips.
    fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// True where any rank's flag is true, on every rank (every rank passes as many flags): the
    /// per-step agreement. Host bytes over the control tree: O(1) messages per rank whatever
    /// the world size, no device sync, nothing through the store.
    fn any_of(&self, flags: &[bool]) -> Result<Vec<bool>>;
}

/// Which collectives to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// TCP between processes, tensors staged on the host (gloo's role).
    Cpu,
    /// NCCL on `cuda:device_index` (the local rank, as OpenCLIP sets it).
    Nccl { device_index: usize },
}

/// How to reach rank 0 and how long to wait for anything.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub master_addr: String,
    pub master_port: u16,
    /// Connecting to the store, the rendezvous, store waits, and each CPU collective read.
    pub timeout: Duration,
    pub backend: Backend,
    /// Runs the backend even in a world of one instead of the local stand-in, so one GPU
    /// exercises NCCL (`CLIP_DIST_BACKEND_AT_WORLD_1=1`). Only NCCL: the CPU backend needs
    /// peers.
    pub backend_at_world_1: bool,
}

/// The variable that sets [`InitOptions::backend_at_world_1`].
pub const BACKEND_AT_WORLD_1_VAR: &str = "CLIP_DIST_BACKEND_AT_WORLD_1";

impl InitOptions {
    /// Rank 0's address from `--dist-url tcp://…` or MASTER_ADDR / MASTER_PORT (not needed, and
    /// not read, in a world of one), the timeout from `CLIP_DIST_TIMEOUT` (default 1800 s).
    pub fn from_env(world: &WorldInfo, dist_url: Option<&str>, backend: Backend) -> Result<Self> {
        let env = |k: &str| std::env::var(k).ok();
        let (master_addr, master_port) = if world.world_size > 1 {
            master_from_env(dist_url, env)?
        } else {
            ("127.0.0.1".to_string(), 0)
        };
        Ok(InitOptions {
            master_addr,
            master_port,
            timeout: timeout_from_env(env)?,
            backend,
            backend_at_world_1: env(BACKEND_AT_WORLD_1_VAR).as_deref() == Some("1"),
        })
    }

    /// Whether a world of `world_size` runs the backend's collectives (false: a world of one on
    /// the local stand-in, whose collectives do nothing).
    pub fn runs_backend(&self, world_size: usize) -> bool {
        world_size > 1 || (self.backend_at_world_1 && matches!(self.backend, Backend::Nccl { .. }))
    }
}

/// The network side of a multi-process [`Dist`] (its store client is the group's).
struct Net {
    opts: InitOptions,
    /// Rank 0 serves the store.
    server: Option<StoreServer>,
}

/// This process's membership in the job: its [`WorldInfo`], the store, the collectives and the
/// watchdog.
pub struct Dist {
    world: WorldInfo,
    group: Group,
    watchdog: Option<Watchdog>,
    net: Option<Net>,
    /// When the last heartbeat was sent ([`Dist::heartbeat`] sends at most one per
    /// [`Dist::beat_every`]), in milliseconds since `started`.
    last_beat: AtomicU64,
    started: Instant,
    beat_every: Duration,
}

/// The most time between two heartbeats a training step sends: the watchdog's timeout is
/// minutes, a beat per second tells it everything, and rank 0 then hears W beats a second
/// rather than W per step.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Joins the job: rank 0 starts the store, every rank connects and waits for all `world_size`
/// ranks, then the backend connects. A world of one needs no network (and no address).
pub fn init(world: WorldInfo, opts: InitOptions) -> Result<Dist> {
    let (rank, size) = (world.rank, world.world_size);
    if size == 1 {
        let transport: Box<dyn group::Transport> = match opts.backend {
            Backend::Nccl { device_index } if opts.runs_backend(size) => {
                Box::new(NcclCollectives::new(None, rank, size, device_index)?)
            }
            _ => Box::new(LocalCollectives),
        };
        return Ok(Dist::new(
            world,
            Group::new(rank, size, transport, None, None),
            None,
        ));
    }
    let server = if rank == 0 {
        Some(StoreServer::start(opts.master_port, size)?)
    } else {
        None
    };
    let store = Arc::new(StoreClient::connect(
        &opts.master_addr,
        opts.master_port,
        rank,
        size,
        opts.timeout,
    )?);
    if let Err(e) = store.rendezvous() {
        // Rank 0 hosts the store: it stays until the other ranks have their error too.
        if let Some(server) = &server {
            drop(store);
            server.wait_until_all_left(opts.timeout);
        }
        return Err(e);
    }
    let links = Arc::new(Links::start(store.clone(), rank, size, opts.timeout)?);
    let tree = tree::Tree::connect(&links, rank, size, opts.timeout)?;
    let transport: Box<dyn group::Transport> = match opts.backend {
        Backend::Cpu => Box::new(TcpCollectives::connect(links, rank, size, opts.timeout)?),
        Backend::Nccl { device_index } => Box::new(NcclCollectives::new(
            Some(&store),
            rank,
            size,
            device_index,
        )?),
    };
    let group = Group::new(rank, size, transport, Some(store), Some(tree));
    Ok(Dist::new(world, group, Some(Net { opts, server })))
}

impl Dist {
    fn new(world: WorldInfo, group: Group, net: Option<Net>) -> Dist {
        Dist {
            world,
            group,
            watchdog: None,
            net,
            last_beat: AtomicU64::new(0),
            started: Instant::now(),
            beat_every: HEARTBEAT_EVERY,
        }
    }

    pub fn world(&self) -> WorldInfo {
        self.world
    }

    pub fn rank(&self) -> usize {
        self.world.rank
    }

    pub fn world_size(&self) -> usize {
        self.world.world_size
    }

    pub fn collectives(&self) -> &dyn Collectives {
        &self.group
    }

    /// The store (`None` in a world of one), for small exchanges of the trainer's own.
    pub fn store(&self) -> Option<&StoreClient> {
        self.group.store()
    }

    /// Posts this rank's progress for the watchdog; call once per training step. At most one
    /// small write (no round trip) per second, or per eighth of the watchdog's timeout when
    /// that is shorter: calls in between send nothing.
    pub fn heartbeat(&self, step: u64) -> Result<()> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_beat.load(Ordering::Relaxed);
        if last != 0 && now < last + self.beat_every.as_millis() as u64 {
            return Ok(());
        }
        self.last_beat.store(now.max(1), Ordering::Relaxed);
        store.heartbeat(step)
    }

    /// What rank 0's store has served so far (`None` on other ranks and in a world of one):
    /// what `clip-tool sim-ranks` measures.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.net.as_ref()?.server.as_ref().map(StoreServer::stats)
    }

    /// Starts the watchdog thread: about once a second it publishes this rank's newest
    /// collective, polls the backend's asynchronous errors and asks the store, and ends the
    /// process with [`EXIT_DIST_FAILURE`] and one line on stderr when a rank died, a rank's
    /// heartbeat is older than `timeout`, the store is gone or the backend failed; on a timeout
    /// the flight recorder follows that line (this rank's last calls, and the ranks that never
    /// entered the collective the others wait in), and NCCL's calls in flight are aborted first.
    pub fn start_watchdog(&mut self, timeout: Duration) -> Result<()> {
        let Some(net) = &self.net else {
            return Ok(());
        };
        // Its own connection with a short timeout: a vanished rank 0 must be noticed quickly.
        let monitor = StoreClient::connect_monitor(
            &net.opts.master_addr,
            net.opts.master_port,
            Duration::from_secs(10).min(net.opts.timeout),
        )?;
        let watchdog = Watchdog::spawn(watchdog::Watched {
            monitor,
            timeout,
            hosts_store: net.server.is_some(),
            world: self.world.world_size,
            recorder: self.group.recorder(),
            transport: self.group.transport(),
        })
        .map_err(Error::io("starting the watchdog"))?;
        self.watchdog = Some(watchdog);
        self.beat_every = HEARTBEAT_EVERY.min(timeout / 8);
        Ok(())
    }

    /// Leaves the job cleanly: waits for every rank in a collective barrier (still under the
    /// watchdog: a NCCL barrier cannot time out), stops the watchdog, waits for every rank at the
    /// store, and says goodbye so nobody reads this rank's exit as a death. Rank 0 then waits for
    /// the others to leave before its store goes away. Dropping a `Dist` without this is what a
    /// crash looks like to the other ranks.
    pub fn shutdown(mut self) -> Result<()> {
        let Some(net) = self.net.take() else {
            return Ok(());
        };
        self.group.barrier()?;
        drop(self.watchdog.take());
        if let Some(store) = self.group.store() {
            store.barrier(self.world.world_size)?;
            store.bye()?;
        }
        // Closes this rank's store connection.
        drop(self.group);
        if let Some(server) = &net.server {
            server.wait_until_all_left(net.opts.timeout);
        }
        Ok(())
    }
}
