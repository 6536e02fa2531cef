//! The training/eval loader: streams → decode pool → batches, with a resumable position.
//!
//! ## Use (the trainer)
//! ```ignore
//! let shards = ShardList::parse(&args.train_data, args.train_data_upsampling_factors.as_deref())?;
//! let mut cfg = LoaderConfig::new(shards, args.batch_size);
//! cfg.resampled = args.dataset_resampled; cfg.seed = args.seed; cfg.rank = rank; cfg.world = world;
//! cfg.workers = args.workers; cfg.num_samples = Some(args.train_num_samples);
//! let aug = AugCfg::parse(&args.aug_cfg)?;
//! let loader = Loader::new(cfg, Arc::new(ClipProcessor::train(size, &aug, mean, std, Arc::new(TextTokenizer::clip(77)))))?;
//! let (_, batches_per_epoch, samples_per_epoch) = loader.plan().unwrap();
//! let mut it = loader.epoch(epoch, saved_position.as_ref())?;   // None = epoch start
//! while let Some(batch) = it.next() {
//!     let batch = batch?;            // an error = stalled/empty input: stop the run
//!     // upload batch.images ([B,3,S,S] f32) and batch.tokens ([B,77] i64), train a step
//!     // at checkpoint time: save it.position().to_json() next to the weights
//! }
//! ```
//!
//! ## Threads and queues (per rank)
//! - one **reader** thread per stream (OpenCLIP's "worker"): shard order, tar streaming, grouping,
//!   sample shuffle buffer ([`crate::order::SampleStream`]). It tags each raw sample with its index
//!   in the stream and puts it on the shared job queue. At most `prefetch_samples` samples per
//!   stream are in flight (read but not yet taken by the consumer): the bound on memory.
//! - `workers` **decode** threads take jobs in any order and decode + augment + tokenize. The
//!   augmentation RNG of a sample is seeded from (seed, rank, stream, epoch, index), so the result
//!   does not depend on which thread runs it.
//! - one **assembler** thread builds batches stream by stream in a fixed round-robin order, as
//!   PyTorch's DataLoader interleaves its workers, putting each stream's results back into index
//!   order and copying each sample straight into a buffer of the epoch's [`BufferRing`] (the
//!   caller's memory — the trainer's is pinned for a GPU — or vectors of the loader's own). A
//!   sample that fails to decode is skipped (counted, logged) and the batch is filled from the
//!   next one. It runs one batch ahead of the consumer (the iterator the trainer drives), plus
//!   as far as the ring's free buffers let it.
//!
//! Hence the batches are a function of (seed, rank, world, streams, epoch, batch size) only —
//! identical for any number of decode threads. `streams` defaults to `workers`, which gives
//! OpenCLIP's shard split and epoch arithmetic; pin it to keep a run's order when changing
//! `--workers`.
//!
//! ## Position and resume
//! [`Position`] records, per stream, how many raw samples of its (shuffled) stream the consumer
//! has taken, how many batches it produced, the round-robin cursor, and (version 2) where the
//! stream's reading stands after those samples: an [`order::Cursor`] — the shard being read and
//! the byte offset where its next sample starts, how many shards of its sequence were taken, the
//! shuffle generator, and the members waiting in its shuffle buffer by (shard, byte offset,
//! length), not their bytes. The reader runs ahead of the consumer, so the consumer keeps this
//! cursor itself: each sample travels with the [`order::Step`] that produced it (what was read
//! into the buffer, which slot was emitted), the assembler passes a batch's steps on with it, and
//! the consumer applies them when it confirms the batch ([`EpochIter::confirm`]: a batch taken
//! ahead of its use is not in the position until then).
//!
//! Restore reopens the shard being read at its offset (a file seeks, `s3://` sends a Range GET, a
//! `pipe:` command is read and the prefix dropped), reads the waiting members back by their byte
//! ranges (adjacent ones coalesced into one request; a `pipe:` shard read once up to its last
//! one) and continues the shard sequence after the shards already taken. What a resume reads is
//! what the epoch still needs: no finished shard is opened again. A version-1 position (older
//! checkpoints: counts only) is restored by replaying the stream and dropping the samples taken
//! without decoding them; the replay rebuilds the cursor, so the next position is version 2.
//!
//! The number of streams is part of the position: [`Loader::epoch`] resumes with the saved
//! stream count whatever `workers` (decode threads) is now. The JSON grows with the shuffle
//! buffers: about 25 bytes per waiting member, so OpenCLIP's 5000-sample buffers make ~125 kB
//! per stream.

//! ## Images on the host as normalised f32 (or bf16)
//! Batches carry images as one contiguous `[B,3,S,S]` buffer, already normalised: random
//! erasing in pixel mode writes N(0,1) noise in the normalised space, which u8 cannot hold, and the
//! transform already produces normalised CHW floats, so the device only needs one copy. A ring
//! whose buffers hold bf16 gets them rounded as torch rounds ([`crate::buffers::bf16_bits`]).

use crate::buffers::{to_bf16, BufferRing, ImagesMut, Lease};
use crate::order::{self, Cursor, Event, OrderCfg, Piece, SampleStream, Step};
use crate::samples::{Item, RawSample, SkipLog, SkipReason, Stats};
use crate::shards::ShardList;
use anyhow::{bail, Result};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Turns raw bytes into model inputs. Implemented by [`ClipProcessor`]; tests may use their own.
pub trait Processor: Send + Sync {
    /// Decode and transform one image into `out`: `3*S*S` normalised CHW floats (every value
    /// written; `out` is a recycled buffer).
    fn image_into(&self, bytes: &[u8], rng: &mut Pcg64, out: &mut [f32]) -> Result<()>;
    /// Tokenize one caption into `out` (length = context length).
    fn text(&self, caption: &str, out: &mut [i64]);
    /// Image side length S.
    fn image_size(&self) -> usize;
    fn context_length(&self) -> usize {
        77
    }
}

/// The loader's configuration (OpenCLIP flag names in brackets).
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// `--train-data` / `--val-data` with `--train-data-upsampling-factors`
    pub shards: ShardList,
    /// `--dataset-resampled`
    pub resampled: bool,
    /// training (shuffle, split by rank, full batches, epoch quota) or eval (in order, partial last batch)
    pub train: bool,
    /// `--seed`
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    /// `--workers`: decode threads per rank
    pub workers: usize,
    /// logical streams (OpenCLIP's dataloader workers); `None` = `workers`
    pub streams: Option<usize>,
    /// `--batch-size` per rank
    pub batch_size: usize,
    /// `--train-num-samples` (`--val-num-samples`): the epoch length; required for training
    pub num_samples: Option<u64>,
    /// raw samples in flight per stream (prefetch); default = batch size
    pub prefetch_samples: Option<usize>,
    /// stop with an error if no valid sample arrives for this long
    pub no_progress_timeout: Duration,
    pub shard_shuffle: (usize, usize),
    pub sample_shuffle: (usize, usize),
}

impl LoaderConfig {
    pub fn new(shards: ShardList, batch_size: usize) -> Self {
        LoaderConfig {
            shards,
            resampled: false,
            train: true,
            seed: 0,
            rank: 0,
            world: 1,
            workers: 4,
            streams: None,
            batch_size,
            num_samples: None,
            prefetch_samples: None,
            no_progress_timeout: Duration::from_secs(600),
            shard_shuffle: order::SHARD_SHUFFLE,
            sample_shuffle: order::SAMPLE_SHUFFLE,
        }
    }
    pub fn streams(&self) -> usize {
        self.streams.unwrap_or(self.workers).max(1)
    }
}

/// OpenCLIP's epoch arithmetic: `global = batch × world; batches = ceil(N / global)` rounded up to
/// a multiple of the workers; samples = batches × global. Returns (batches per stream, batches, samples).
pub fn epoch_plan(
    num_samples: u64,
    batch_size: usize,
    world: usize,
    workers: usize,
) -> (u64, u64, u64) {
    let global = (batch_size * world) as u64;
    let batches = num_samples.div_ceil(global);
    let w = workers.max(1) as u64;
    let per_worker = batches.div_ceil(w);
    let batches = per_worker * w;
    (per_worker, batches, batches * global)
}

/// One batch: images `[B,3,S,S]` normalised (row-major; f32, or bf16 where the ring's buffers
/// hold bf16), tokens `[B,ctx]` i64, in a buffer lent from the epoch's [`BufferRing`]: dropping
/// the batch (or the [`Lease`] taken out of it) gives the buffer back.
pub struct Batch {
    lease: Lease,
    pub batch_size: usize,
    pub image_size: usize,
    pub context_length: usize,
    /// `shard#key` of every sample, in batch order (for logs and tests)
    pub keys: Vec<String>,
    /// the stream that produced it
    pub stream: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("batch_size", &self.batch_size)
            .field("stream", &self.stream)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// The images as f32 (panics where the buffer holds bf16).
    pub fn images(&self) -> &[f32] {
        let n = self.batch_size * 3 * self.image_size * self.image_size;
        let all = self.lease.buffer().images_f32();
        &all.expect("a batch assembled as bf16 has no f32 images")[..n]
    }
    pub fn tokens(&self) -> &[i64] {
        &self.lease.buffer().tokens()[..self.batch_size * self.context_length]
    }
    /// The buffer the batch lives in: the caller gives it back (drops it) once nothing reads
    /// it any more.
    pub fn into_lease(self) -> Lease {
        self.lease
    }
}

/// A resumable position inside an epoch (serde JSON, stored in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub version: u32,
    pub epoch: u64,
    /// batches yielded so far in this epoch (this rank)
    pub batches: u64,
    /// the stream the next batch comes from (round-robin cursor)
    pub next_stream: usize,
    pub streams: Vec<StreamPos>,
    /// configuration fingerprint: a position only restores under the same data order
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    pub batch_size: usize,
    pub resampled: bool,
    pub num_shards: usize,
    /// batches per stream in this epoch when it was split over another world size
    /// ([`crate::rebalance`]); `None`: OpenCLIP's epoch arithmetic ([`epoch_plan`])
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u64>,
    /// the seed of the sample order for the rest of the epoch, when a resampled epoch was
    /// resumed on another world size (derived from the step); `None`: `seed`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamPos {
    /// raw samples taken from the stream (including ones that failed to decode)
    pub taken: u64,
    pub batches: u64,
    /// stream exhausted (plain mode) or its quota reached
    pub done: bool,
    /// where the stream's reading stands after those samples: shard, byte offset, and the
    /// members waiting in its shuffle buffer (version 2; a version-1 position has none and is
    /// restored by replaying the stream)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Cursor>,
    /// the stream's explicit sequence of pieces when its epoch was split over another world
    /// size ([`crate::rebalance`]); `None`: its shards follow from the configuration
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<Vec<Piece>>,
}

impl Position {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap()
    }
    pub fn from_json(s: &str) -> Result<Position> {
        Ok(serde_json::from_str(s)?)
    }
}

/// The loader's errors a caller tells apart (it words them for its own flags); the others are
/// plain `anyhow` errors. They travel inside `anyhow::Error`: `e.downcast_ref::<LoaderError>()`
/// finds them under any context added on the way.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Training needs the epoch length: neither [`LoaderConfig::num_samples`] nor a `sizes.json`
    /// beside the shards gives it.
    #[error("the number of training samples must be given (--train-num-samples); no sizes.json beside the shards either")]
    NumSamplesUnknown,
    /// No valid sample arrived for [`LoaderConfig::no_progress_timeout`] (stalled or broken
    /// sources), or every stream ended without one; `report` has a line per shard tried (at most
    /// 50): its usable samples, skips by reason and last error.
    #[error("no valid sample for {waited:?}; shards tried ({shards_tried}):\n{report}")]
    NoProgress {
        waited: Duration,
        shards_tried: usize,
        report: String,
    },
}

/// What each shard yielded, for the no-progress error and for stats.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ShardReport {
    pub samples: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
    pub last_error: Option<String>,
}

/// The loader of one rank. Create once; call [`Loader::epoch`] per epoch.
pub struct Loader {
    cfg: LoaderConfig,
    order: OrderCfg,
    proc_: Arc<dyn Processor>,
    stats: Arc<Mutex<Stats>>,
    shards: Arc<Mutex<BTreeMap<String, ShardReport>>>,
}

impl Loader {
    pub fn new(mut cfg: LoaderConfig, processor: Arc<dyn Processor>) -> Result<Loader> {
        if cfg.train && cfg.num_samples.is_none() {
            cfg.num_samples = crate::shards::dataset_size(&cfg.shards.urls());
        }
        if cfg.batch_size == 0 {
            bail!("batch size must be > 0");
        }
        if cfg.world == 0 || cfg.rank >= cfg.world {
            bail!("rank {} out of world size {}", cfg.rank, cfg.world);
        }
        if cfg.train && cfg.num_samples.is_none() {
            return Err(LoaderError::NumSamplesUnknown.into());
        }
        let order = OrderCfg {
            urls: Arc::new(cfg.shards.urls()),
            weights: Arc::new(cfg.shards.weights()),
            resampled: cfg.resampled && cfg.train,
            train: cfg.train,
            seed: cfg.seed,
            rank: cfg.rank,
            world: cfg.world,
            streams: cfg.streams(),
            shard_shuffle: cfg.shard_shuffle,
            sample_shuffle: cfg.sample_shuffle,
            pieces: None,
        };
        order.check()?;
        Ok(Loader {
            cfg,
            order,
            proc_: processor,
            stats: Default::default(),
            shards: Default::default(),
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// The shard order of this rank's epochs.
    pub(crate) fn order(&self) -> &OrderCfg {
        &self.order
    }

    /// A batch's image side and caption length (what a [`BufferRing`]'s buffers hold).
    pub fn image_size(&self) -> usize {
        self.proc_.image_size()
    }
    pub fn context_length(&self) -> usize {
        self.proc_.context_length()
    }

    /// (batches per stream, batches per epoch, samples per epoch) — OpenCLIP's `num_batches`, `num_samples`.
    pub fn plan(&self) -> Option<(u64, u64, u64)> {
        self.cfg
            .num_samples
            .map(|n| epoch_plan(n, self.cfg.batch_size, self.cfg.world, self.cfg.streams()))
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    pub fn shard_reports(&self) -> BTreeMap<String, ShardReport> {
        self.shards.lock().unwrap().clone()
    }

    /// The batches of `epoch`, from its start or from a saved position. A saved position keeps
    /// its stream layout (the number of streams fixes the sample order), whatever `workers` —
    /// the decode threads — is now.
    pub fn epoch(&self, epoch: u64, resume: Option<&Position>) -> Result<EpochIter> {
        self.epoch_with(epoch, resume, None)
    }

    /// [`Loader::epoch`], its batches assembled in `ring`'s buffers (`None`: vectors of its
    /// own).
    pub fn epoch_with(
        &self,
        epoch: u64,
        resume: Option<&Position>,
        ring: Option<BufferRing>,
    ) -> Result<EpochIter> {
        let mut order = self.order.clone();
        if let Some(r) = resume {
            order.streams = r.streams.len().max(1);
            order.check()?;
            order.seed = r.reseed.unwrap_or(order.seed);
            order.pieces = r
                .streams
                .iter()
                .map(|s| s.pieces.clone())
                .collect::<Option<Vec<_>>>()
                .map(Arc::new);
        }
        let streams = order.streams;
        let quota = match (
            self.cfg.train,
            self.cfg.num_samples,
            resume.and_then(|r| r.quota),
        ) {
            (true, _, Some(q)) => q,
            (true, Some(n), None) => epoch_plan(n, self.cfg.batch_size, self.cfg.world, streams).0,
            _ => u64::MAX,
        };
        let mut pos = self.start_position(epoch, streams);
        if let Some(r) = resume {
            let mine = Position {
                version: r.version,
                batches: r.batches,
                next_stream: r.next_stream,
                streams: r.streams.clone(),
                epoch: r.epoch,
                quota: r.quota,
                reseed: r.reseed,
                ..pos.clone()
            };
            if *r != mine {
                bail!(
                    "saved data position does not match this configuration (saved: seed {}, rank {}/{}, {} streams, batch {}, resampled {}, {} shards; now: seed {}, rank {}/{}, {} streams, batch {}, resampled {}, {} shards)",
                    r.seed, r.rank, r.world, r.streams.len(), r.batch_size, r.resampled, r.num_shards,
                    pos.seed, pos.rank, pos.world, streams, pos.batch_size, pos.resampled, pos.num_shards
                );
            }
            if r.epoch != epoch {
                bail!(
                    "saved data position is for epoch {}, asked for epoch {epoch}",
                    r.epoch
                );
            }
            pos = r.clone();
        }
        EpochIter::start(self, &order, epoch, pos, quota, ring)
    }

    /// The position at the start of `epoch` over `streams` streams: nothing taken from any.
    fn start_position(&self, epoch: u64, streams: usize) -> Position {
        let fresh = StreamPos {
            taken: 0,
            batches: 0,
            done: false,
            read: None,
            pieces: None,
        };
        Position {
            version: 1,
            epoch,
            batches: 0,
            next_stream: 0,
            streams: vec![fresh; streams],
            seed: self.cfg.seed,
            rank: self.cfg.rank,
            world: self.cfg.world,
            batch_size: self.cfg.batch_size,
            resampled: self.order.resampled,
            num_shards: self.order.urls.len(),
            quota: None,
            reseed: None,
        }
    }

    /// Share `rank` of `world` of an eval pass (`train` off): only the streams `s` with
    /// `s % world == rank` that hold a shard are read, the others count as finished. A stream's
    /// batches do not depend on the other streams, so the shares together are exactly the
    /// batches of the whole pass, each tagged with its stream ([`Batch::stream`]; the whole
    /// pass takes them round-robin: a stream's k-th batch in round k). `None`: no stream of
    /// this share holds a shard.
    pub fn eval_share(&self, rank: usize, world: usize) -> Result<Option<EpochIter>> {
        if self.cfg.train || world == 0 || rank >= world {
            bail!("eval_share: an eval loader and a rank below the world size");
        }
        let mut pos = self.start_position(0, self.order.streams);
        for (s, st) in pos.streams.iter_mut().enumerate() {
            st.done = s % world != rank || self.order.shard_sequence(s, 0).next().is_none();
        }
        let Some(first) = pos.streams.iter().position(|st| !st.done) else {
            return Ok(None);
        };
        pos.next_stream = first;
        EpochIter::start(self, &self.order, 0, pos, u64::MAX, None).map(Some)
    }
}

struct Job {
    stream: usize,
    idx: u64,
    raw: RawSample,
    step: Option<Step>,
}

enum Msg {
    Done {
        idx: u64,
        shard: Arc<str>,
        key: String,
        out: Result<(Vec<f32>, Vec<i64>), String>,
        step: Option<Step>,
    },
    /// a version-1 resume replayed the stream up to the saved count: its state there
    Cursor(Box<Cursor>),
    /// the stream could not continue from its saved position
    Failed(String),
    Event(Event),
    /// the stream source is exhausted after `n` samples
    End {
        n: u64,
    },
    /// the reader is fast-forwarding after a resume (not a stall)
    Heartbeat,
}

/// (shard, key, image + tokens or the decode error, the stream's step)
type Decoded = (
    Arc<str>,
    String,
    Result<(Vec<f32>, Vec<i64>), String>,
    Option<Step>,
);

/// What the assembler reads of one stream.
struct StreamIn {
    rx: Receiver<Msg>,
    inflight: Receiver<()>,
    reorder: HashMap<u64, Decoded>,
    end: Option<u64>,
}

/// A change to a stream's [`Cursor`], in the order the assembler met it.
enum CursorMove {
    Apply(Step),
    Set(Box<Cursor>),
}

/// How the position moves when the consumer takes a batch (or the epoch's end): the counts
/// after it and the cursor moves since the previous one. The assembler runs ahead; the
/// position is the consumer's, so it travels with the batch and is applied when the batch is
/// confirmed ([`EpochIter::confirm`]).
struct Advance {
    /// (samples taken, batches, done) per stream
    streams: Vec<(u64, u64, bool)>,
    next_stream: usize,
    batches: u64,
    moves: Vec<(usize, CursorMove)>,
}

/// What the assembler thread sends the consumer.
enum Assembled {
    Batch(Batch, Advance),
    End(Advance),
    Failed(anyhow::Error),
}

/// Iterator over the batches of one epoch. Dropping it stops all its threads.
///
/// Batches are assembled ahead on a thread of their own (the assembler: stream round-robin,
/// reordering, the copy of each sample into a buffer of the ring); the position is the
/// consumer's: [`Iterator::next`] confirms each batch it returns, [`EpochIter::next_held`]
/// leaves it to [`EpochIter::confirm`] (a batch taken ahead of its use stays out of the
/// position until it is used).
pub struct EpochIter {
    /// after the confirmed batches
    pos: Position,
    /// each stream's reading state after the confirmed batches (see [`Cursor`])
    cursors: Vec<Cursor>,
    train: bool,
    /// None after the epoch's end or an error
    out: Option<Receiver<Assembled>>,
    /// the moves of batches returned but not confirmed, oldest first
    held: std::collections::VecDeque<Advance>,
    /// the moves at the epoch's end, applied when everything before is confirmed
    end: Option<Advance>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    job_tx: Option<Sender<Job>>,
    pipe_groups: crate::source::PipeGroups,
}

/// The assembler thread's state: the streams' results, the counts of the position (the
/// cursors are the consumer's), the skip and progress bookkeeping.
struct Assembler {
    pos: Position,
    quota: u64,
    train: bool,
    batch_size: usize,
    image_size: usize,
    ctx: usize,
    timeout: Duration,
    streams: Vec<StreamIn>,
    stats: Arc<Mutex<Stats>>,
    shards: Arc<Mutex<BTreeMap<String, ShardReport>>>,
    skiplog: SkipLog,
    last_progress: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ring: BufferRing,
    sample_pool: Arc<Mutex<Vec<Vec<f32>>>>,
    sample_pool_cap: usize,
    /// cursor moves since the last batch sent
    moves: Vec<(usize, CursorMove)>,
}

impl EpochIter {
    fn start(
        l: &Loader,
        order: &OrderCfg,
        epoch: u64,
        pos: Position,
        quota: u64,
        ring: Option<BufferRing>,
    ) -> Result<EpochIter> {
        let n_streams = order.streams;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (job_tx, job_rx) = unbounded::<Job>();
        let mut threads = Vec::new();
        let mut states = Vec::new();
        let mut cursors = Vec::new();
        let mut result_txs = Vec::new();
        let prefetch = l.cfg.prefetch_samples.unwrap_or(l.cfg.batch_size).max(1);
        let pipe_groups = crate::source::PipeGroups::default();
        for s in 0..n_streams {
            let (tx, rx) = unbounded::<Msg>();
            let (inflight_tx, inflight_rx) = bounded::<()>(prefetch);
            result_txs.push(tx.clone());
            let saved = &pos.streams[s];
            let start = match (&saved.read, saved.taken) {
                (Some(c), n) => Start::At(Box::new(c.clone()), n),
                (None, 0) => Start::Beginning,
                (None, n) => Start::Replay(n),
            };
            cursors.push(
                saved
                    .read
                    .clone()
                    .unwrap_or_else(|| Cursor::start(order, s, epoch)),
            );
            states.push(StreamIn {
                rx,
                inflight: inflight_rx,
                reorder: HashMap::new(),
                end: None,
            });
            if pos.streams[s].done {
                continue;
            }
            let order = order.clone();
            let job_tx = job_tx.clone();
            let stop = stop.clone();
            let groups = pipe_groups.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("clip-data-read-{s}"))
                    .spawn(move || {
                        reader(
                            order,
                            s,
                            epoch,
                            start,
                            job_tx,
                            tx,
                            inflight_tx,
                            stop,
                            groups,
                        )
                    })?,
            );
        }
        let workers = l.cfg.workers.max(1);
        // recycled per-sample image buffers (no zeroing, no fresh pages per sample)
        let sample_pool: Arc<Mutex<Vec<Vec<f32>>>> = Default::default();
        for w in 0..workers {
            let job_rx = job_rx.clone();
            let txs = result_txs.clone();
            let p = l.proc_.clone();
            let stop = stop.clone();
            let spool = sample_pool.clone();
            let (seed, rank) = (l.cfg.seed, l.cfg.rank as u64);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("clip-data-decode-{w}"))
                    .spawn(move || decoder(p, job_rx, txs, stop, spool, seed, rank, epoch))?,
            );
        }
        let assembler = Assembler::new(l, &pos, quota, states, stop.clone(), ring, sample_pool);
        // one batch waits ready while the next is assembled
        let (out_tx, out_rx) = bounded(1);
        threads.push(
            std::thread::Builder::new()
                .name("clip-data-assemble".into())
                .spawn(move || assembler.run(out_tx))?,
        );
        Ok(EpochIter {
            pos,
            cursors,
            train: l.cfg.train,
            out: Some(out_rx),
            held: Default::default(),
            end: None,
            stop,
            threads,
            job_tx: Some(job_tx),
            pipe_groups,
        })
    }

    /// The position after the last batch confirmed (by [`Iterator::next`]: the last batch
    /// returned): save it with the checkpoint.
    pub fn position(&self) -> Position {
        let mut p = self.pos.clone();
        p.version = 2;
        for (sp, c) in p.streams.iter_mut().zip(&self.cursors) {
            sp.read = (self.train && !sp.done).then(|| c.clone());
        }
        p
    }

    /// The next batch, left out of the position until [`EpochIter::confirm`] confirms it;
    /// `None` at the epoch's end (after an error too).
    pub fn next_held(&mut self) -> Option<Result<Batch>> {
        let got = self.out.as_ref()?.recv();
        match got {
            Ok(Assembled::Batch(b, advance)) => {
                self.held.push_back(advance);
                Some(Ok(b))
            }
            Ok(Assembled::End(advance)) => {
                self.out = None;
                self.end = Some(advance);
                None
            }
            Ok(Assembled::Failed(e)) => {
                self.out = None;
                Some(Err(e))
            }
            Err(_) => {
                self.out = None;
                Some(Err(anyhow::anyhow!(
                    "the data assembler thread ended unexpectedly"
                )))
            }
        }
    }

    /// Moves the position past the `n` oldest batches [`EpochIter::next_held`] returned (and
    /// past the epoch's end once every batch is confirmed and the end was reached).
    pub fn confirm(&mut self, n: usize) {
        for _ in 0..n {
            let a = self
                .held
                .pop_front()
                .expect("confirmed a batch never taken");
            self.apply(a);
        }
        if self.held.is_empty() {
            if let Some(a) = self.end.take() {
                self.apply(a);
            }
        }
    }

    fn apply(&mut self, a: Advance) {
        for (sp, (taken, batches, done)) in self.pos.streams.iter_mut().zip(a.streams) {
            (sp.taken, sp.batches, sp.done) = (taken, batches, done);
        }
        self.pos.next_stream = a.next_stream;
        self.pos.batches = a.batches;
        for (s, m) in a.moves {
            match m {
                CursorMove::Apply(step) => self.cursors[s].apply(step),
                CursorMove::Set(c) => self.cursors[s] = *c,
            }
        }
    }
}

impl Assembler {
    /// The assembler of an epoch starting at `pos` (counts only: the cursors are the
    /// consumer's), its batches in `ring`'s buffers (`None`: vectors of its own).
    fn new(
        l: &Loader,
        pos: &Position,
        quota: u64,
        streams: Vec<StreamIn>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        ring: Option<BufferRing>,
        sample_pool: Arc<Mutex<Vec<Vec<f32>>>>,
    ) -> Assembler {
        let (b, side, ctx) = (
            l.cfg.batch_size,
            l.proc_.image_size(),
            l.proc_.context_length(),
        );
        let counts = pos.streams.iter().map(|sp| StreamPos {
            taken: sp.taken,
            batches: sp.batches,
            done: sp.done,
            read: None,
            pieces: None,
        });
        Assembler {
            pos: Position {
                streams: counts.collect(),
                ..pos.clone()
            },
            quota,
            train: l.cfg.train,
            batch_size: b,
            image_size: side,
            ctx,
            timeout: l.cfg.no_progress_timeout,
            streams,
            stats: l.stats.clone(),
            shards: l.shards.clone(),
            skiplog: SkipLog::default(),
            last_progress: Instant::now(),
            stop,
            ring: ring.unwrap_or_else(|| BufferRing::vecs(b * 3 * side * side, b * ctx, 4)),
            sample_pool,
            sample_pool_cap: l.cfg.workers.max(1) * 4 + 8,
            moves: Vec::new(),
        }
    }

    /// Sends the epoch's batches, then its end or the error that stopped it; returns early when
    /// the consumer is gone.
    fn run(mut self, out: Sender<Assembled>) {
        loop {
            let next = self.next_batch();
            let advance = Advance {
                streams: (self.pos.streams.iter())
                    .map(|s| (s.taken, s.batches, s.done))
                    .collect(),
                next_stream: self.pos.next_stream,
                batches: self.pos.batches,
                moves: std::mem::take(&mut self.moves),
            };
            let (msg, last) = match next {
                Some(Ok(b)) => (Assembled::Batch(b, advance), false),
                Some(Err(e)) => (Assembled::Failed(e), true),
                None => (Assembled::End(advance), true),
            };
            let mut msg = msg;
            loop {
                match out.send_timeout(msg, Duration::from_millis(100)) {
                    Ok(()) => break,
                    Err(crossbeam_channel::SendTimeoutError::Timeout(m)) => {
                        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        msg = m;
                    }
                    Err(_) => return,
                }
            }
            // time the consumer took to ask is not a stall of the sources
            self.last_progress = Instant::now();
            if last {
                return;
            }
        }
    }

    fn note_event(&mut self, e: Event) {
        match e {
            Event::Item(Item::Skip {
                shard,
                key,
                reason,
                detail,
            }) => {
                self.skiplog.log(&shard, &key, reason, &detail);
                self.stats.lock().unwrap().skip(reason);
                let mut m = self.shards.lock().unwrap();
                let r = m.entry(shard.to_string()).or_default();
                *r.skipped.entry(reason).or_default() += 1;
                if !detail.is_empty() {
                    r.last_error = Some(detail);
                }
            }
            Event::ShardDone { shard, samples } => {
                let mut m = self.shards.lock().unwrap();
                m.entry(shard.to_string()).or_default().samples += samples;
            }
            Event::Item(Item::Sample(_)) => unreachable!(),
        }
    }

    fn no_progress_error(&self) -> anyhow::Error {
        let m = self.shards.lock().unwrap();
        let mut lines = Vec::new();
        for (url, r) in m.iter().take(50) {
            let sk: Vec<String> = r
                .skipped
                .iter()
                .map(|(k, v)| format!("{} {v}", k.as_str()))
                .collect();
            lines.push(format!(
                "  {url}: {} usable samples; skipped: {}{}",
                r.samples,
                if sk.is_empty() {
                    "none".to_string()
                } else {
                    sk.join(", ")
                },
                r.last_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ));
        }
        if m.is_empty() {
            lines.push("  (no shard finished or failed yet: the sources are stalled)".into());
        }
        LoaderError::NoProgress {
            waited: self.last_progress.elapsed(),
            shards_tried: m.len(),
            report: lines.join("\n"),
        }
        .into()
    }

    /// A buffer of the ring for the next batch (waiting while the consumer holds them all);
    /// `None` when the epoch is being dropped.
    fn buffer(&mut self) -> Result<Option<Lease>> {
        let stop = self.stop.clone();
        let Some(mut lease) = self
            .ring
            .take(&|| stop.load(std::sync::atomic::Ordering::Relaxed))
        else {
            return Ok(None);
        };
        // time spent waiting for the consumer to give a buffer back is not a stall
        self.last_progress = Instant::now();
        let (n, sz, ctx) = (self.batch_size, self.image_size, self.ctx);
        let buf = lease.buffer_mut();
        let images = match buf.images_mut() {
            ImagesMut::F32(d) => d.len(),
            ImagesMut::Bf16(d) => d.len(),
        };
        if images < n * 3 * sz * sz || buf.tokens_mut().len() < n * ctx {
            bail!(
                "a batch buffer holds {images} image values, a batch needs {}",
                n * 3 * sz * sz
            );
        }
        Ok(Some(lease))
    }

    /// Sample `k` of the batch in `lease`: the image (as the buffer holds images) and tokens.
    fn write_sample(&mut self, lease: &mut Lease, k: usize, img: Vec<f32>, tok: &[i64]) {
        let n = img.len();
        let buf = lease.buffer_mut();
        match buf.images_mut() {
            ImagesMut::F32(d) => d[k * n..(k + 1) * n].copy_from_slice(&img),
            ImagesMut::Bf16(d) => to_bf16(&img, &mut d[k * n..(k + 1) * n]),
        }
        buf.tokens_mut()[k * self.ctx..(k + 1) * self.ctx].copy_from_slice(tok);
        let mut sp = self.sample_pool.lock().unwrap();
        if sp.len() < self.sample_pool_cap {
            sp.push(img);
        }
    }

    /// Build the next batch from stream `s`; `Ok(None)` if the stream ends first (or the epoch
    /// is being dropped).
    fn batch_from(&mut self, s: usize) -> Result<Option<Batch>> {
        let (b, sz, ctx) = (self.batch_size, self.image_size, self.ctx);
        let Some(mut lease) = self.buffer()? else {
            return Ok(None);
        };
        let mut keys = Vec::with_capacity(b);
        let mut taken = self.pos.streams[s].taken;
        while keys.len() < b {
            let st = &mut self.streams[s];
            if let Some((shard, key, out, step)) = st.reorder.remove(&taken) {
                taken += 1;
                if let Some(step) = step {
                    self.moves.push((s, CursorMove::Apply(step)));
                }
                let _ = st.inflight.try_recv(); // release one in-flight slot
                match out {
                    Ok((img, tok)) => {
                        if img.len() != 3 * sz * sz || tok.len() != ctx {
                            bail!(
                                "processor returned {} floats / {} tokens for {shard}#{key}",
                                img.len(),
                                tok.len()
                            );
                        }
                        self.write_sample(&mut lease, keys.len(), img, &tok);
                        keys.push(format!("{shard}#{key}"));
                        self.last_progress = Instant::now();
                        self.stats.lock().unwrap().samples += 1;
                    }
                    Err(detail) => {
                        self.skiplog
                            .log(&shard, &key, SkipReason::DecodeError, &detail);
                        self.stats.lock().unwrap().skip(SkipReason::DecodeError);
                        let mut m = self.shards.lock().unwrap();
                        let r = m.entry(shard.to_string()).or_default();
                        *r.skipped.entry(SkipReason::DecodeError).or_default() += 1;
                        r.last_error = Some(detail);
                    }
                }
                continue;
            }
            if st.end == Some(taken) {
                self.pos.streams[s].taken = taken;
                if !self.train && !keys.is_empty() {
                    break; // eval: keep the partial last batch
                }
                return Ok(None);
            }
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
            let wait = self.timeout.saturating_sub(self.last_progress.elapsed());
            if wait.is_zero() {
                return Err(self.no_progress_error());
            }
            match st.rx.recv_timeout(wait.min(Duration::from_millis(100))) {
                Ok(Msg::Done {
                    idx,
                    shard,
                    key,
                    out,
                    step,
                }) => {
                    st.reorder.insert(idx, (shard, key, out, step));
                }
                Ok(Msg::Cursor(c)) => self.moves.push((s, CursorMove::Set(c))),
                Ok(Msg::Failed(e)) => bail!("data stream {s}: {e}"),
                Ok(Msg::End { n }) => st.end = Some(n),
                Ok(Msg::Heartbeat) => self.last_progress = Instant::now(),
                Ok(Msg::Event(e)) => self.note_event(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("data stream {s} ended unexpectedly (reader thread died)")
                }
            }
        }
        self.pos.streams[s].taken = taken;
        Ok(Some(Batch {
            lease,
            batch_size: keys.len(),
            image_size: sz,
            context_length: ctx,
            keys,
            stream: s,
        }))
    }
}

/// One decode thread: takes jobs in any order, decodes + augments + tokenizes each with the
/// sample's own RNG (seeded from its stream and index, so which thread runs it does not matter),
/// and sends the result to its stream's consumer.
#[allow(clippy::too_many_arguments)]
fn decoder(
    p: Arc<dyn Processor>,
    job_rx: Receiver<Job>,
    txs: Vec<Sender<Msg>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    spool: Arc<Mutex<Vec<Vec<f32>>>>,
    seed: u64,
    rank: u64,
    epoch: u64,
) {
    let ctx = p.context_length();
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let job = match job_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut rng = order::rng(&[
            seed,
            rank,
            job.stream as u64,
            epoch,
            job.idx,
            order::purpose::AUGMENT,
        ]);
        let n = 3 * p.image_size() * p.image_size();
        let mut img = spool.lock().unwrap().pop().unwrap_or_default();
        img.resize(n, 0.0);
        let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.image_into(&job.raw.image, &mut rng, &mut img)
        })) {
            Ok(Ok(())) => {
                let mut tok = vec![0i64; ctx];
                p.text(&job.raw.caption, &mut tok);
                Ok((img, tok))
            }
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err("panic while decoding".to_string()),
        };
        let msg = Msg::Done {
            idx: job.idx,
            shard: job.raw.shard.clone(),
            key: job.raw.key,
            out,
            step: job.step,
        };
        if txs[job.stream].send(msg).is_err() {
            // consumer gone
        }
    }
}

/// Where a reader starts its stream.
enum Start {
    Beginning,
    /// a saved [`Cursor`] after the stream's first `n` samples: continue there, reading back
    /// only what the epoch still needs
    At(Box<Cursor>, u64),
    /// a version-1 position (a count of samples taken): replay the stream and drop that many
    /// samples without decoding them
    Replay(u64),
}

#[allow(clippy::too_many_arguments)]
fn reader(
    order: OrderCfg,
    s: usize,
    epoch: u64,
    start: Start,
    job_tx: Sender<Job>,
    tx: Sender<Msg>,
    inflight: Sender<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    groups: crate::source::PipeGroups,
) {
    groups.enter();
    let (mut stream, mut idx, skip) = match start {
        Start::Beginning => (SampleStream::new(&order, s, epoch), 0, 0),
        Start::Replay(n) => (SampleStream::new(&order, s, epoch), 0, n),
        Start::At(c, n) => match SampleStream::resume(&order, s, epoch, &c) {
            Ok(st) => (st, n, 0),
            Err(e) => {
                let _ = tx.send(Msg::Failed(format!("{e:#}")));
                return;
            }
        },
    };
    // a replay rebuilds the stream's cursor from the steps of the samples it drops
    let mut replayed = (skip > 0).then(|| Cursor::start(&order, s, epoch));
    while let Some(ev) = stream.next() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        match ev {
            Event::Item(Item::Sample(raw)) => {
                let step = stream.take_step();
                if idx < skip {
                    idx += 1; // fast-forward on resume: no decode
                    let c = replayed.as_mut().expect("replaying");
                    c.apply(step.expect("a sample's step"));
                    if idx == skip && tx.send(Msg::Cursor(Box::new(c.clone()))).is_err() {
                        return;
                    }
                    if idx % 1000 == 999 && tx.send(Msg::Heartbeat).is_err() {
                        return;
                    }
                    continue;
                }
                // wait for an in-flight slot (bounded prefetch); give up when the consumer is gone
                loop {
                    match inflight.send_timeout((), Duration::from_millis(200)) {
                        Ok(()) => break,
                        Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let job = Job {
                    stream: s,
                    idx,
                    raw,
                    step,
                };
                if job_tx.send(job).is_err() {
                    return;
                }
                idx += 1;
            }
            e => {
                if idx < skip {
                    continue; // already counted before the save
                }
                if tx.send(Msg::Event(e)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = tx.send(Msg::End { n: idx });
}

impl Assembler {
    /// The next batch in the streams' round-robin; `None` when every stream has finished.
    fn next_batch(&mut self) -> Option<Result<Batch>> {
        let n = self.streams.len();
        for _ in 0..n {
            let s = self.pos.next_stream;
            if self.pos.streams[s].done || self.pos.streams[s].batches >= self.quota {
                self.pos.streams[s].done = true;
                self.pos.next_stream = (s + 1) % n;
                continue;
            }
            match self.batch_from(s) {
                Ok(Some(b)) => {
                    self.pos.streams[s].batches += 1;
                    self.pos.batches += 1;
                    if self.pos.streams[s].batches >= self.quota {
                        self.pos.streams[s].done = true;
                    }
                    self.pos.next_stream = (s + 1) % n;
                    return Some(Ok(b));
                }
                Ok(None) if self.stop.load(std::sync::atomic::Ordering::Relaxed) => return None,
                Ok(None) => {
                    self.pos.streams[s].done = true;
                    self.pos.next_stream = (s + 1) % n;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        // every stream finished
        if self.pos.batches == 0 && self.stats.lock().unwrap().samples == 0 {
            return Some(Err(self
                .no_progress_error()
                .context("the shards yielded no usable sample")));
        }
        None
    }
}

/// Every batch confirmed as it is returned: the position is after the last one returned.
impl Iterator for EpochIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        let next = self.next_held();
        self.confirm(self.held.len());
        next
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.job_tx = None;
        // a reader blocked on a pipe command (e.g. a hung `aws s3 cp`) is released: EOF
        self.pipe_groups.kill_all();
        // drop our receiver so a blocked assembler fails; join the decode threads (they finish
        // their current sample) and the assembler (it drops the streams' receivers, so blocked
        // senders fail). Reader threads are detached: one may be blocked in a network read and
        // exits (dropping and reaping its source) at its next step.
        self.out = None;
        for t in self.threads.drain(..) {
            if t.thread()
                .name()
                .is_some_and(|n| n.starts_with("clip-data-decode") || n == "clip-data-assemble")
            {
                let _ = t.join();
            }
        }
    }
}
