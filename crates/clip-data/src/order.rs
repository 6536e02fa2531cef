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

use crate::samples::{Item, RawSample, ShardSamples};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
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
}

impl<T> Shuffle<T> {
    pub fn new(bufsize: usize, initial: usize, rng: Pcg64) -> Self {
        let bufsize = bufsize.max(1);
        Shuffle {
            buf: Vec::new(),
            bufsize,
            initial: initial.min(bufsize),
            rng,
        }
    }

    fn pick(&mut self) -> T {
        let k = self.rng.random_range(0..self.buf.len());
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
        let all: Vec<String> = if self.train {
            let mut sh = Shuffle::new(
                self.shard_shuffle.0,
                self.shard_shuffle.1,
                rng(&[self.seed, epoch, purpose::SHARD_SHUFFLE]),
            );
            let mut it = self.urls.iter().cloned();
            std::iter::from_fn(|| sh.next_from(|| it.next())).collect()
        } else {
            self.urls.to_vec()
        };
        let (rank, world) = if self.train {
            (self.rank, self.world)
        } else {
            (0, 1)
        };
        let mine: Vec<String> = all
            .into_iter()
            .skip(rank)
            .step_by(world)
            .skip(stream)
            .step_by(self.streams)
            .collect();
        Box::new(mine.into_iter())
    }
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

/// The sample stream of one (rank, stream, epoch).
pub struct SampleStream {
    shards: Box<dyn Iterator<Item = String> + Send>,
    current: Option<(ShardSamples, u64)>,
    shuffle: Option<Shuffle<RawSample>>,
    events: VecDeque<Event>,
    source_done: bool,
    /// consecutive shards that yielded nothing (guards resampled mode from spinning forever)
    empty_shards: u64,
    max_empty_shards: u64,
}

impl SampleStream {
    pub fn new(cfg: &OrderCfg, stream: usize, epoch: u64) -> SampleStream {
        let shuffle = cfg.train.then(|| {
            Shuffle::new(
                cfg.sample_shuffle.0,
                cfg.sample_shuffle.1,
                rng(&[
                    cfg.seed,
                    cfg.rank as u64,
                    stream as u64,
                    epoch,
                    purpose::SAMPLE_SHUFFLE,
                ]),
            )
        });
        SampleStream {
            shards: cfg.shard_sequence(stream, epoch),
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
        }
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
                    Some(url) => self.current = Some((ShardSamples::open(&url), 0)),
                    None => {
                        self.source_done = true;
                        return None;
                    }
                }
            }
            let (cur, n) = self.current.as_mut().unwrap();
            match cur.next() {
                Some(Item::Sample(s)) => {
                    *n += 1;
                    self.empty_shards = 0;
                    return Some(s);
                }
                Some(skip @ Item::Skip { .. }) => self.events.push_back(Event::Item(skip)),
                None => {
                    let (cur, n) = self.current.take().unwrap();
                    if n == 0 {
                        self.empty_shards += 1;
                    }
                    self.events.push_back(Event::ShardDone {
                        shard: cur.shard().clone(),
                        samples: n,
                    });
                }
            }
        }
    }
}

impl Iterator for SampleStream {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let s = match self.shuffle.take() {
            Some(mut sh) => {
                let r = sh.next_from(|| self.next_raw());
                self.shuffle = Some(sh);
                r
            }
            None => self.next_raw(),
        };
        match s {
            Some(s) => {
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
