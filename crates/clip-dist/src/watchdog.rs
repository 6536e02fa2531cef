//! A thread that ends this process when the job can no longer make progress: a rank died (its
//! store connection closed), a rank stopped making progress, or rank 0's store vanished. Without
//! it a NCCL collective waiting for a dead peer blocks forever and the job burns its allocation.

use crate::store::{RankState, RankStatus, StoreClient};
use crate::EXIT_DIST_FAILURE;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the store is asked.
const POLL: Duration = Duration::from_secs(1);
/// How long rank 0 keeps its store up after a verdict, so every other rank reads the same
/// verdict (one poll and some) instead of only "lost the store".
const LINGER: Duration = Duration::from_millis(1500);
/// How long a lost store waits before ending the process: the least specific diagnosis, so a
/// collective failing at the same moment with a better one (which rank closed) goes first.
const LOST_GRACE: Duration = Duration::from_secs(1);

/// A running watchdog; dropping it stops the thread.
pub(crate) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watches the job through `monitor` (a connection of its own, so a long `get` on the
    /// rank's main connection never delays it). `hosts_store`: this is rank 0.
    pub(crate) fn spawn(
        monitor: StoreClient,
        timeout: Duration,
        hosts_store: bool,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("dist-watchdog".into())
            .spawn(move || loop {
                match stopped.recv_timeout(POLL) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                match monitor.status() {
                    Ok(status) => {
                        if let Some(problem) = verdict(&status, timeout) {
                            eprintln!("error: {problem}");
                            if hosts_store {
                                std::thread::sleep(LINGER);
                            }
                            std::process::exit(EXIT_DIST_FAILURE);
                        }
                    }
                    Err(_) => {
                        std::thread::sleep(LOST_GRACE);
                        eprintln!("error: lost the store on rank 0 (rank 0 died?)");
                        std::process::exit(EXIT_DIST_FAILURE);
                    }
                }
            })?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
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

/// What is wrong with the job, if anything. A dead rank comes first. A rank is stuck when its
/// last heartbeat is older than `timeout`; when others still progressed it is named as hung,
/// and when nobody progressed the one furthest behind is named (the others wait on it).
pub fn verdict(status: &[RankStatus], timeout: Duration) -> Option<String> {
    if let Some(dead) = status.iter().find(|s| s.state == RankState::Dead) {
        return Some(format!(
            "rank {} died (its connection to the store closed)",
            dead.rank
        ));
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
    let secs = culprit.since_heartbeat.as_secs();
    Some(if stuck.len() < alive.len() {
        format!(
            "rank {} has made no progress for {secs}s (hung?)",
            culprit.rank
        )
    } else {
        format!(
            "no rank has made progress for {secs}s; rank {} is furthest behind (hung?)",
            culprit.rank
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(rank: usize, state: RankState, step: Option<u64>, secs: u64) -> RankStatus {
        RankStatus {
            rank,
            state,
            step,
            since_heartbeat: Duration::from_secs(secs),
        }
    }

    #[test]
    fn verdicts() {
        let t = Duration::from_secs(600);
        let ok = [
            rank(0, RankState::Alive, Some(5), 1),
            rank(1, RankState::Alive, Some(5), 2),
        ];
        assert_eq!(verdict(&ok, t), None);
        let dead = [
            rank(0, RankState::Alive, Some(5), 1),
            rank(1, RankState::Dead, Some(5), 2),
        ];
        assert_eq!(
            verdict(&dead, t).unwrap(),
            "rank 1 died (its connection to the store closed)"
        );
        let hung = [
            rank(0, RankState::Alive, Some(9), 1),
            rank(1, RankState::Alive, Some(4), 601),
            rank(2, RankState::Finished, Some(4), 900),
        ];
        assert_eq!(
            verdict(&hung, t).unwrap(),
            "rank 1 has made no progress for 601s (hung?)"
        );
        let all = [
            rank(0, RankState::Alive, Some(9), 700),
            rank(1, RankState::Alive, None, 650),
        ];
        assert_eq!(
            verdict(&all, t).unwrap(),
            "no rank has made progress for 650s; rank 1 is furthest behind (hung?)"
        );
    }
}
