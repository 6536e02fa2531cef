//! What every backend shares, written once: this rank's place, the argument checks of each
//! collective, and the byte collectives, which go through rank 0's store whatever moves the
//! tensors (TCP, NCCL, or nothing in a world of one); and the flight recorder, which sees
//! every call here once for all backends.

use crate::error::{Error, Result};
use crate::flight::{self, Recorder};
use crate::host::Dtype;
use crate::store::StoreClient;
use crate::{Collectives, ReduceOp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tch::Tensor;

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

/// Which byte collective wrote a store value (its first byte), so a rank that called the other
/// one fails with [`Error::Mismatch`] instead of reading the wrong bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ByteOp {
    Broadcast = 1,
    AllGather = 2,
}

impl ByteOp {
    fn name(code: u8) -> &'static str {
        match code {
            1 => "broadcast_bytes",
            2 => "all_gather_bytes",
            _ => "an unknown collective",
        }
    }
}

/// The collectives of this rank: a backend plus what all backends share.
pub(crate) struct Group {
    rank: usize,
    world: usize,
    /// Shared with the watchdog (abort, asynchronous errors).
    transport: Arc<dyn Transport>,
    /// Rank 0's store (none in a world of one).
    store: Option<StoreClient>,
    /// Shared with the watchdog, which publishes it and prints it on a verdict.
    recorder: Arc<Recorder>,
    /// Byte collectives so far, which numbers the next one's keys (every rank makes the same
    /// calls in the same order).
    byte_calls: AtomicU64,
}

impl Group {
    pub(crate) fn new(
        rank: usize,
        world: usize,
        transport: Box<dyn Transport>,
        store: Option<StoreClient>,
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
            recorder,
            byte_calls: AtomicU64::new(0),
        }
    }

    pub(crate) fn store(&self) -> Option<&StoreClient> {
        self.store.as_ref()
    }

    pub(crate) fn recorder(&self) -> Arc<Recorder> {
        self.recorder.clone()
    }

    pub(crate) fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// Runs the call `what` under the flight recorder (`numbered`: a job-wide collective, not
    /// point to point). A timeout prints the records and who the job waits for before the
    /// error goes up.
    fn recorded<T>(
        &self,
        what: String,
        numbered: bool,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let entry = self.recorder.enter(what, numbered);
        if let (Some(store), true) = (&self.store, numbered) {
            flight::publish_entry(store, self.rank, &self.recorder.progress());
        }
        let out = f();
        self.recorder.exit(entry);
        if let Err(Error::PeerTimeout { .. } | Error::StoreTimeout { .. }) = &out {
            eprintln!(
                "{}",
                flight::report(&self.recorder, self.store.as_ref(), self.world)
            );
        }
        out
    }

    /// The store and the key prefix of the next byte collective; `None` in a world of one.
    fn next_byte_call(&self) -> Option<(&StoreClient, String)> {
        let store = self.store.as_ref()?;
        let n = self.byte_calls.fetch_add(1, Ordering::Relaxed);
        Some((store, format!("bytes/{n}")))
    }

    /// Publishes this rank's `bytes` under `prefix` for the other ranks to read once each.
    fn publish(&self, store: &StoreClient, prefix: &str, op: ByteOp, bytes: &[u8]) -> Result<()> {
        let mut value = Vec::with_capacity(bytes.len() + 1);
        value.push(op as u8);
        value.extend_from_slice(bytes);
        store.set(&format!("{prefix}/{}", self.rank), &value)
    }

    /// Rank `from`'s bytes under `prefix`, published by the same byte collective `op`.
    fn read(&self, store: &StoreClient, prefix: &str, op: ByteOp, from: usize) -> Result<Vec<u8>> {
        let mut value = store.take(&format!("{prefix}/{from}"), self.world - 1)?;
        match value.first() {
            Some(&code) if code == op as u8 => {
                value.remove(0);
                Ok(value)
            }
            sent => Err(Error::Mismatch {
                during: ByteOp::name(op as u8),
                rank: from,
                this_rank: self.rank,
                sent: ByteOp::name(sent.copied().unwrap_or(0)).to_string(),
                expected: ByteOp::name(op as u8).to_string(),
            }),
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
        let Some((store, prefix)) = self.next_byte_call() else {
            return Ok(bytes.to_vec());
        };
        let what = format!("broadcast_bytes from rank {root}");
        self.recorded(what, true, || {
            if self.rank == root {
                self.publish(store, &prefix, ByteOp::Broadcast, bytes)?;
                return Ok(bytes.to_vec());
            }
            self.read(store, &prefix, ByteOp::Broadcast, root)
        })
    }

    fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let Some((store, prefix)) = self.next_byte_call() else {
            return Ok(vec![bytes.to_vec()]);
        };
        self.recorded("all_gather_bytes".into(), true, || {
            self.publish(store, &prefix, ByteOp::AllGather, bytes)?;
            (0..self.world)
                .map(|p| {
                    if p == self.rank {
                        Ok(bytes.to_vec())
                    } else {
                        self.read(store, &prefix, ByteOp::AllGather, p)
                    }
                })
                .collect()
        })
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
