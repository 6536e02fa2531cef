//! `clip-tool sim-ranks`: the trainer's control path for W simulated ranks on one machine, to
//! see what a 512-rank job costs rank 0 before one runs. Every rank is a thread of this process
//! with a clip-dist membership of its own — rank 0's real store, real TCP links over loopback,
//! the CPU backend, the watchdog — and runs, without a model, the functions the trainer calls:
//! [`control::shards_ran_out`] and [`control::after_step`] every step; on a log step also
//! [`Divergence::check`] and [`ddp::global_loss`]; at a checkpoint `Divergence::check` and
//! [`Checkpointer::save`] (every rank's data position gathered, rank 0 writing); at an
//! evaluation [`val::in_order`], [`zeroshot::gather_classifier`] and [`zeroshot::sum_counts`]
//! on features of the real sizes, heartbeating per batch. For each world size and kind of
//! step it prints the store's requests and bytes per step, the step's milliseconds (the slowest
//! rank's; median and p99) and the CPU time of the store's threads per step; `--json` adds one
//! JSON line per row (what the suite's test reads).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clip_data::loader::{Position, StreamPos};
use clip_data::order::{Cursor, Member};
use clip_dist::{Backend, Dist, InitOptions, StoreStats, WorldInfo};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::TrainState;
use crate::checkpointer::{Checkpointer, Write};
use crate::control;
use crate::data::{DataKind, DataPosition};
use crate::ddp;
use crate::divergence::Divergence;
use crate::rundir::Log;
use crate::{val, zeroshot};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// World sizes to simulate, one after the other (e.g. 8,64,256,512).
    #[arg(long, value_delimiter = ',', required = true)]
    ranks: Vec<usize>,
    /// Plain steps measured per world size (log steps, checkpoints and evaluations: a tenth,
    /// at least 3, at most 20).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Samples of the simulated --val-data set; `--workers` loader streams hold them (stream s
    /// on rank s % W, as the trainer splits them), in batches of --batch-size.
    #[arg(long, default_value_t = 1024)]
    val_samples: usize,
    #[arg(long, default_value_t = 8)]
    workers: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Feature width (convnext_large_d_320's is 768).
    #[arg(long, default_value_t = 768)]
    embed_dim: i64,
    /// Members waiting in each stream's shuffle buffer in every rank's data position (what a
    /// checkpoint gathers: OpenCLIP's buffers hold up to 5000 per stream).
    #[arg(long, default_value_t = 100)]
    waiting: usize,
    /// Also print a JSON line per row.
    #[arg(long)]
    json: bool,
}

/// The kinds of step, in the order they run.
const KINDS: [&str; 4] = ["plain", "log", "checkpoint", "evaluation"];

/// One row of the output: what one kind of step cost, per step.
struct Row {
    world: usize,
    kind: &'static str,
    steps: usize,
    store: StoreStats,
    /// The slowest rank's time of each step, milliseconds.
    ms: Vec<f64>,
}

impl Row {
    fn per_step(&self, v: u64) -> f64 {
        v as f64 / self.steps as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut ms = self.ms.clone();
        ms.sort_by(f64::total_cmp);
        ms[((ms.len() - 1) as f64 * p).round() as usize]
    }

    fn print(&self, json: bool) {
        let requests = self.per_step(self.store.requests());
        let bytes = self.per_step(self.store.bytes_in + self.store.bytes_out);
        let cpu = self.store.cpu.as_secs_f64() * 1e3 / self.steps as f64;
        let (median, p99) = (self.percentile(0.5), self.percentile(0.99));
        println!(
            "{:>5} {:<10} {:>6} {:>14.1} {:>14.0} {:>10.2} {:>10.2} {:>12.3}  {}",
            self.world,
            self.kind,
            self.steps,
            requests,
            bytes,
            median,
            p99,
            cpu,
            self.store.breakdown()
        );
        if json {
            let line = serde_json::json!({
                "world": self.world, "kind": self.kind, "steps": self.steps,
                "store_requests_per_step": requests, "store_bytes_per_step": bytes,
                "ms_median": median, "ms_p99": p99, "store_cpu_ms_per_step": cpu,
            });
            println!("{line}");
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.ranks.iter().any(|&w| w < 2) || args.steps == 0 || args.workers == 0 {
        bail!("--ranks must be at least 2 each, --steps and --workers at least 1");
    }
    println!(
        "{:>5} {:<10} {:>6} {:>14} {:>14} {:>10} {:>10} {:>12}  store requests by kind",
        "ranks",
        "step",
        "steps",
        "requests/step",
        "bytes/step",
        "ms median",
        "ms p99",
        "store cpu ms"
    );
    for &world in &args.ranks {
        for row in simulate(world, &args)? {
            row.print(args.json);
        }
    }
    Ok(())
}

/// What the ranks of one world share: a barrier between kinds of step, rank 0's store figures
/// and every rank's step times.
struct Shared {
    barrier: Barrier,
    /// Per kind: the store's figures before and after (rank 0 takes them).
    store: Mutex<Vec<(StoreStats, StoreStats)>>,
    /// Per kind, per rank: each step's time.
    times: Mutex<Vec<Vec<Vec<Duration>>>>,
}

fn simulate(world: usize, args: &Args) -> Result<Vec<Row>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("clip-sim-ranks-{}-{world}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let shared = Shared {
        barrier: Barrier::new(world),
        store: Mutex::new(vec![Default::default(); KINDS.len()]),
        times: Mutex::new(vec![vec![Vec::new(); world]; KINDS.len()]),
    };
    std::thread::scope(|s| {
        for rank in 0..world {
            let (shared, dir) = (&shared, dir.as_path());
            std::thread::Builder::new()
                .name(format!("rank-{rank}"))
                .stack_size(1 << 20)
                .spawn_scoped(s, move || {
                    if let Err(e) = rank_main(rank, world, port, args, shared, dir) {
                        // The other ranks wait at a barrier or in a collective: end them all.
                        eprintln!("clip-tool: error: rank {rank} of {world}: {e:#}");
                        std::process::exit(1);
                    }
                })
                .expect("a thread per rank");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    let store = shared.store.into_inner().expect("no rank panicked");
    let times = shared.times.into_inner().expect("no rank panicked");
    Ok(KINDS
        .iter()
        .enumerate()
        .map(|(k, &kind)| {
            let per_rank = &times[k];
            let steps = per_rank[0].len();
            let ms = (0..steps)
                .map(|i| {
                    let slowest = per_rank.iter().map(|t| t[i]).max().unwrap_or_default();
                    slowest.as_secs_f64() * 1e3
                })
                .collect();
            Row {
                world,
                kind,
                steps,
                store: store[k].1.since(&store[k].0),
                ms,
            }
        })
        .collect())
}

/// One simulated rank: joins the job, runs every kind of step in turn (all ranks starting each
/// kind together), leaves.
fn rank_main(
    rank: usize,
    world: usize,
    port: u16,
    args: &Args,
    shared: &Shared,
    dir: &Path,
) -> Result<()> {
    let info = WorldInfo {
        rank,
        local_rank: rank,
        world_size: world,
    };
    let timeout = clip_dist::timeout_from_env(|k| std::env::var(k).ok())?;
    let opts = InitOptions {
        master_addr: "127.0.0.1".into(),
        master_port: port,
        timeout,
        backend: Backend::Cpu,
        backend_at_world_1: false,
    };
    let mut dist = clip_dist::init(info, opts)?;
    dist.start_watchdog(timeout)?;
    let mut sim = RankSim::new(info, args, dir.to_path_buf());
    let events = (args.steps / 10).clamp(3, 20);
    for (k, kind) in KINDS.iter().enumerate() {
        shared.barrier.wait();
        let before = dist.store_stats();
        shared.barrier.wait();
        let steps = if *kind == "plain" { args.steps } else { events };
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let t0 = Instant::now();
            sim.step(&dist, kind)?;
            times.push(t0.elapsed());
        }
        shared.barrier.wait();
        sim.checkpoints.wait(&mut sim.log);
        if let (Some(before), Some(after)) = (before, dist.store_stats()) {
            shared.store.lock().expect("no rank panicked")[k] = (before, after);
        }
        shared.times.lock().expect("no rank panicked")[k][rank] = times;
    }
    Ok(dist.shutdown()?)
}

/// One rank's state across the simulated steps: what the trainer holds between steps.
struct RankSim {
    world: WorldInfo,
    step: i64,
    loss: Tensor,
    divergence: Divergence,
    checkpoints: Checkpointer,
    log: Log,
    position: DataPosition,
    weights: Vec<(String, Tensor)>,
    share: val::Share,
    classifier_parts: Vec<Tensor>,
    embed_dim: i64,
    /// This rank's evaluation batches (its heartbeats).
    eval_batches: usize,
}

impl RankSim {
    fn new(world: WorldInfo, args: &Args, dir: PathBuf) -> RankSim {
        let share = val_share(world, args);
        let eval_batches = share_batches(world, args);
        RankSim {
            world,
            step: 0,
            loss: Tensor::from(2.5f32),
            divergence: Divergence::new(Device::Cpu),
            checkpoints: Checkpointer::new(dir, world, None),
            log: Log::for_rank(world.rank),
            position: data_position(world, args),
            weights: vec![("logit_scale".into(), Tensor::from(4.6f32))],
            share,
            classifier_parts: classifier_parts(world, args.embed_dim),
            embed_dim: args.embed_dim,
            eval_batches,
        }
    }

    /// One step of `kind`: the control calls of a training step, plus the log step's, the
    /// checkpoint's or the evaluation's.
    fn step(&mut self, dist: &Dist, kind: &str) -> Result<()> {
        let comm = dist.collectives();
        self.step += 1;
        if control::shards_ran_out(comm, false)? {
            bail!("no rank's shards ran out, yet the ranks agreed they did");
        }
        let step = (self.step, 0);
        let stop = control::after_step(dist, &mut self.divergence, step, &self.loss, None, false)?;
        if stop {
            bail!("no rank was signalled, yet the ranks agreed to stop");
        }
        match kind {
            "log" => {
                self.divergence.check(comm)?;
                ddp::global_loss(comm, &self.loss)?;
            }
            "checkpoint" => {
                self.divergence.check(comm)?;
                let state = TrainState {
                    name: "sim".into(),
                    epoch: 0,
                    step: self.step,
                    step_in_epoch: self.step,
                    data_position: None,
                    scaler: None,
                    optimizer_step: None,
                };
                let file = format!("step_{}.safetensors", self.step);
                let (pos, w) = (&self.position, &self.weights);
                let log = &mut self.log;
                self.checkpoints.save(
                    &file,
                    Write::Background,
                    comm,
                    &state,
                    pos,
                    w,
                    &[],
                    None,
                    log,
                )?;
                self.checkpoints.poll(&mut self.log);
            }
            "evaluation" => self.evaluate(dist)?,
            _ => {}
        }
        Ok(())
    }

    fn evaluate(&mut self, dist: &Dist) -> Result<()> {
        let comm = dist.collectives();
        for _ in 0..self.eval_batches {
            dist.heartbeat(self.step as u64)?;
        }
        let all = val::in_order(&self.share, comm, self.embed_dim, Device::Cpu)?;
        let classifier = zeroshot::gather_classifier(&self.classifier_parts, comm)?;
        if classifier.size() != [self.embed_dim, 1000] || all.images.size()[1] != self.embed_dim {
            bail!(
                "gathered {:?} classifier and {:?} features",
                classifier.size(),
                all.images.size()
            );
        }
        let counts = [1, 2, self.world.rank as i64, 1];
        zeroshot::sum_counts(comm, counts, Device::Cpu)?;
        Ok(())
    }
}

/// The batches of stream `s` (of `args.workers`) and their sizes: the val set split evenly over
/// the streams, in batches of `args.batch_size` (the last one partial).
fn stream_batches(s: usize, args: &Args) -> Vec<i64> {
    let per_stream =
        args.val_samples / args.workers + usize::from(s < args.val_samples % args.workers);
    let full = per_stream / args.batch_size;
    let mut sizes = vec![args.batch_size as i64; full];
    if !per_stream.is_multiple_of(args.batch_size) {
        sizes.push((per_stream % args.batch_size) as i64);
    }
    sizes
}

/// How many evaluation batches rank `world.rank` runs.
fn share_batches(world: WorldInfo, args: &Args) -> usize {
    (world.rank..args.workers)
        .step_by(world.world_size)
        .map(|s| stream_batches(s, args).len())
        .sum()
}

/// This rank's share of the simulated val set: its streams' batches, random features.
fn val_share(world: WorldInfo, args: &Args) -> val::Share {
    let mut share = val::Share::new();
    for s in (world.rank..args.workers).step_by(world.world_size) {
        for (round, &b) in stream_batches(s, args).iter().enumerate() {
            let feats = || Tensor::randn([b, args.embed_dim], (Kind::Float, Device::Cpu));
            share.push((s, round as i64), 1.0, 4.6, feats(), feats());
        }
    }
    share
}

/// The zero-shot classifier's columns this rank computes: groups of 10 classes `g` with
/// `g % W == rank` (as `zeroshot::classifier_parts` shares them).
fn classifier_parts(world: WorldInfo, dim: i64) -> Vec<Tensor> {
    (0..100)
        .filter(|g| g % world.world_size == world.rank)
        .map(|_| Tensor::randn([dim, 10], (Kind::Float, Device::Cpu)))
        .collect()
}

/// A webdataset position mid-epoch: `args.workers` streams, each with `args.waiting` members
/// in its shuffle buffer.
fn data_position(world: WorldInfo, args: &Args) -> DataPosition {
    let shard: Arc<str> = Arc::from(format!("s3://bucket/train/{:06}.tar", world.rank).as_str());
    let stream = |_| StreamPos {
        taken: 12_345,
        batches: 48,
        done: false,
        read: Some(Cursor {
            waiting: (0..args.waiting as u64)
                .map(|i| Member {
                    shard: shard.clone(),
                    offset: 1_000_000 + i * 117_000,
                    len: 116_500,
                })
                .collect(),
            rng: None,
            read: Default::default(),
        }),
        pieces: None,
    };
    let loader = Position {
        version: 2,
        epoch: 0,
        batches: 48 * args.workers as u64,
        next_stream: 0,
        streams: (0..args.workers).map(stream).collect(),
        seed: 0,
        rank: world.rank,
        world: world.world_size,
        batch_size: args.batch_size,
        resampled: false,
        num_shards: 4096,
        quota: None,
        reseed: None,
    };
    DataPosition {
        source: DataKind::WebDataset,
        epoch: 0,
        batches: loader.batches as i64,
        loader: Some(loader),
        streams: Some(args.workers),
    }
}
