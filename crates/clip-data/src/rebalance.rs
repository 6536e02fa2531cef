//! The rest of an epoch resumed on another world size.
//!
//! A mid-epoch checkpoint holds every rank's [`Position`]: per stream, the members waiting in its
//! shuffle buffer, the shard it was reading and the byte offset where its next sample starts,
//! how many shards of its sequence it took. That is exactly the work the epoch still had.
//!
//! **Plain shards** ([`split_epoch`]): every old stream's remaining work, in (rank, stream)
//! order — its waiting members, the rest of its current shard, its shards not yet opened — is
//! capped at what its quota still allowed (the batches it had left × the batch size, as the
//! uninterrupted epoch would have cut it), concatenated, and cut into one equal run per new
//! stream (new rank r's stream s takes run `r × streams + s`), each a whole number of batches
//! (and of `--accum-freq` steps). A cut inside a shard splits it by sample count: the first
//! stream takes its first `k` samples, the next skips them (reading past them, the one cost of
//! the split). Members go back into the new stream's shuffle buffer (read back by byte range),
//! the pieces of shards follow. So no sample of the interrupted epoch is trained twice, and none
//! is left out but the remainder that makes no whole batch on every new stream (counted in the
//! summary). The counts come from `sizes.json` beside the shards when there is one, else from
//! `--train-num-samples` ÷ shards; when those are off, a stream ends early (the trainer ends
//! the epoch on every rank and says so) or keeps samples it does not reach.
//!
//! Each new stream's explicit pieces and its shuffle's seed are part of the new position, so the
//! split epoch resumes exactly like any other, on its own world size or split again.
//!
//! **Resampled shards** ([`resampled_restart`]): there is no set of samples to preserve; each new
//! stream draws afresh from a seed derived from the step.

use crate::loader::{epoch_plan, Loader, Position, StreamPos};
use crate::order::{self, Cursor, Member, Piece, ReadState};
use anyhow::{bail, Context, Result};

/// This rank's part of the rest of a split epoch.
#[derive(Debug, Clone)]
pub struct Split {
    /// where this rank's streams start (save it like any position)
    pub position: Position,
    /// batches this rank takes in the rest of the epoch
    pub batches: u64,
    /// what was split, for the log (one line)
    pub summary: String,
}

/// Remaining work: members waiting in a shuffle buffer, or a piece of a shard with its
/// (counted or estimated) number of samples.
enum Work {
    Members(Vec<Member>),
    Piece(Piece, u64),
}

impl Work {
    fn count(&self) -> u64 {
        match self {
            Work::Members(m) => m.len() as u64,
            Work::Piece(_, n) => *n,
        }
    }

    /// The first `k` samples (`k` below [`Work::count`]) and the rest.
    fn split(self, k: u64) -> (Work, Work) {
        match self {
            Work::Members(mut m) => {
                let rest = m.split_off(k as usize);
                (Work::Members(m), Work::Members(rest))
            }
            Work::Piece(p, n) => {
                let rest = Piece {
                    skip: p.skip + k,
                    take: p.take.map(|t| t - k),
                    ..p.clone()
                };
                (
                    Work::Piece(Piece { take: Some(k), ..p }, k),
                    Work::Piece(rest, n - k),
                )
            }
        }
    }
}

/// Splits the rest of the epoch `saved` (every old rank's position, in rank order) over the
/// world `loader` is configured for; this rank's part. `multiple`: each stream's batch count is
/// a multiple of it (the trainer's `--accum-freq`).
pub fn split_epoch(loader: &Loader, saved: &[Position], multiple: u64) -> Result<Split> {
    let cfg = loader.config();
    let first = check_saved(loader, saved)?;
    if first.resampled {
        bail!("split_epoch: a resampled epoch restarts from a new seed (resampled_restart)");
    }
    let (old_world, old_streams, b) = (saved.len(), first.streams.len(), cfg.batch_size as u64);
    let num_samples = cfg
        .num_samples
        .context("the epoch length (--train-num-samples)")?;
    let quota = first
        .quota
        .unwrap_or_else(|| epoch_plan(num_samples, cfg.batch_size, old_world, old_streams).0);
    let urls = &loader.order().urls;
    let sizes = crate::shards::shard_sizes(urls);
    let estimate = num_samples.div_ceil(urls.len() as u64);
    let count = |url: &str| sizes.as_ref().and_then(|m| m.get(url).copied());
    let count = |url: &str| count(url).unwrap_or(estimate);
    let mut work = Vec::new();
    let (mut waiting, mut partial, mut whole) = (0, 0, 0);
    // the epoch's shard order once, not once per old stream (thousands at scale)
    let shuffled = loader.order().epoch_shards(first.epoch);
    for (rank, pos) in saved.iter().enumerate() {
        for (s, sp) in pos.streams.iter().enumerate() {
            if sp.done {
                continue; // its quota is reached or its shards ran out
            }
            let sequence = match &sp.pieces {
                Some(p) => p.clone(),
                None => order::stride(&shuffled, (rank, old_world), (s, old_streams))
                    .into_iter()
                    .map(Piece::whole)
                    .collect(),
            };
            let rest = stream_rest(sequence, sp, &count)
                .with_context(|| format!("data position of rank {rank}, stream {s}"))?;
            for w in capped(rest, quota.saturating_sub(sp.batches) * b) {
                match &w {
                    Work::Members(m) => waiting += m.len() as u64,
                    Work::Piece(p, _) if p.offset > 0 => partial += 1,
                    Work::Piece(..) => whole += 1,
                }
                work.push(w);
            }
        }
    }
    let total: u64 = work.iter().map(Work::count).sum();
    let (world, streams) = (cfg.world, loader.order().streams);
    let runs = (world * streams) as u64;
    let per_stream = total / (runs * b * multiple.max(1)) * multiple.max(1);
    let mut runs_of = cut(work, runs as usize, per_stream * b);
    let mine: Vec<Vec<Work>> = runs_of
        .drain(cfg.rank * streams..(cfg.rank + 1) * streams)
        .collect();
    let salt = saved.iter().map(|p| p.batches).sum::<u64>();
    let position = Position {
        version: 2,
        epoch: first.epoch,
        batches: 0,
        next_stream: 0,
        streams: mine
            .into_iter()
            .enumerate()
            .map(|(s, run)| {
                new_stream(
                    loader,
                    first.epoch,
                    s,
                    run,
                    per_stream,
                    [old_world as u64, salt],
                )
            })
            .collect(),
        seed: cfg.seed,
        rank: cfg.rank,
        world,
        batch_size: cfg.batch_size,
        resampled: false,
        num_shards: urls.len(),
        quota: Some(per_stream),
        reseed: None,
    };
    let summary = format!(
        "{total} samples of epoch {} left on {old_world}×{old_streams} streams ({waiting} waiting in shuffle buffers, {partial} shards begun, {whole} not begun; counts {}) split over {world}×{streams} streams: {per_stream} batches of {b} each, {} samples left out (no whole batch for every stream)",
        first.epoch,
        match sizes {
            Some(_) => "from sizes.json".to_string(),
            None => format!("estimated at {estimate} samples per shard"),
        },
        total - per_stream * b * runs,
    );
    Ok(Split {
        position,
        batches: per_stream * streams as u64,
        summary,
    })
}

/// The rest of a resampled epoch on this world: every stream draws afresh from `reseed` (derive
/// it from the step); `batches`: what this rank takes, spread over its streams.
pub fn resampled_restart(
    loader: &Loader,
    saved: &[Position],
    reseed: u64,
    batches: u64,
) -> Result<Position> {
    let first = check_saved(loader, saved)?;
    let cfg = loader.config();
    let streams = loader.order().streams;
    let fresh = StreamPos {
        taken: 0,
        batches: 0,
        done: batches == 0,
        read: None,
        pieces: None,
    };
    Ok(Position {
        version: 2,
        epoch: first.epoch,
        batches: 0,
        next_stream: 0,
        streams: vec![fresh; streams],
        seed: cfg.seed,
        rank: cfg.rank,
        world: cfg.world,
        batch_size: cfg.batch_size,
        resampled: first.resampled,
        num_shards: loader.order().urls.len(),
        quota: Some(batches.div_ceil(streams as u64)),
        reseed: Some(reseed),
    })
}

/// The saved positions must be one epoch of this data order, taken on one layout.
fn check_saved<'a>(loader: &Loader, saved: &'a [Position]) -> Result<&'a Position> {
    let cfg = loader.config();
    let Some(first) = saved.first() else {
        bail!("no saved data position to split")
    };
    for (rank, p) in saved.iter().enumerate() {
        let same = p.epoch == first.epoch
            && p.streams.len() == first.streams.len()
            && p.rank == rank
            && p.world == saved.len()
            && (p.seed, p.batch_size, p.resampled, p.num_shards)
                == (
                    cfg.seed,
                    cfg.batch_size,
                    loader.order().resampled,
                    loader.order().urls.len(),
                );
        if !same {
            bail!(
                "data position of rank {rank} does not match this data order (saved: seed {}, rank {}/{}, batch {}, resampled {}, {} shards, epoch {}; now: seed {}, batch {}, resampled {}, {} shards, epoch {})",
                p.seed, p.rank, p.world, p.batch_size, p.resampled, p.num_shards, p.epoch,
                cfg.seed, cfg.batch_size, loader.order().resampled, loader.order().urls.len(), first.epoch
            );
        }
    }
    Ok(first)
}

/// What a stream whose sequence is `sequence` still had to read: its waiting members, the rest
/// of its current shard, the pieces of its sequence it had not taken.
fn stream_rest(
    sequence: Vec<Piece>,
    sp: &StreamPos,
    count: &dyn Fn(&str) -> u64,
) -> Result<Vec<Work>> {
    let Some(c) = &sp.read else {
        bail!("a version-1 position (an older clip-train's checkpoint: sample counts only) cannot be split over another world size: resume it on its own world size first, then from a newer checkpoint")
    };
    let mut rest = vec![Work::Members(c.waiting.clone())];
    let mut sequence = sequence.into_iter();
    let current = match c.read.shards_taken {
        0 => None,
        n => sequence.nth(n as usize - 1),
    };
    if let Some((url, Some(offset), n)) = &c.read.current {
        let p = current.context("the position reads a shard beyond its sequence")?;
        let left = match p.take {
            Some(t) => t.saturating_sub(*n),
            None => count(url).saturating_sub(p.skip + n),
        };
        let piece = Piece {
            url: url.to_string(),
            offset: *offset,
            skip: 0,
            take: p.take.map(|t| t.saturating_sub(*n)),
        };
        rest.push(Work::Piece(piece, left));
    }
    for p in sequence {
        let n = p
            .take
            .unwrap_or_else(|| count(&p.url).saturating_sub(p.skip));
        rest.push(Work::Piece(p, n));
    }
    Ok(rest)
}

/// The first `limit` samples of `work`.
fn capped(work: Vec<Work>, mut limit: u64) -> Vec<Work> {
    let mut out = Vec::new();
    for w in work {
        if limit == 0 {
            break;
        }
        let n = w.count();
        if n <= limit {
            limit -= n;
            out.push(w);
        } else {
            out.push(w.split(limit).0);
            limit = 0;
        }
    }
    out
}

/// `work` cut into `runs` consecutive runs of `size` samples (the rest dropped).
fn cut(work: Vec<Work>, runs: usize, size: u64) -> Vec<Vec<Work>> {
    let mut out: Vec<Vec<Work>> = Vec::with_capacity(runs);
    let mut run = Vec::new();
    let mut need = size;
    for mut w in work {
        while size > 0 && out.len() < runs {
            let n = w.count();
            if n < need {
                need -= n;
                run.push(w);
                break;
            }
            let (head, rest) = w.split(need);
            run.push(head);
            out.push(std::mem::take(&mut run));
            need = size;
            w = rest;
            if w.count() == 0 {
                break;
            }
        }
    }
    out.resize_with(runs, Vec::new);
    out
}

/// New stream `s` of this rank starting on `run`: its members back in the shuffle buffer (under
/// a generator of its own), its pieces as its shard sequence.
fn new_stream(
    loader: &Loader,
    epoch: u64,
    s: usize,
    run: Vec<Work>,
    batches: u64,
    salt: [u64; 2],
) -> StreamPos {
    let cfg = loader.config();
    let (mut waiting, mut pieces) = (Vec::new(), Vec::new());
    for w in run {
        match w {
            Work::Members(m) => waiting.extend(m),
            Work::Piece(p, _) => pieces.push(p),
        }
    }
    let rng = order::rng(&[
        cfg.seed,
        cfg.rank as u64,
        s as u64,
        epoch,
        order::purpose::REBALANCE,
        salt[0],
        salt[1],
    ]);
    StreamPos {
        taken: 0,
        batches: 0,
        done: batches == 0,
        read: Some(Cursor {
            waiting,
            rng: Some(rng),
            read: ReadState::default(),
        }),
        pieces: Some(pieces),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(url: &str, n: u64) -> Work {
        Work::Piece(Piece::whole(url.into()), n)
    }

    fn counts(runs: &[Vec<Work>]) -> Vec<u64> {
        runs.iter()
            .map(|r| r.iter().map(Work::count).sum())
            .collect()
    }

    #[test]
    fn runs_are_equal_consecutive_and_split_shards_by_sample() {
        let m = |i: u64| Member {
            shard: std::sync::Arc::from("a"),
            offset: i,
            len: 1,
        };
        let work = vec![
            Work::Members((0..5).map(m).collect()),
            piece("b", 10),
            piece("c", 10),
        ];
        let runs = cut(work, 3, 8);
        assert_eq!(counts(&runs), vec![8, 8, 8]);
        // run 0: the 5 members and b's first 3 samples; run 1: b from its 4th sample on
        match (&runs[0][1], &runs[1][0]) {
            (Work::Piece(p, 3), Work::Piece(q, 7)) => {
                assert_eq!((p.skip, p.take), (0, Some(3)));
                assert_eq!((q.skip, q.take), (3, None)); // the rest of b, to its end
            }
            _ => panic!("b is split after its 3rd sample"),
        }
        // 25 samples make 3 runs of 8: 1 left out
        let runs = cut(vec![piece("b", 10), piece("c", 15)], 3, 8);
        assert_eq!(counts(&runs), vec![8, 8, 8]);
        // nothing for a run of 0
        assert_eq!(counts(&cut(vec![piece("b", 10)], 2, 0)), vec![0, 0]);
        let capped = capped(vec![piece("b", 10), piece("c", 10)], 12);
        assert_eq!(
            capped.iter().map(Work::count).collect::<Vec<_>>(),
            vec![10, 2]
        );
    }

    #[test]
    fn a_split_piece_of_a_begun_shard_keeps_its_offset() {
        let p = Piece {
            url: "s".into(),
            offset: 4096,
            skip: 0,
            take: None,
        };
        let (a, b) = Work::Piece(p, 9).split(4);
        match (a, b) {
            (Work::Piece(a, 4), Work::Piece(b, 5)) => {
                assert_eq!((a.offset, a.skip, a.take), (4096, 0, Some(4)));
                assert_eq!((b.offset, b.skip, b.take), (4096, 4, None));
            }
            _ => panic!("split into 4 and 5"),
        }
    }
}
