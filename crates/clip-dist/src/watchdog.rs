//! A thread that ends this process when the job can no longer make progress: a rank died (its
//! store connection closed), a rank stopped making progress, rank 0's store vanished, or the
//! backend reported an asynchronous error (NCCL). Without it a NCCL collective waiting for a
//! dead peer blocks forever and the job burns its allocation. Before exiting it prints the
//! flight recorder on a timeout and aborts the backend's calls in flight (`ncclCommAbort`), so
//! no kernel spins on after the process is gone. Each poll also publishes this rank's newest
//! collective to the store, which every rank's diagnosis reads.

use crate::error::{Error, EXIT_DIST_FAILURE};
use crate::flight::{self, Publisher, Recorder};
use crate::group::Transport;
use crate::store::{RankState, RankStatus, StoreClient};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the store is asked.
const POLL: Duration = Duration::from_secs(1);
/// How long rank 0 keeps its store up after a verdict, so every other rank reads the same
/// verdict (one poll and some) instead of only "lost the store". After a timeout every rank
/// waits this long before exiting (rank 0 twice as long), so that no rank's exit ends another's
/// collective with a misleading "rank N closed its connection" before that rank has printed its
/// own records.
const LINGER: Duration = Duration::from_millis(1500);
/// How long a lost store waits before ending the process: the least specific diagnosis, so a
/// collective failing at the same moment with a better one (which rank closed) goes first.
const LOST_GRACE: Duration = Duration::from_secs(1);

/// A running watchdog; dropping it stops the thread.
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the watchdog thread watches.
pub(crate) struct Watched {
    /// A store connection of its own, so a long `get` on the rank's main connection never
    /// delays it.
    pub(crate) monitor: StoreClient,
    pub(crate) timeout: Duration,
    /// This is rank 0.
    pub(crate) hosts_store: bool,
    pub(crate) world: usize,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) transport: Arc<dyn Transport>,
}

impl Watchdog {
    pub(crate) fn spawn(watched: Watched) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dist-watchdog".into())
            .spawn(move || {
                let mut publisher = Publisher::default();
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    watched.poll(&mut publisher);
                }
            })?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Watched {
    /// One look at the job; ends the process if it cannot go on.
    fn poll(&self, publisher: &mut Publisher) {
        // A store that cannot take it is noticed by `status` just below.
        let _ = publisher.publish(&self.recorder, &self.monitor);
        if let Err(e) = self.transport.async_error() {
            self.end(&e.to_string(), true);
        }
        match self.monitor.status() {
            Ok(status) => {
                if let Some(problem) = verdict(&status, self.timeout) {
                    let hung = matches!(problem, Error::PeerHung { .. });
                    self.end(&problem.to_string(), hung);
                }
            }
            Err(lost) => {
                std::thread::sleep(LOST_GRACE);
                self.end(&lost.to_string(), false);
            }
        }
    }

    /// Prints `problem` (and the flight recorder when `records`), aborts the backend's calls in
    /// flight, and exits with [`EXIT_DIST_FAILURE`].
    fn end(&self, problem: &str, records: bool) -> ! {
        eprintln!("error: {problem}");
        if records {
            let report = flight::report(&self.recorder, Some(&self.monitor), self.world);
            eprintln!("{report}");
        }
        self.transport.abort();
        match (self.hosts_store, records) {
            (true, true) => std::thread::sleep(2 * LINGER),
            (true, false) | (false, true) => std::thread::sleep(LINGER),
            (false, false) => {}
        }
        // No atexit handlers or C++ destructors while another thread may sit in CUDA or NCCL.
        unsafe { libc::_exit(EXIT_DIST_FAILURE) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What is wrong with the job, if anything: [`Error::PeerDied`] or [`Error::PeerHung`]. A dead
/// rank comes first. A rank is stuck when its last heartbeat is older than `timeout`; when
/// others still progressed it is named as hung, and when nobody progressed the one furthest
/// behind is named (the others wait on it).
pub fn verdict(status: &[RankStatus], timeout: Duration) -> Option<Error> {
    if let Some(dead) = status.iter().find(|s| s.state == RankState::Dead) {
        return Some(Error::PeerDied {
            rank: dead.rank,
            during: None,
        });
    }
    let alive: Vec<&RankStatus> = status
        .iter()
        .filter(|s| s.state == RankState::Alive)
        .collect();
    let stuck: Vec<&RankStatus> = alive
        .iter()
        .copied()
        .filter(|s| s.since_heartbeat > timeout)
        .collect();
    // Furthest behind: lowest step (none yet is lowest), then the oldest heartbeat.
    let culprit = stuck.iter().min_by_key(|s| {
        (
            s.step.map_or(0, |x| x + 1),
            std::cmp::Reverse(s.since_heartbeat),
        )
    })?;
    Some(Error::PeerHung {
        rank: culprit.rank,
        idle: culprit.since_heartbeat,
        all_idle: stuck.len() == alive.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(rank, state, step, seconds since its heartbeat)` per rank → the verdict's message.
    #[test]
    fn verdicts() {
        use RankState::{Alive, Dead, Finished};
        type Row = (usize, RankState, Option<u64>, u64);
        let cases: [(&[Row], Option<&str>); 4] = [
            (&[(0, Alive, Some(5), 1), (1, Alive, Some(5), 2)], None),
            (
                &[(0, Alive, Some(5), 1), (1, Dead, Some(5), 2)],
                Some("rank 1 died (its connection to the store closed)"),
            ),
            (
                &[
                    (0, Alive, Some(9), 1),
                    (1, Alive, Some(4), 601),
                    (2, Finished, Some(4), 900),
                ],
                Some("rank 1 has made no progress for 601s (hung?)"),
            ),
            (
                &[(0, Alive, Some(9), 700), (1, Alive, None, 650)],
                Some("no rank has made progress for 650s; rank 1 is furthest behind (hung?)"),
            ),
        ];
        for (rows, want) in cases {
            let status: Vec<RankStatus> = rows
                .iter()
                .map(|&(rank, state, step, secs)| RankStatus {
                    rank,
                    state,
                    step,
                    since_heartbeat: Duration::from_secs(secs),
                })
                .collect();
            let got = verdict(&status, Duration::from_secs(600));
            assert_eq!(got.as_ref().map(Error::to_string).as_deref(), want);
            if let Some(e) = got {
                assert_eq!(e.fault(), crate::Fault::Job);
            }
        }
    }
}
