//! The flight recorder: every rank keeps its last collectives (sequence number, what, start,
//! end), publishes the newest one it entered to rank 0's store, and on a timeout prints its
//! records and names the rank(s) that never entered the collective the others wait in. A
//! heartbeat says only that a rank stopped; this says where, and who the others wait for.
//!
//! Sequence numbers count the job-wide collectives of this rank from 1 (every rank makes the
//! same calls in the same order, so #n is the same call everywhere); point-to-point exchanges
//! are recorded but not numbered, since only the ranks named take part.

use crate::store::StoreClient;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Records kept per rank.
const KEEP: usize = 32;

/// The store key under which `rank` publishes its [`Progress`].
pub(crate) fn progress_key(rank: usize) -> String {
    format!("flight/{rank}")
}

/// One collective of this rank.
#[derive(Clone, Debug)]
struct Record {
    /// `None` for a point-to-point exchange.
    seq: Option<u64>,
    /// The call and its arguments, e.g. `all_reduce (sum) of [1000] f32 (4000 bytes)`.
    what: String,
    start: Instant,
    /// When the call returned (for NCCL: when the work was enqueued on the stream).
    end: Option<Instant>,
}

/// The newest job-wide collective a rank entered, as published to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// 0: none yet.
    pub(crate) seq: u64,
    pub(crate) what: String,
    pub(crate) finished: bool,
}

impl Progress {
    pub(crate) fn encode(&self) -> Vec<u8> {
        format!("{}\t{}\t{}", self.seq, self.finished as u8, self.what).into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '\t');
        let seq = parts.next()?.parse().ok()?;
        let finished = parts.next()? == "1";
        let what = parts.next()?.to_string();
        Some(Progress {
            seq,
            what,
            finished,
        })
    }
}

#[derive(Default)]
struct Ring {
    /// Job-wide collectives entered so far.
    entered: u64,
    records: VecDeque<Record>,
}

/// This rank's flight recorder, shared by its collectives and its watchdog.
pub(crate) struct Recorder {
    rank: usize,
    ring: Mutex<Ring>,
}

/// A collective in flight; [`Recorder::exit`] marks it done.
pub(crate) struct Entry {
    seq: Option<u64>,
    start: Instant,
}

impl Recorder {
    pub(crate) fn new(rank: usize) -> Self {
        Recorder {
            rank,
            ring: Mutex::new(Ring::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the start of a call; `numbered`: a job-wide collective (not point to point).
    pub(crate) fn enter(&self, what: String, numbered: bool) -> Entry {
        let mut ring = self.lock();
        let seq = numbered.then(|| {
            ring.entered += 1;
            ring.entered
        });
        let start = Instant::now();
        if ring.records.len() == KEEP {
            ring.records.pop_front();
        }
        ring.records.push_back(Record {
            seq,
            what,
            start,
            end: None,
        });
        Entry { seq, start }
    }

    /// Records that the call of `entry` returned (successfully or not).
    pub(crate) fn exit(&self, entry: Entry) {
        let mut ring = self.lock();
        let found = ring
            .records
            .iter_mut()
            .rev()
            .find(|r| r.seq == entry.seq && r.start == entry.start);
        if let Some(r) = found {
            r.end = Some(Instant::now());
        }
    }

    /// The newest job-wide collective entered (seq 0 if none).
    pub(crate) fn progress(&self) -> Progress {
        let ring = self.lock();
        let newest = ring.records.iter().rev().find(|r| r.seq.is_some());
        match newest {
            Some(r) => Progress {
                seq: ring.entered,
                what: r.what.clone(),
                finished: r.end.is_some(),
            },
            None => Progress {
                seq: ring.entered,
                what: String::new(),
                finished: true,
            },
        }
    }

    /// Every record, oldest first, one per line under a title line.
    pub(crate) fn dump(&self) -> String {
        let ring = self.lock();
        let now = Instant::now();
        let mut out = format!(
            "flight recorder of rank {} (last {} calls, oldest first):",
            self.rank,
            ring.records.len()
        );
        for r in &ring.records {
            let seq = r.seq.map_or("p2p".to_string(), |s| format!("#{s}"));
            let when = match r.end {
                Some(end) => format!("took {}", fmt_dur(end - r.start)),
                None => "still running".to_string(),
            };
            let _ = write!(
                out,
                "\n  rank {} {seq} {}: started {} ago, {when}",
                self.rank,
                r.what,
                fmt_dur(now - r.start)
            );
        }
        out
    }
}

/// This rank's records and, with a store, who the job waits for (from every rank's published
/// progress; this rank's own is current): what a rank prints on a timeout.
pub(crate) fn report(rec: &Recorder, store: Option<&StoreClient>, world: usize) -> String {
    report_and_laggard(rec, store, world).0
}

/// [`report`], and the first rank that never entered the collective the job waits in (the one
/// a timeout is blamed on; `None` when every rank entered it or nothing could be read).
pub(crate) fn report_and_laggard(
    rec: &Recorder,
    store: Option<&StoreClient>,
    world: usize,
) -> (String, Option<usize>) {
    let mut out = rec.dump();
    let Some(store) = store else {
        return (out, None);
    };
    let progress: Vec<Option<Progress>> = (0..world)
        .map(|r| match r == rec.rank {
            true => Some(rec.progress()),
            // A rank that cannot be read is reported as having published nothing.
            false => store
                .get_now(&progress_key(r))
                .ok()
                .flatten()
                .and_then(|b| Progress::decode(&b)),
        })
        .collect();
    if let Some(line) = diagnose(&progress) {
        out.push_str("\nflight recorder: ");
        out.push_str(&line);
    }
    let laggard = newest(&progress)
        .and_then(|s| (0..world).find(|&r| progress[r].as_ref().is_some_and(|p| p.seq < s)));
    (out, laggard)
}

/// The newest collective any rank entered (`None`: none yet).
fn newest(progress: &[Option<Progress>]) -> Option<u64> {
    progress
        .iter()
        .flatten()
        .map(|p| p.seq)
        .max()
        .filter(|&s| s > 0)
}

/// Publishes `progress` as `rank`'s on entering a collective: one small write with no reply,
/// like a heartbeat, so a rank that stops right after is still placed exactly. Skipped when the
/// store connection is busy (another thread waits in a store call); the watchdog's next poll
/// publishes it then.
pub(crate) fn publish_entry(store: &StoreClient, rank: usize, progress: &Progress) {
    // A broken store is reported by the next call that needs it.
    let _ = store.try_set_quiet(&progress_key(rank), &progress.encode());
}

/// Publishes a recorder's progress to the store when it changed (the watchdog calls it once
/// per poll, which also publishes when a collective finished).
#[derive(Default)]
pub(crate) struct Publisher {
    last: Option<Progress>,
}

impl Publisher {
    pub(crate) fn publish(&mut self, rec: &Recorder, store: &StoreClient) -> crate::Result<()> {
        let now = rec.progress();
        if self.last.as_ref() != Some(&now) {
            store.set(&progress_key(rec.rank), &now.encode())?;
            self.last = Some(now);
        }
        Ok(())
    }
}

/// `1.234s` or `5.6ms`.
fn fmt_dur(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    }
}

/// Who the job waits for, from every rank's published progress (`None`: never published), as
/// one line; `None` when no rank has entered a collective. The collective waited in is the
/// newest any rank entered (#S): ranks whose newest is older never entered it, ranks at #S with
/// another call disagree about what #S is, and when every rank entered it, the ones that have not
/// finished it are named.
pub(crate) fn diagnose(progress: &[Option<Progress>]) -> Option<String> {
    let s = newest(progress)?;
    // What the lowest rank at #S calls it (the others are compared with it).
    let newest = progress.iter().flatten().find(|p| p.seq == s)?;
    let what = &newest.what;
    let mut parts = Vec::new();
    let unknown: Vec<usize> = ranks_where(progress, |p| p.is_none());
    let behind = ranks_where(progress, |p| p.is_some_and(|p| p.seq < s));
    let other = ranks_where(progress, |p| {
        p.is_some_and(|p| p.seq == s && p.what != *what)
    });
    if !behind.is_empty() {
        let last: Vec<String> = behind
            .iter()
            .map(|&r| {
                let p = progress[r].as_ref().expect("published");
                match p.seq {
                    0 => format!("rank {r}: none"),
                    n => format!("rank {r}: #{n} {}", p.what),
                }
            })
            .collect();
        parts.push(format!(
            "{} never entered it (their last: {})",
            fmt_ranks(&behind),
            last.join("; ")
        ));
    }
    for r in other {
        let p = progress[r].as_ref().expect("published");
        parts.push(format!("rank {r} entered #{s} as {} instead", p.what));
    }
    if parts.is_empty() && unknown.is_empty() {
        let running = ranks_where(progress, |p| p.is_some_and(|p| !p.finished));
        if !running.is_empty() {
            parts.push(format!(
                "every rank entered it; {} still in it",
                fmt_ranks(&running)
            ));
        }
    }
    if !unknown.is_empty() {
        parts.push(format!("{} published nothing", fmt_ranks(&unknown)));
    }
    Some(format!("collective #{s} ({what}): {}", parts.join("; ")))
}

fn ranks_where(progress: &[Option<Progress>], f: impl Fn(Option<&Progress>) -> bool) -> Vec<usize> {
    (0..progress.len())
        .filter(|&r| f(progress[r].as_ref()))
        .collect()
}

/// "rank 3", "ranks 2, 3".
fn fmt_ranks(ranks: &[usize]) -> String {
    let list: Vec<String> = ranks.iter().map(usize::to_string).collect();
    let noun = if ranks.len() == 1 { "rank" } else { "ranks" };
    format!("{noun} {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seq: u64, what: &str, finished: bool) -> Option<Progress> {
        Some(Progress {
            seq,
            what: what.into(),
            finished,
        })
    }

    #[test]
    fn progress_round_trips() {
        let x = Progress {
            seq: 7,
            what: "all_reduce (sum) of [3] f32\t(12 bytes)".into(),
            finished: false,
        };
        assert_eq!(Progress::decode(&x.encode()), Some(x));
        assert_eq!(Progress::decode(b"x\t1\ty"), None);
    }

    /// Each case: every rank's progress → the line naming who the job waits for.
    #[test]
    fn diagnoses() {
        let ar = "all_reduce (sum) of [1000] f32 (4000 bytes)";
        let bc = "broadcast of [2] i64 (16 bytes)";
        let cases: Vec<(Vec<Option<Progress>>, Option<String>)> = vec![
            (vec![p(0, "", true), p(0, "", true)], None),
            (
                vec![p(5, ar, false), p(4, bc, true), p(5, ar, false)],
                Some(format!(
                    "collective #5 ({ar}): rank 1 never entered it (their last: rank 1: #4 {bc})"
                )),
            ),
            (
                vec![p(5, ar, false), p(0, "", true), None, p(3, bc, true)],
                Some(format!(
                    "collective #5 ({ar}): ranks 1, 3 never entered it (their last: rank 1: none; \
                     rank 3: #3 {bc}); rank 2 published nothing"
                )),
            ),
            (
                vec![p(5, ar, false), p(5, bc, false)],
                Some(format!(
                    "collective #5 ({ar}): rank 1 entered #5 as {bc} instead"
                )),
            ),
            (
                vec![p(5, ar, false), None],
                Some(format!("collective #5 ({ar}): rank 1 published nothing")),
            ),
            (
                vec![p(5, ar, true), p(5, ar, false), p(5, ar, true)],
                Some(format!(
                    "collective #5 ({ar}): every rank entered it; rank 1 still in it"
                )),
            ),
        ];
        for (progress, want) in cases {
            assert_eq!(diagnose(&progress), want, "{progress:?}");
        }
    }

    #[test]
    fn keeps_the_last_calls_numbering_only_collectives() {
        let rec = Recorder::new(2);
        for i in 0..40 {
            let e = rec.enter(format!("call {i}"), i % 10 != 0);
            rec.exit(e);
        }
        let _open = rec.enter("all_reduce (sum) of [1] f32 (4 bytes)".into(), true);
        let dump = rec.dump();
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(
            lines[0],
            "flight recorder of rank 2 (last 32 calls, oldest first):"
        );
        assert_eq!(lines.len(), 33);
        // Calls 9..39 (36 numbered before: 40 minus 0, 10, 20, 30), then the open one, #37.
        assert!(
            lines[1].starts_with("  rank 2 #9 call 9: started "),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("  rank 2 p2p call 10: started "),
            "{}",
            lines[2]
        );
        assert!(lines[1].contains(", took "), "{}", lines[1]);
        assert!(
            lines[32].starts_with("  rank 2 #37 all_reduce (sum) of [1] f32 (4 bytes): started ")
                && lines[32].ends_with(", still running"),
            "{}",
            lines[32]
        );
        let want = Progress {
            seq: 37,
            what: "all_reduce (sum) of [1] f32 (4 bytes)".into(),
            finished: false,
        };
        assert_eq!(rec.progress(), want);
    }
}
