//! Shard and sample order: resampling, shard shuffle and split, sample shuffle buffer, seeds.
//!
//! Every random decision comes from a PCG64 seeded by [`derive_seed`] over (seed, rank, stream,
//! epoch, purpose) — never from the thread that happens to run it — so the same configuration
//! always yields the same sequence.
//!
//! A *stream* is what OpenCLIP calls a dataloader worker: it owns a disjoint slice of the shards
//! (plain mode) or its own resampling RNG (resampled mode), a sample shuffle buffer, and forms its
//! own batches. The number of streams fixes the data order; how many decode threads serve the
//! streams does not change it (see [`crate::loader`]).

use crate::samples::{Item, RawSample, ShardSamples, SkipReason};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// OpenCLIP's shard shuffle buffer (size, initial).
pub const SHARD_SHUFFLE: (usize, usize) = (2000, 500);
/// OpenCLIP's sample shuffle buffer (size, initial).
pub const SAMPLE_SHUFFLE: (usize, usize) = (5000, 1000);

pub mod purpose {
    pub const SHARD_SHUFFLE: u64 = 1;
    pub const RESAMPLE: u64 = 2;
    pub const SAMPLE_SHUFFLE: u64 = 3;
    pub const AUGMENT: u64 = 4;
    /// the shuffle of a stream whose epoch was split over another world size
    pub const REBALANCE: u64 = 5;
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Mix a list of integers into one 64-bit seed.
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x5EED_C11Fu64, |h, &p| splitmix(h ^ splitmix(p)))
}

pub fn rng(parts: &[u64]) -> Pcg64 {
    Pcg64::seed_from_u64(derive_seed(parts))
}

/// webdataset's streaming shuffle (`_shuffle` + `pick`), exactly: take one, top up by one more
/// while below `bufsize`, emit a random element once at least `initial` are held; drain at the end.
pub struct Shuffle<T> {
    buf: Vec<T>,
    bufsize: usize,
    initial: usize,
    rng: Pcg64,
    /// the buffer index of the last element emitted (swap-removed), for [`Cursor`]'s mirror
    last_pick: usize,
}

impl<T> Shuffle<T> {
    pub fn new(bufsize: usize, initial: usize, rng: Pcg64) -> Self {
        let bufsize = bufsize.max(1);
        Shuffle {
            buf: Vec::new(),
            bufsize,
            initial: initial.min(bufsize),
            rng,
            last_pick: 0,
        }
    }

    /// A shuffle continuing from a saved state: its buffer (in buffer order) and generator.
    pub fn restore(bufsize: usize, initial: usize, buf: Vec<T>, rng: Pcg64) -> Self {
        Shuffle {
            buf,
            ..Self::new(bufsize, initial, rng)
        }
    }

    fn pick(&mut self) -> T {
        let k = self.rng.random_range(0..self.buf.len());
        self.last_pick = k;
        self.buf.swap_remove(k)
    }

    /// Drive one step with `next` as the source; `None` when source and buffer are empty.
    pub fn next_from(&mut self, mut next: impl FnMut() -> Option<T>) -> Option<T> {
        loop {
            match next() {
                Some(x) => {
                    self.buf.push(x);
                    if self.buf.len() < self.bufsize {
                        if let Some(y) = next() {
                            self.buf.push(y);
                        }
                    }
                    if self.buf.len() >= self.initial {
                        return Some(self.pick());
                    }
                }
                None => {
                    return if self.buf.is_empty() {
                        None
                    } else {
                        Some(self.pick())
                    };
                }
            }
        }
    }
}

/// A run of one shard's samples in a stream's sequence: a whole shard in a normal epoch. After a
/// resume on another world size ([`crate::rebalance`]) a stream reads explicit pieces: the rest
/// of a shard another stream had begun (from byte `offset`), or part of a shard split between
/// two streams (`skip` usable samples, then at most `take`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub url: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take: Option<u64>,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

impl Piece {
    pub fn whole(url: String) -> Piece {
        Piece {
            url,
            offset: 0,
            skip: 0,
            take: None,
        }
    }
}

/// Shard-level configuration shared by the streams of one rank.
#[derive(Clone, Debug)]
pub struct OrderCfg {
    pub urls: Arc<Vec<String>>,
    pub weights: Arc<Vec<f64>>,
    pub resampled: bool,
    /// training order (shuffles, split by rank); false = eval: in order, split by stream only
    pub train: bool,
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    pub streams: usize,
    pub shard_shuffle: (usize, usize),
    pub sample_shuffle: (usize, usize),
    /// every stream's explicit sequence of pieces, when its epoch was split over another world
    /// size ([`crate::rebalance`]); `None`: the sequences follow from the fields above
    pub pieces: Option<Arc<Vec<Vec<Piece>>>>,
}

impl OrderCfg {
    pub fn check(&self) -> Result<()> {
        if self.urls.is_empty() {
            bail!("no shards");
        }
        if !self.resampled && self.train && self.urls.len() < self.streams * self.world {
            bail!(
                "number of shards ({}) must be >= workers ({}) x world size ({}) without --dataset-resampled",
                self.urls.len(),
                self.streams,
                self.world
            );
        }
        if self.weights.iter().any(|w| *w != 1.0) && !self.resampled {
            bail!("--train-data-upsampling-factors needs --dataset-resampled");
        }
        Ok(())
    }

    /// The shard URLs stream `stream` reads in `epoch` (endless when resampled).
    pub fn shard_sequence(
        &self,
        stream: usize,
        epoch: u64,
    ) -> Box<dyn Iterator<Item = String> + Send> {
        if self.resampled {
            let mut r = rng(&[
                self.seed,
                self.rank as u64,
                stream as u64,
                epoch,
                purpose::RESAMPLE,
            ]);
            let urls = self.urls.clone();
            let total: f64 = self.weights.iter().sum();
            let cum: Vec<f64> = self
                .weights
                .iter()
                .scan(0.0, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect();
            return Box::new(std::iter::from_fn(move || {
                let x = r.random::<f64>() * total;
                let i = cum.partition_point(|&c| c <= x).min(urls.len() - 1);
                Some(urls[i].clone())
            }));
        }
        let all = self.epoch_shards(epoch);
        let (rank, world) = if self.train {
            (self.rank, self.world)
        } else {
            (0, 1)
        };
        Box::new(stride(&all, (rank, world), (stream, self.streams)).into_iter())
    }

    /// Every shard in the (plain) order of `epoch`, before the split by rank and stream:
    /// shuffled for training, as listed for evaluation.
    pub fn epoch_shards(&self, epoch: u64) -> Vec<String> {
        if !self.train {
            return self.urls.to_vec();
        }
        let mut sh = Shuffle::new(
            self.shard_shuffle.0,
            self.shard_shuffle.1,
            rng(&[self.seed, epoch, purpose::SHARD_SHUFFLE]),
        );
        let mut it = self.urls.iter().cloned();
        std::iter::from_fn(|| sh.next_from(|| it.next())).collect()
    }

    /// What stream `stream` reads in `epoch`: its explicit pieces, else its whole shards.
    pub fn pieces(&self, stream: usize, epoch: u64) -> Box<dyn Iterator<Item = Piece> + Send> {
        match &self.pieces {
            Some(all) => Box::new(all[stream].clone().into_iter()),
            None => Box::new(self.shard_sequence(stream, epoch).map(Piece::whole)),
        }
    }
}

/// The shards of `all` (an epoch's order) that stream `stream` of `streams` of rank `rank` of
/// `world` reads: every `world`-th from `rank`, of those every `streams`-th from `stream`.
pub fn stride(
    all: &[String],
    (rank, world): (usize, usize),
    (stream, streams): (usize, usize),
) -> Vec<String> {
    all.iter()
        .skip(rank)
        .step_by(world)
        .skip(stream)
        .step_by(streams)
        .cloned()
        .collect()
}

/// What a stream yields: its shards' items (samples after the shuffle buffer, skips as they
/// come) and, interleaved, which shards finished.
#[derive(Debug)]
pub enum Event {
    Item(Item),
    /// a shard was finished: how many usable samples it had
    ShardDone {
        shard: Arc<str>,
        samples: u64,
    },
}

/// One sample by where its tar members lie in its shard (see [`RawSample::offset`]): what a
/// saved position lists for the samples waiting in a shuffle buffer, instead of their bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub shard: Arc<str>,
    pub offset: u64,
    pub len: u64,
}

impl Member {
    fn of(s: &RawSample) -> Member {
        Member {
            shard: s.shard.clone(),
            offset: s.offset,
            len: s.len,
        }
    }
}

/// Where a stream's shard reading stands.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReadState {
    /// shards taken from the stream's shard sequence so far (the one being read included)
    pub shards_taken: u64,
    /// the shard being read: its URL, the offset where reading continues (`None`: its archive
    /// ended, its `ShardDone` not yet reported) and the usable samples it gave so far
    pub current: Option<(Arc<str>, Option<u64>, u64)>,
    /// consecutive shards that gave no sample (the resampled stream's guard)
    pub empty_shards: u64,
    /// the shard sequence is exhausted
    pub source_done: bool,
}

/// What emitting one sample changed in its stream: the samples read into the shuffle buffer
/// since the previous one, the buffer index emitted, the generator after the pick, and where
/// reading stands. Applied in order to a [`Cursor`] it reproduces the stream's state after that
/// sample without its bytes.
#[derive(Clone, Debug)]
pub struct Step {
    pub pushed: Vec<Member>,
    pub pick: usize,
    pub rng: Option<Pcg64>,
    pub read: ReadState,
}

/// A stream's state after the samples a consumer has taken: the members waiting in the shuffle
/// buffer (in buffer order), the shuffle's generator and where reading stands. The reader runs
/// ahead of the consumer; the consumer keeps this mirror by applying each taken sample's [`Step`].
/// In JSON (checkpoints) it is a [`SavedCursor`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "SavedCursor", try_from = "SavedCursor")]
pub struct Cursor {
    pub waiting: Vec<Member>,
    pub rng: Option<Pcg64>,
    pub read: ReadState,
}

impl Cursor {
    /// The state of stream `stream` before its first sample.
    pub fn start(cfg: &OrderCfg, stream: usize, epoch: u64) -> Cursor {
        Cursor {
            waiting: Vec::new(),
            rng: cfg.train.then(|| shuffle_rng(cfg, stream, epoch)),
            read: ReadState::default(),
        }
    }

    /// The webdataset shuffle's own moves: push what was read, swap-remove the pick.
    pub fn apply(&mut self, step: Step) {
        self.waiting.extend(step.pushed);
        if !self.waiting.is_empty() {
            self.waiting.swap_remove(step.pick);
        }
        if step.rng.is_some() {
            self.rng = step.rng;
        }
        self.read = step.read;
    }
}

/// A [`Cursor`] as checkpoints store it: shard URLs once, members as numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedCursor {
    /// the shard URLs `current` and `waiting` refer to by index
    urls: Vec<String>,
    shards_taken: u64,
    /// (URL index, offset where reading continues — null: the archive ended —, samples so far)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<(usize, Option<u64>, u64)>,
    /// the shuffle buffer, in buffer order: [URL index, byte offset, byte length]
    waiting: Vec<[u64; 3]>,
    /// the shuffle generator as its own JSON text: its 128-bit words cannot travel through
    /// serde's untagged enums (the checkpoint's `SavedPositions`) as numbers
    rng: Option<String>,
    empty_shards: u64,
    source_done: bool,
}

impl From<Cursor> for SavedCursor {
    fn from(c: Cursor) -> SavedCursor {
        let mut urls: Vec<Arc<str>> = Vec::new();
        let mut index = std::collections::HashMap::<Arc<str>, usize>::new();
        let mut idx = |u: &Arc<str>| {
            *index.entry(u.clone()).or_insert_with(|| {
                urls.push(u.clone());
                urls.len() - 1
            })
        };
        let current = c.read.current.as_ref().map(|(u, o, n)| (idx(u), *o, *n));
        let waiting = c
            .waiting
            .iter()
            .map(|m| [idx(&m.shard) as u64, m.offset, m.len])
            .collect();
        SavedCursor {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            shards_taken: c.read.shards_taken,
            current,
            waiting,
            rng: c
                .rng
                .map(|r| serde_json::to_string(&r).expect("a generator serialises")),
            empty_shards: c.read.empty_shards,
            source_done: c.read.source_done,
        }
    }
}

impl TryFrom<SavedCursor> for Cursor {
    type Error = String;
    fn try_from(s: SavedCursor) -> std::result::Result<Cursor, String> {
        let urls: Vec<Arc<str>> = s.urls.iter().map(|u| Arc::from(u.as_str())).collect();
        let url = |i: u64| {
            urls.get(i as usize)
                .cloned()
                .ok_or_else(|| format!("data position: shard index {i} out of {}", urls.len()))
        };
        let current = match s.current {
            Some((i, o, n)) => Some((url(i as u64)?, o, n)),
            None => None,
        };
        let waiting = s
            .waiting
            .iter()
            .map(|&[i, offset, len]| {
                Ok(Member {
                    shard: url(i)?,
                    offset,
                    len,
                })
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let rng = match s.rng {
            Some(r) => Some(serde_json::from_str(&r).map_err(|e| format!("data position: {e}"))?),
            None => None,
        };
        Ok(Cursor {
            waiting,
            rng,
            read: ReadState {
                shards_taken: s.shards_taken,
                current,
                empty_shards: s.empty_shards,
                source_done: s.source_done,
            },
        })
    }
}

fn shuffle_rng(cfg: &OrderCfg, stream: usize, epoch: u64) -> Pcg64 {
    rng(&[
        cfg.seed,
        cfg.rank as u64,
        stream as u64,
        epoch,
        purpose::SAMPLE_SHUFFLE,
    ])
}

/// The piece a stream is reading: its samples, how many usable ones it gave so far (after the
/// skipped ones), how many it still skips, and its limit.
struct Reading {
    samples: ShardSamples,
    n: u64,
    skip: u64,
    take: Option<u64>,
}

/// The sample stream of one (rank, stream, epoch).
pub struct SampleStream {
    shards: Box<dyn Iterator<Item = Piece> + Send>,
    current: Option<Reading>,
    shuffle: Option<Shuffle<RawSample>>,
    events: VecDeque<Event>,
    source_done: bool,
    /// consecutive shards that yielded nothing (guards resampled mode from spinning forever)
    empty_shards: u64,
    max_empty_shards: u64,
    shards_taken: u64,
    /// samples read since the last one emitted, and the last emission's [`Step`]
    pulled: Vec<Member>,
    step: Option<Step>,
}

impl SampleStream {
    pub fn new(cfg: &OrderCfg, stream: usize, epoch: u64) -> SampleStream {
        let shuffle = cfg.train.then(|| {
            Shuffle::new(
                cfg.sample_shuffle.0,
                cfg.sample_shuffle.1,
                shuffle_rng(cfg, stream, epoch),
            )
        });
        SampleStream {
            shards: cfg.pieces(stream, epoch),
            current: None,
            shuffle,
            events: VecDeque::new(),
            source_done: false,
            empty_shards: 0,
            // only an endless (resampled) stream needs this guard; a plain one ends with its list
            max_empty_shards: if cfg.resampled {
                (cfg.urls.len() as u64 * 4).max(64)
            } else {
                u64::MAX
            },
            shards_taken: 0,
            pulled: Vec::new(),
            step: None,
        }
    }

    /// The stream continuing from `at`: the waiting members are read back by their byte ranges
    /// ([`fetch_members`]), the shard being read is reopened at its offset, the shard sequence
    /// continues after the shards already taken. Nothing the consumer already had is read again.
    pub fn resume(cfg: &OrderCfg, stream: usize, epoch: u64, at: &Cursor) -> Result<SampleStream> {
        let mut s = SampleStream::new(cfg, stream, epoch);
        let r = &at.read;
        let piece = match r.shards_taken {
            0 => None,
            n => s.shards.nth(n as usize - 1),
        };
        s.shards_taken = r.shards_taken;
        s.empty_shards = r.empty_shards;
        s.source_done = r.source_done;
        match &r.current {
            Some((url, Some(offset), n)) => {
                s.current = Some(Reading {
                    samples: ShardSamples::open_range(url, *offset, None),
                    n: *n,
                    skip: 0, // the offset is past the skipped samples
                    take: piece.and_then(|p| p.take),
                })
            }
            Some((url, None, n)) => s.shard_done(url.clone(), *n),
            None => {}
        }
        if let (Some(sh), Some(rng)) = (s.shuffle.take(), &at.rng) {
            let buf = fetch_members(&at.waiting)?;
            s.shuffle = Some(Shuffle::restore(sh.bufsize, sh.initial, buf, rng.clone()));
        }
        Ok(s)
    }

    /// The [`Step`] of the sample [`Iterator::next`] just returned (taken once).
    pub fn take_step(&mut self) -> Option<Step> {
        self.step.take()
    }

    fn read_state(&self) -> ReadState {
        ReadState {
            shards_taken: self.shards_taken,
            current: self
                .current
                .as_ref()
                .map(|c| (c.samples.shard().clone(), c.samples.resume_offset(), c.n)),
            empty_shards: self.empty_shards,
            source_done: self.source_done,
        }
    }

    fn shard_done(&mut self, shard: Arc<str>, samples: u64) {
        if samples == 0 {
            self.empty_shards += 1;
        }
        self.events.push_back(Event::ShardDone { shard, samples });
    }

    /// Next usable raw sample in shard order (before the shuffle), queueing skip events.
    fn next_raw(&mut self) -> Option<RawSample> {
        loop {
            if self.source_done {
                return None;
            }
            if self.current.is_none() {
                if self.empty_shards >= self.max_empty_shards {
                    // resampled mode with nothing usable: stop the stream; the loader reports why
                    self.source_done = true;
                    return None;
                }
                match self.shards.next() {
                    Some(p) => {
                        self.shards_taken += 1;
                        self.current = Some(Reading {
                            samples: ShardSamples::open_range(&p.url, p.offset, None),
                            n: 0,
                            skip: p.skip,
                            take: p.take,
                        });
                    }
                    None => {
                        self.source_done = true;
                        return None;
                    }
                }
            }
            let cur = self.current.as_mut().unwrap();
            let item = match cur.take {
                Some(t) if cur.n >= t => None, // its share of a split shard is read
                _ => cur.samples.next(),
            };
            match item {
                // the part of a split shard another stream reads (its skips are reported there)
                Some(_) if cur.skip > 0 => {
                    if matches!(item, Some(Item::Sample(_))) {
                        cur.skip -= 1;
                    }
                }
                Some(Item::Sample(s)) => {
                    cur.n += 1;
                    self.empty_shards = 0;
                    self.pulled.push(Member::of(&s));
                    return Some(s);
                }
                Some(skip @ Item::Skip { .. }) => self.events.push_back(Event::Item(skip)),
                None => {
                    let cur = self.current.take().unwrap();
                    self.shard_done(cur.samples.shard().clone(), cur.n);
                }
            }
        }
    }
}

/// Reads back the samples `members` name, in that order: per shard, adjacent members coalesced
/// into one range (one Range GET on `s3://`, one seek on a file); a `pipe:` shard, which
/// cannot seek, is read once up to its last member. An error names the shard and what failed:
/// a resumed stream must not silently lose samples.
pub fn fetch_members(members: &[Member]) -> Result<Vec<RawSample>> {
    use std::collections::{BTreeMap, HashMap};
    let mut by_shard: BTreeMap<&Arc<str>, Vec<(u64, u64)>> = BTreeMap::new();
    for m in members {
        by_shard
            .entry(&m.shard)
            .or_default()
            .push((m.offset, m.offset + m.len));
    }
    let mut found: HashMap<(Arc<str>, u64), RawSample> = HashMap::new();
    for (shard, mut ranges) in by_shard {
        ranges.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match runs.last_mut() {
                Some(last) if last.1 == a || shard.starts_with("pipe:") => last.1 = last.1.max(b),
                _ => runs.push((a, b)),
            }
        }
        for (a, b) in runs {
            for item in ShardSamples::open_range(shard, a, Some(b)) {
                match item {
                    Item::Sample(s) => {
                        found.insert((s.shard.clone(), s.offset), s);
                    }
                    Item::Skip {
                        reason: r @ (SkipReason::OpenFailed | SkipReason::TruncatedTar),
                        detail,
                        ..
                    } => bail!(
                        "{shard}: cannot read back bytes {a}..{b} (samples waiting in the shuffle buffer): {} {detail}",
                        r.as_str()
                    ),
                    Item::Skip { .. } => {}
                }
            }
        }
    }
    members
        .iter()
        .map(|m| {
            // `get`, not `remove`: a resampled stream may hold one member twice
            found.get(&(m.shard.clone(), m.offset)).cloned().with_context(|| {
                format!(
                    "{}: no sample at byte {} (waiting in the shuffle buffer when the checkpoint was taken): the shard changed since",
                    m.shard, m.offset
                )
            })
        })
        .collect()
}

impl Iterator for SampleStream {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let (s, pick, rng) = match self.shuffle.take() {
            Some(mut sh) => {
                let r = sh.next_from(|| self.next_raw());
                let (pick, rng) = (sh.last_pick, sh.rng.clone());
                self.shuffle = Some(sh);
                (r, pick, Some(rng))
            }
            None => (self.next_raw(), 0, None),
        };
        match s {
            Some(s) => {
                self.step = Some(Step {
                    pushed: std::mem::take(&mut self.pulled),
                    pick,
                    rng,
                    read: self.read_state(),
                });
                self.events.push_back(Event::Item(Item::Sample(s)));
                self.events.pop_front()
            }
            None => self.events.pop_front(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: usize, resampled: bool, streams: usize, world: usize, rank: usize) -> OrderCfg {
        OrderCfg {
            urls: Arc::new((0..n).map(|i| format!("s{i:03}")).collect()),
            weights: Arc::new(vec![1.0; n]),
            resampled,
            train: true,
            seed: 7,
            rank,
            world,
            streams,
            shard_shuffle: SHARD_SHUFFLE,
            sample_shuffle: SAMPLE_SHUFFLE,
            pieces: None,
        }
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut sh = Shuffle::new(10, 3, rng(&[1]));
        let mut it = 0..100;
        let out: Vec<i32> = std::iter::from_fn(|| sh.next_from(|| it.next())).collect();
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(out, (0..100).collect::<Vec<_>>());
        let mut sh2 = Shuffle::new(10, 3, rng(&[1]));
        let mut it2 = 0..100;
        let out2: Vec<i32> = std::iter::from_fn(|| sh2.next_from(|| it2.next())).collect();
        assert_eq!(out, out2);
    }

    #[test]
    fn plain_split_is_a_partition() {
        let mut all = Vec::new();
        for rank in 0..2 {
            let c = cfg(20, false, 3, 2, rank);
            c.check().unwrap();
            for s in 0..3 {
                all.extend(c.shard_sequence(s, 0));
            }
        }
        all.sort();
        assert_eq!(all, cfg(20, false, 3, 2, 0).urls.to_vec());
        // epoch changes the order
        let c = cfg(20, false, 1, 1, 0);
        assert_ne!(
            c.shard_sequence(0, 0).collect::<Vec<_>>(),
            c.shard_sequence(0, 1).collect::<Vec<_>>()
        );
        assert!(cfg(5, false, 3, 2, 0)
            .check()
            .unwrap_err()
            .to_string()
            .contains("must be >="));
    }

    #[test]
    fn resampled_weighted() {
        let mut c = cfg(2, true, 1, 1, 0);
        c.weights = Arc::new(vec![1.0, 3.0]);
        let n = 40000;
        let draws: Vec<String> = c.shard_sequence(0, 0).take(n).collect();
        let frac = draws.iter().filter(|u| *u == "s001").count() as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.01, "{frac}");
        // seeded per (rank, stream, epoch)
        assert_eq!(
            c.shard_sequence(0, 0).take(50).collect::<Vec<_>>(),
            draws[..50].to_vec()
        );
        assert_ne!(
            c.shard_sequence(1, 0).take(50).collect::<Vec<_>>(),
            draws[..50].to_vec()
        );
        assert_ne!(
            c.shard_sequence(0, 1).take(50).collect::<Vec<_>>(),
            draws[..50].to_vec()
        );
    }
}
