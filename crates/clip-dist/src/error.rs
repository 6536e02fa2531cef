//! The one error type of every public clip-dist call. Its variants say what went wrong in terms a
//! launcher can act on ([`Error::fault`]): the job was started wrong, the job cannot go on
//! because of another rank (or rank 0's store), or this process failed on its own.

use crate::world::fmt_secs;
use std::io;
use std::time::Duration;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit status of a process ended because the job cannot go on (a rank died or hung, the store
/// vanished, the ranks disagree): EX_SOFTWARE, distinct from preemption's 75 so a scheduler does
/// not requeue it blindly.
pub const EXIT_DIST_FAILURE: i32 = 70;
/// Exit status of a process started wrong (environment, `--dist-url`): argparse's.
pub const EXIT_USAGE: i32 = 2;

/// NCCL result codes that mean another rank or the network failed, not this process
/// (`ncclSystemError`, `ncclRemoteError`).
const NCCL_PEER_CODES: [i32; 2] = [2, 6];

/// Whose fault an [`Error`] is, which decides how a launcher exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The job was launched wrong: fix the environment or the flags.
    Launch,
    /// Another rank died, hung or disagrees, or rank 0's store is gone: the job cannot go on.
    Job,
    /// This process failed on its own (I/O, a library, a call this crate cannot do).
    Local,
}

impl Fault {
    /// [`EXIT_USAGE`], [`EXIT_DIST_FAILURE`], or 1.
    pub fn exit_status(self) -> i32 {
        match self {
            Fault::Launch => EXIT_USAGE,
            Fault::Job => EXIT_DIST_FAILURE,
            Fault::Local => 1,
        }
    }
}

/// Everything a clip-dist call can fail with. Messages are one line and name the rank at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The environment or `--dist-url` cannot be used: a rank variable that is not a number, a
    /// rank outside the world, no MASTER_ADDR, a bad port (or one rank 0 cannot listen on), a bad
    /// timeout.
    #[error("{0}")]
    Config(String),
    /// The ranks were launched inconsistently: their world sizes differ, or two processes have
    /// the same rank. Every rank gets it at once.
    #[error("rendezvous failed: {0}")]
    RendezvousRefused(String),
    /// Not every rank joined within the timeout; `missing` never connected to the store.
    #[error("rendezvous timed out after {}: {} never arrived", fmt_secs(*after), fmt_ranks(missing))]
    RendezvousTimeout {
        after: Duration,
        missing: Vec<usize>,
    },
    /// Not every higher rank connected to this rank's collectives port within the timeout.
    #[error("timed out after {} waiting for {} to connect", fmt_secs(*after), fmt_ranks(missing))]
    ConnectTimeout {
        after: Duration,
        missing: Vec<usize>,
    },
    /// Rank 0's store did not answer at all (rank 0 not started, or a wrong MASTER_ADDR).
    #[error("cannot reach rank 0's store at {addr} after {}", fmt_secs(*after))]
    StoreUnreachable { addr: String, after: Duration },
    /// The connection to rank 0's store broke.
    #[error("lost the store on rank 0 at {addr} (rank 0 died?): {cause}")]
    StoreLost { addr: String, cause: io::Error },
    /// No rank set a store key within the timeout.
    #[error("timed out after {} waiting for store key {key:?}", fmt_secs(*after))]
    StoreTimeout { key: String, after: Duration },
    /// `rank`'s process died: its connection closed during the collective `during`, or (`None`)
    /// its connection to the store closed without a goodbye.
    #[error("{}", peer_died(*rank, *during))]
    PeerDied {
        rank: usize,
        during: Option<&'static str>,
    },
    /// The collective `during` waited longer than the timeout for `rank`.
    #[error("{during}: timed out after {} waiting for rank {rank}", fmt_secs(*after))]
    PeerTimeout {
        rank: usize,
        during: &'static str,
        after: Duration,
    },
    /// The watchdog saw no heartbeat from `rank` for `idle`; `all_idle`: nobody progressed and
    /// `rank` is furthest behind (the others wait on it).
    #[error("{}", peer_hung(*rank, *idle, *all_idle))]
    PeerHung {
        rank: usize,
        idle: Duration,
        all_idle: bool,
    },
    /// This rank could not connect to `rank`'s collectives port.
    #[error("cannot connect to rank {rank} at {addr}: {cause}")]
    PeerUnreachable {
        rank: usize,
        addr: String,
        cause: io::Error,
    },
    /// `rank` made a different call than this one: ranks called collectives in a different
    /// order or with different shapes.
    #[error("{during}: rank {rank} sent {sent} but this rank (rank {this_rank}) expects {expected} (ranks called collectives in a different order or with different shapes)")]
    Mismatch {
        during: &'static str,
        rank: usize,
        this_rank: usize,
        sent: String,
        expected: String,
    },
    /// A value that must be the same on every rank is not: `ranks` differ from rank 0.
    #[error("{what} differs from rank 0's on {}", fmt_ranks(ranks))]
    RanksDisagree { what: String, ranks: Vec<usize> },
    /// An NCCL call failed; [`Error::fault`] reads `code` (a remote or system error is another
    /// rank's or the network's).
    #[error("NCCL {call} failed: {message} (code {code}, {library})")]
    Nccl {
        call: &'static str,
        code: i32,
        message: String,
        library: String,
    },
    /// NCCL or the CUDA driver cannot be loaded or set up on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// A call this crate cannot do: an unsupported dtype, a shape that does not split over the
    /// world, a root outside the world, a tensor on another device.
    #[error("{0}")]
    Invalid(String),
    /// A local socket operation failed.
    #[error("{what}: {cause}")]
    Io { what: String, cause: io::Error },
    /// A message that is not what the protocol says (a stray client, a corrupt frame).
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// Whose fault this is (see [`Fault::exit_status`]).
    pub fn fault(&self) -> Fault {
        use Error::*;
        match self {
            Config(_) | RendezvousRefused(_) => Fault::Launch,
            RendezvousTimeout { .. }
            | ConnectTimeout { .. }
            | StoreUnreachable { .. }
            | StoreLost { .. }
            | StoreTimeout { .. }
            | PeerDied { .. }
            | PeerTimeout { .. }
            | PeerHung { .. }
            | PeerUnreachable { .. }
            | Mismatch { .. }
            | RanksDisagree { .. } => Fault::Job,
            Nccl { code, .. } if NCCL_PEER_CODES.contains(code) => Fault::Job,
            Nccl { .. } | Unavailable(_) | Invalid(_) | Io { .. } | Protocol(_) => Fault::Local,
        }
    }

    /// `Io` with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |cause| Error::Io { what, cause }
    }
}

/// "rank 3", "ranks 2, 3".
fn fmt_ranks(ranks: &[usize]) -> String {
    let list: Vec<String> = ranks.iter().map(usize::to_string).collect();
    let noun = if ranks.len() == 1 { "rank" } else { "ranks" };
    format!("{noun} {}", list.join(", "))
}

fn peer_died(rank: usize, during: Option<&str>) -> String {
    match during {
        Some(op) => format!("{op}: rank {rank} closed its connection (process died?)"),
        None => format!("rank {rank} died (its connection to the store closed)"),
    }
}

fn peer_hung(rank: usize, idle: Duration, all_idle: bool) -> String {
    let secs = idle.as_secs();
    if all_idle {
        format!("no rank has made progress for {secs}s; rank {rank} is furthest behind (hung?)")
    } else {
        format!("rank {rank} has made no progress for {secs}s (hung?)")
    }
}
