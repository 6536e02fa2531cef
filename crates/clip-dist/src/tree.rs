//! The control tree: host bytes between ranks over a k-ary tree of TCP links (rank r's parent is
//! (r − 1) / k, its children k·r + 1 … k·r + k), for what every backend needs on the host and
//! nothing on the device: flags agreed every step, names and paths broadcast, small per-rank
//! records gathered. Each rank holds at most k + 1 links and handles k + 1 messages per call
//! whatever the world size; a call crosses ⌈log_k W⌉ levels up and down (3 at W = 512), and
//! nothing of it goes through rank 0's store.
//!
//! Every call is an up phase (children to parents, each node combining its subtree) and, except
//! for a gather, a down phase (the root's result, parents to children). Every message carries
//! the call's kind and number, so ranks calling in a different order fail with one line naming
//! the rank instead of reading the wrong bytes.

use crate::error::{Error, Result};
use crate::links::{peer_io_error, Channel, Links};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Children per node: 3 levels below the root at W = 512, the root handling 8 links.
pub(crate) const FANOUT: usize = 8;

/// What a tree call is; the first byte of each of its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    AnyOf = 1,
    Broadcast = 2,
    AllGather = 3,
    Gather = 4,
}

impl Op {
    pub(crate) fn name(code: u8) -> &'static str {
        match code {
            1 => "any_of",
            2 => "broadcast_bytes",
            3 => "all_gather_bytes",
            4 => "gather_bytes",
            _ => "an unknown collective",
        }
    }
}

/// The parent of `rank` (none for rank 0).
pub(crate) fn parent(rank: usize) -> Option<usize> {
    (rank > 0).then(|| (rank - 1) / FANOUT)
}

/// The children of `rank` in a world of `world`.
pub(crate) fn children(rank: usize, world: usize) -> std::ops::Range<usize> {
    let first = (FANOUT * rank + 1).min(world);
    first..(FANOUT * rank + FANOUT + 1).min(world)
}

/// Whether `node` is `rank` or one of its ancestors.
fn on_path(node: usize, mut rank: usize) -> bool {
    loop {
        if rank == node {
            return true;
        }
        match parent(rank) {
            Some(p) if p >= node => rank = p,
            _ => return false,
        }
    }
}

/// One rank's links in the tree.
pub(crate) struct Tree {
    rank: usize,
    timeout: Duration,
    parent: Option<(usize, TcpStream)>,
    children: Vec<(usize, TcpStream)>,
    /// Calls so far: numbers the next one (every rank makes the same calls in the same order).
    calls: AtomicU64,
    /// One call at a time: messages on a link must not interleave.
    busy: Mutex<()>,
    /// Set by a failed call: a link may hold half a message, so later calls refuse.
    broken: AtomicBool,
}

impl Tree {
    /// Connects this rank to its parent and children (they do the same), within `timeout`.
    pub(crate) fn connect(
        links: &Links,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Tree> {
        let deadline = Instant::now() + timeout;
        let parent = match parent(rank) {
            Some(p) => Some((p, links.connect(Channel::Tree, p, deadline)?)),
            None => None,
        };
        let children = children(rank, world)
            .map(|c| Ok((c, links.connect(Channel::Tree, c, deadline)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tree {
            rank,
            timeout,
            parent,
            children,
            calls: AtomicU64::new(0),
            busy: Mutex::new(()),
            broken: AtomicBool::new(false),
        })
    }

    /// The bitwise OR of every rank's `flags` (all of the same length), on every rank.
    pub(crate) fn any_of(&self, flags: &[u8]) -> Result<Vec<u8>> {
        self.call(Op::AnyOf, |t, seq| {
            let mut acc = flags.to_vec();
            for (c, s) in &t.children {
                let theirs = t.recv(s, *c, Op::AnyOf, seq)?;
                if theirs.len() != acc.len() {
                    return Err(t.mismatch(Op::AnyOf, *c, theirs.len(), acc.len()));
                }
                acc.iter_mut().zip(theirs).for_each(|(a, b)| *a |= b);
            }
            t.up_then_down(Op::AnyOf, seq, acc)
        })
    }

    /// Rank `root`'s `bytes` on every rank: up the root's path to rank 0, then down to all.
    pub(crate) fn broadcast(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
        self.call(Op::Broadcast, |t, seq| {
            let mut carried = (t.rank == root).then(|| bytes.to_vec());
            if carried.is_none() && on_path(t.rank, root) {
                let (c, s) = t
                    .children
                    .iter()
                    .find(|(c, _)| on_path(*c, root))
                    .expect("a child on the root's path");
                carried = Some(t.recv(s, *c, Op::Broadcast, seq)?);
            }
            match carried {
                // Off the root's path: only the down phase.
                None => t.down(Op::Broadcast, seq, None),
                Some(b) => t.up_then_down(Op::Broadcast, seq, b),
            }
        })
    }

    /// Every rank's `bytes`, in rank order, on every rank.
    pub(crate) fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.call(Op::AllGather, |t, seq| {
            let subtree = t.gather_subtree(Op::AllGather, seq, bytes)?;
            let all = t.up_then_down(Op::AllGather, seq, subtree)?;
            decode_records(&all)
        })
    }

    /// Every rank's `bytes`, in rank order, on rank 0 (empty elsewhere): each node sends its
    /// subtree's records up once, so rank 0 takes k messages, not W − 1.
    pub(crate) fn gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.call(Op::Gather, |t, seq| {
            let subtree = t.gather_subtree(Op::Gather, seq, bytes)?;
            match &t.parent {
                Some((p, s)) => {
                    t.send(s, *p, Op::Gather, seq, &subtree)?;
                    Ok(Vec::new())
                }
                None => decode_records(&subtree),
            }
        })
    }

    /// Runs call `op` (numbered), refusing after an earlier failure and marking a failure.
    fn call<T>(&self, op: Op, f: impl FnOnce(&Tree, u64) -> Result<T>) -> Result<T> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::Invalid(format!(
                "{} is unusable after an earlier failure",
                Op::name(op as u8)
            )));
        }
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let seq = self.calls.fetch_add(1, Ordering::Relaxed);
        let out = f(self, seq);
        if out.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        out
    }

    /// This rank's record and its children's subtrees' records, in rank order (a subtree's
    /// ranks are contiguous within each level, so records are sorted at the end, by rank).
    fn gather_subtree(&self, op: Op, seq: u64, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut out = encode_record(self.rank, bytes);
        for (c, s) in &self.children {
            out.extend_from_slice(&self.recv(s, *c, op, seq)?);
        }
        Ok(out)
    }

    /// Sends `value` to the parent and returns what comes back down, or at rank 0 sends
    /// `value` down and returns it.
    fn up_then_down(&self, op: Op, seq: u64, value: Vec<u8>) -> Result<Vec<u8>> {
        if let Some((p, s)) = &self.parent {
            self.send(s, *p, op, seq, &value)?;
        }
        self.down(op, seq, (self.parent.is_none()).then_some(value))
    }

    /// The down phase: the parent's value (or `value` at rank 0) to every child.
    fn down(&self, op: Op, seq: u64, value: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let value = match (&self.parent, value) {
            (Some((p, s)), _) => self.recv(s, *p, op, seq)?,
            (None, Some(v)) => v,
            (None, None) => unreachable!("rank 0 is on every path"),
        };
        for (c, s) in &self.children {
            self.send(s, *c, op, seq, &value)?;
        }
        Ok(value)
    }

    fn send(&self, mut s: &TcpStream, peer: usize, op: Op, seq: u64, payload: &[u8]) -> Result<()> {
        let mut head = [0u8; 17];
        head[0] = op as u8;
        head[1..9].copy_from_slice(&seq.to_le_bytes());
        head[9..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        s.write_all(&head)
            .and_then(|()| s.write_all(payload))
            .map_err(|e| self.io_error(op, peer, e))
    }

    fn recv(&self, mut s: &TcpStream, peer: usize, op: Op, seq: u64) -> Result<Vec<u8>> {
        let mut head = [0u8; 17];
        s.read_exact(&mut head)
            .map_err(|e| self.io_error(op, peer, e))?;
        let their_seq = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
        if head[0] != op as u8 || their_seq != seq {
            return Err(Error::Mismatch {
                during: Op::name(op as u8),
                rank: peer,
                this_rank: self.rank,
                sent: Op::name(head[0]).to_string(),
                expected: Op::name(op as u8).to_string(),
            });
        }
        let len = u64::from_le_bytes(head[9..].try_into().expect("8 bytes"));
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload)
            .map_err(|e| self.io_error(op, peer, e))?;
        Ok(payload)
    }

    fn mismatch(&self, op: Op, peer: usize, theirs: usize, ours: usize) -> Error {
        let name = Op::name(op as u8);
        Error::Mismatch {
            during: name,
            rank: peer,
            this_rank: self.rank,
            sent: format!("{name} of {theirs} flags"),
            expected: format!("{name} of {ours} flags"),
        }
    }

    /// What a failed read or write on `peer`'s link during `op` means (the group then asks
    /// the store who is really at fault: `peer` may only be passing on another rank's failure).
    fn io_error(&self, op: Op, peer: usize, e: io::Error) -> Error {
        let during = Op::name(op as u8);
        peer_io_error(during, peer, self.timeout, e)
    }
}

/// `rank` (u32) and `bytes` with their length (u64), little-endian.
fn encode_record(rank: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + bytes.len());
    out.extend_from_slice(&(rank as u32).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Records back in rank order (every rank once).
fn decode_records(mut b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = || Error::Protocol("a truncated record in a tree gather".into());
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    while !b.is_empty() {
        if b.len() < 12 {
            return Err(bad());
        }
        let rank = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        let len = u64::from_le_bytes(b[4..12].try_into().expect("8 bytes")) as usize;
        let body = b.get(12..12 + len).ok_or_else(bad)?;
        out.push((rank, body.to_vec()));
        b = &b[12 + len..];
    }
    out.sort_by_key(|(r, _)| *r);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_but_0_has_one_parent_and_is_its_child() {
        for world in [1, 2, 8, 9, 10, 73, 512] {
            let mut seen = vec![0; world];
            for r in 0..world {
                for c in children(r, world) {
                    assert_eq!(parent(c), Some(r));
                    seen[c] += 1;
                }
            }
            assert_eq!(seen[0], 0);
            assert!(seen[1..].iter().all(|&n| n == 1), "world {world}");
        }
        // 1 + 8 + 64 + 439: three levels under the root at 512.
        let depth = |mut r: usize| {
            let mut d = 0;
            while let Some(p) = parent(r) {
                r = p;
                d += 1;
            }
            d
        };
        assert_eq!((0..512).map(depth).max(), Some(3));
    }

    #[test]
    fn paths_and_records() {
        // 100 → 12 → 1 → 0
        assert!(on_path(0, 100) && on_path(1, 100) && on_path(12, 100) && on_path(100, 100));
        assert!(!on_path(2, 100) && !on_path(13, 100) && !on_path(101, 100));
        let mut b = encode_record(2, b"two");
        b.extend(encode_record(0, b""));
        b.extend(encode_record(1, b"one"));
        assert_eq!(
            decode_records(&b).unwrap(),
            vec![b"".to_vec(), b"one".to_vec(), b"two".to_vec()]
        );
        assert!(decode_records(&b[..b.len() - 1]).is_err());
    }
}
