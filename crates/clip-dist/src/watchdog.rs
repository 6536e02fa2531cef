//! A thread that ends this process when the job can no longer make progress: a rank died (its
//! store connection closed), a rank stopped making progress, rank 0's store vanished, or the
//! backend reported an asynchronous error (NCCL). Without it a NCCL collective waiting for a
//! dead peer blocks forever and the job burns its allocation. Before exiting it prints the
//! flight recorder on a timeout and aborts the backend's calls in flight (`ncclCommAbort`), so
//! no kernel spins on after the process is gone. Each poll also publishes this rank's newest
//! collective to the store, which every rank's diagnosis reads. The store decides dead and hung
//! ranks ([`crate::store::verdict`]) and answers each poll in a few bytes.

use crate::error::{Error, EXIT_DIST_FAILURE};
use crate::flight::{self, Publisher, Recorder};
use crate::group::Transport;
use crate::store::StoreClient;
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
        // The store answers from one scan of the ranks shared by every rank's poll: a few
        // bytes per rank, O(W) at rank 0 per round, not every rank's status to every rank.
        match self.monitor.verdict(self.timeout) {
            Ok(Some(problem)) => {
                let hung = matches!(problem, Error::PeerHung { .. });
                self.end(&problem.to_string(), hung);
            }
            Ok(None) => {}
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
