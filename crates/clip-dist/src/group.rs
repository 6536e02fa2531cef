//! What every backend shares, written once: this rank's place, the argument checks of each
//! collective, the host collectives over the control tree (`tree.rs`: flags, bytes), whatever
//! moves the tensors (TCP, NCCL, or nothing in a world of one); the flight recorder, which sees
//! every call here once for all backends; and the blame for a failed call, agreed through the
//! store so every rank names the same culprit.

use crate::error::{Error, Result};
use crate::flight::{self, Recorder};
use crate::host::Dtype;
use crate::store::{Culprit, StoreClient};
use crate::tree::Tree;
use crate::{Collectives, ReduceOp};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Tensor;

/// How long a rank whose link broke waits for the store to see which rank died first.
const DEATH_GRACE: Duration = Duration::from_secs(2);

/// The tensor moves of one backend. [`Group`] has checked what every backend would check: the
/// dtype, the reduction, the root, a reduce-scatter's first dimension.
pub(crate) trait Transport: Send + Sync {
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()>;
    /// `out_shape`: `t`'s shape (`[1]` for a 0-dim `t`) with the first dimension times W.
    fn all_gather(&self, t: &Tensor, out_shape: &[i64]) -> Result<Tensor>;
    /// `out_shape`: `t`'s shape with the first dimension divided by W.
    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp, out_shape: &[i64]) -> Result<Tensor>;
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// [`Collectives::send_recv`]: peers in range, distinct per direction, not this rank.
    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> Result<()>;
    /// Ends every call in flight now (NCCL: `ncclCommAbort`), from any thread, so a process the
    /// watchdog is about to end leaves no kernel spinning on the GPU. Nothing to do for a
    /// backend whose calls time out by themselves.
    fn abort(&self) {}
    /// An error the backend hit after a call returned (NCCL: `ncclCommGetAsyncError`), which
    /// the watchdog polls.
    fn async_error(&self) -> Result<()> {
        Ok(())
    }
}

/// The collectives of this rank: a backend plus what all backends share.
pub(crate) struct Group {
    rank: usize,
    world: usize,
    /// Shared with the watchdog (abort, asynchronous errors).
    transport: Arc<dyn Transport>,
    /// Rank 0's store (none in a world of one).
    store: Option<Arc<StoreClient>>,
    /// The control tree (none in a world of one).
    tree: Option<Tree>,
    /// Shared with the watchdog, which publishes it and prints it on a verdict.
    recorder: Arc<Recorder>,
}

impl Group {
    pub(crate) fn new(
        rank: usize,
        world: usize,
        transport: Box<dyn Transport>,
        store: Option<Arc<StoreClient>>,
        tree: Option<Tree>,
    ) -> Self {
        let recorder = Arc::new(Recorder::new(rank));
        // "No collective yet" is news too: a rank that never enters one is named as such.
        if let Some(store) = &store {
            flight::publish_entry(store, rank, &recorder.progress());
        }
        Group {
            rank,
            world,
            transport: Arc::from(transport),
            store,
            tree,
            recorder,
        }
    }

    pub(crate) fn store(&self) -> Option<&StoreClient> {
        self.store.as_deref()
    }

    pub(crate) fn recorder(&self) -> Arc<Recorder> {
        self.recorder.clone()
    }

    pub(crate) fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// Runs the call `what` under the flight recorder (`numbered`: a job-wide collective, not
    /// point to point). A failure is blamed on the rank at fault ([`Group::blame`]); a timeout
    /// prints the records and who the job waits for before the error goes up.
    fn recorded<T>(
        &self,
        what: String,
        numbered: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.recorded_as(what, numbered, numbered, f)
    }

    /// [`Group::recorded`]; `publish`: the entry goes to the store at once (a tensor
    /// collective: a rank frozen in it is then placed exactly) rather than with the watchdog's
    /// next poll (the control tree's calls, which every rank makes every step: publishing each
    /// would cost rank 0 W requests per step).
    fn recorded_as<T>(
        &self,
        what: String,
        numbered: bool,
        publish: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let entry = self.recorder.enter(what, numbered);
        if let (Some(store), true) = (self.store(), publish) {
            flight::publish_entry(store, self.rank, &self.recorder.progress());
        }
        let out = f();
        self.recorder.exit(entry);
        out.map_err(|e| self.blame(e))
    }

    /// The rank really at fault for a failed call. In a ring or a tree a link's peer may only
    /// be passing on a failure further away (a rank's death ends its neighbours' calls, and
    /// their exit their neighbours'), so the ranks agree through the store: the first culprit
    /// proposed is every rank's. A rank proposes, for a broken link, the first rank the store
    /// saw die (rank 0 when the store itself is gone: it dies with rank 0), and for a timeout
    /// the first rank that never entered the collective the job waits in (the flight
    /// recorder's diagnosis, printed with the error).
    fn blame(&self, e: Error) -> Error {
        let (during, timed_out) = match &e {
            Error::PeerDied {
                during: Some(d), ..
            } => (*d, false),
            Error::PeerTimeout { during, .. } => (*during, true),
            Error::StoreTimeout { .. } => {
                let report = flight::report(&self.recorder, self.store(), self.world);
                eprintln!("{report}");
                return e;
            }
            _ => return e,
        };
        let Some(store) = self.store() else {
            if timed_out {
                eprintln!("{}", flight::report(&self.recorder, None, self.world));
            }
            return e;
        };
        let (agreed, report) = match e {
            Error::PeerTimeout { rank, .. } => {
                let (report, laggard) =
                    flight::report_and_laggard(&self.recorder, Some(store), self.world);
                let mine = Culprit::TimedOut(laggard.unwrap_or(rank));
                let kept = store.failure(Some(mine)).ok().and_then(|(kept, _)| kept);
                (kept.unwrap_or(mine), Some(report))
            }
            Error::PeerDied { rank, .. } => {
                (first_death(store).unwrap_or(Culprit::Died(rank)), None)
            }
            _ => unreachable!("matched above"),
        };
        match agreed {
            Culprit::Died(rank) => Error::PeerDied {
                rank,
                during: Some(during),
            },
            Culprit::TimedOut(rank) => {
                // A neighbour's exit adopted as another rank's timeout: this rank's records too.
                let report = report
                    .unwrap_or_else(|| flight::report(&self.recorder, Some(store), self.world));
                eprintln!("{report}");
                Error::PeerTimeout {
                    rank,
                    during,
                    after: store.timeout(),
                }
            }
        }
    }

    /// The peers of one direction of a `send_recv`: each another rank of this world, once.
    fn check_peers(&self, what: &str, peers: impl Iterator<Item = usize>) -> Result<()> {
        let mut seen = vec![false; self.world];
        for p in peers {
            if p >= self.world || p == self.rank || seen[p] {
                let why = if p >= self.world {
                    format!("is outside a world of size {}", self.world)
                } else if p == self.rank {
                    "is this rank itself".to_string()
                } else {
                    "appears twice".to_string()
                };
                return Err(Error::Invalid(format!(
                    "send_recv on rank {}: {what} peer {p} {why}",
                    self.rank
                )));
            }
            seen[p] = true;
        }
        Ok(())
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.world {
            return Err(Error::Invalid(format!(
                "broadcast root {root} is outside a world of size {}",
                self.world
            )));
        }
        Ok(())
    }
}

impl Collectives for Group {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        Dtype::of(t)?.check_reduce(op)?;
        let what = describe("all_reduce", Some(op), t)?;
        self.recorded(what, true, || self.transport.all_reduce(t, op))
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Dtype::of(t)?;
        let mut shape = t.size();
        if shape.is_empty() {
            shape.push(1);
        }
        shape[0] *= self.world as i64;
        let what = describe("all_gather", None, t)?;
        self.recorded(what, true, || self.transport.all_gather(t, &shape))
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        Dtype::of(t)?.check_reduce(op)?;
        let w = self.world as i64;
        let mut shape = t.size();
        match shape.first_mut() {
            Some(d0) if *d0 % w == 0 => *d0 /= w,
            _ => {
                return Err(Error::Invalid(format!(
                    "reduce_scatter needs a first dimension divisible by the world size {w}, got shape {:?}",
                    t.size()
                )))
            }
        }
        let what = describe("reduce_scatter", Some(op), t)?;
        self.recorded(what, true, || self.transport.reduce_scatter(t, op, &shape))
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        Dtype::of(t)?;
        self.check_root(root)?;
        let what = describe(&format!("broadcast from rank {root}"), None, t)?;
        self.recorded(what, true, || self.transport.broadcast(t, root))
    }

    fn barrier(&self) -> Result<()> {
        self.recorded("barrier".into(), true, || self.transport.barrier())
    }

    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> Result<()> {
        self.check_peers("send", sends.iter().map(|(p, _)| *p))?;
        self.check_peers("receive", recvs.iter().map(|(p, _)| *p))?;
        for t in sends.iter().map(|(_, t)| *t) {
            Dtype::of(t)?;
        }
        for (_, t) in recvs.iter() {
            Dtype::of(t)?;
        }
        let peers = |ps: Vec<usize>| format!("{ps:?}");
        let what = format!(
            "send_recv (to {}, from {})",
            peers(sends.iter().map(|(p, _)| *p).collect()),
            peers(recvs.iter().map(|(p, _)| *p).collect())
        );
        self.recorded(what, false, || self.transport.send_recv(sends, recvs))
    }

    fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
        self.check_root(root)?;
        let Some(tree) = &self.tree else {
            return Ok(bytes.to_vec());
        };
        let what = format!("broadcast_bytes from rank {root}");
        self.recorded_as(what, true, false, || tree.broadcast(bytes, root))
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(tree) = &self.tree else {
            return Ok(vec![bytes.to_vec()]);
        };
        self.recorded_as("all_gather_bytes".into(), true, false, || {
            tree.all_gather(bytes)
        })
    }

    fn gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some(tree) = &self.tree else {
            return Ok(vec![bytes.to_vec()]);
        };
        self.recorded_as("gather_bytes to rank 0".into(), true, false, || {
            tree.gather(bytes)
        })
    }

    fn any_of(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let Some(tree) = &self.tree else {
            return Ok(flags.to_vec());
        };
        let what = format!("any_of {} flags", flags.len());
        let mine: Vec<u8> = flags.iter().map(|&f| u8::from(f)).collect();
        let any = self.recorded_as(what, true, false, || tree.any_of(&mine))?;
        Ok(any.into_iter().map(|b| b != 0).collect())
    }
}

/// The job's culprit once a link broke: the one kept in the store if a rank proposed one,
/// else the first rank the store saw die (waiting up to [`DEATH_GRACE`] for it to see one: a
/// dead neighbour's link breaks about when its store connection does), proposed as the job's;
/// rank 0 when the store is gone (it dies with rank 0); `None` when no rank died.
fn first_death(store: &StoreClient) -> Option<Culprit> {
    let deadline = Instant::now() + DEATH_GRACE;
    loop {
        match store.failure(None) {
            Ok((Some(kept), _)) => return Some(kept),
            Ok((None, deaths)) if !deaths.is_empty() => {
                let mine = Culprit::Died(deaths[0]);
                let kept = store.failure(Some(mine)).ok().and_then(|(k, _)| k);
                return Some(kept.unwrap_or(mine));
            }
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => return None,
            Err(_) => return Some(Culprit::Died(0)),
        }
    }
}

/// A tensor collective for the flight recorder: `all_reduce (sum) of [1000] f32 (4000 bytes)`.
fn describe(op: &str, reduce: Option<ReduceOp>, t: &Tensor) -> Result<String> {
    let dtype = Dtype::of(t)?;
    let reduce = match reduce {
        Some(ReduceOp::Sum) => " (sum)",
        Some(ReduceOp::Mean) => " (mean)",
        None => "",
    };
    Ok(format!(
        "{op}{reduce} of {:?} {} ({} bytes)",
        t.size(),
        dtype.name(),
        t.numel() * dtype.size()
    ))
}
