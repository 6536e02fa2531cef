//! CPU collectives over TCP (gloo's role: development, tests, and the many-rank simulation of
//! `clip-tool sim-ranks`), with ring and chain algorithms over links made when first needed
//! (`links.rs`): each rank holds the ring's two links (to rank r+1, from rank r−1) and a link
//! per point-to-point peer it exchanges with, never a mesh; each collective moves about twice
//! the tensor per rank whatever the world size.
//!
//! - `all_gather`: the ring, W − 1 steps, each forwarding the chunk received the step before.
//! - `all_reduce`: a chain 0 → 1 → … → W−1 carries the running sum of each piece (a rank adds its
//!   own values to what arrives and passes it on), so every element is summed in rank order
//!   (bf16 in f32, rounded once at rank W−1): exactly the bits of the plain sum in rank order, on
//!   every rank and from run to run; rank W−1 then broadcasts the result down the ring
//!   W−1 → 0 → … → W−2. Pieces of at most 1 MiB travel separately, so the chain's ranks work on
//!   different pieces at once.
//! - `reduce_scatter`: the same chain, then rank W−1 sends chunk c along the ring to rank c.
//! - `broadcast`: a chain from the root around the ring; `barrier`: a token from rank 0 to rank
//!   W−1 and back around.
//!
//! Each rank reads from the previous rank on the calling thread while a writer thread of its own
//! sends to the next, so no two ranks block each other writing (the classic deadlock when every
//! rank writes a large buffer before reading). Every message carries a small header
//! (collective, reduction, dtype, shape, payload length) that the receiver checks against its own
//! call, so ranks calling collectives in a different order or with different shapes fail with
//! one clear line instead of garbage.

use crate::error::{Error, Result};
use crate::group::Transport;
use crate::host::{
    acc_add, acc_finish, acc_size, acc_start, bytes, bytes_mut, chunk_bounds, host, write_back,
    Dtype,
};
use crate::links::{peer_io_error, Channel, Links};
use crate::ReduceOp;
use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// The largest piece a chain passes on at once (bytes of accumulators).
const PIECE: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// `all_reduce`'s chain of running sums.
    AllReduceChain = 1,
    /// `all_reduce`'s broadcast of the result.
    AllReduceBroadcast = 2,
    AllGather = 3,
    ReduceScatter = 4,
    Broadcast = 5,
    Barrier = 6,
    SendRecv = 7,
}

impl Op {
    fn name(code: u8) -> &'static str {
        match code {
            1 | 2 => "all_reduce",
            3 => "all_gather",
            4 => "reduce_scatter",
            5 => "broadcast",
            6 => "barrier",
            7 => "send_recv",
            _ => "an unknown collective",
        }
    }
}

/// What a message says about the call that sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Header {
    op: u8,
    reduce: u8,
    dtype: u8,
    shape: Vec<i64>,
    payload: u64,
}

impl Header {
    fn new(op: Op, reduce: Option<ReduceOp>, dtype: Dtype, shape: &[i64]) -> Self {
        Header {
            op: op as u8,
            reduce: reduce.map_or(0, |r| r as u8 + 1),
            dtype: dtype.code(),
            shape: shape.to_vec(),
            payload: 0,
        }
    }

    fn with_payload(&self, payload: usize) -> Self {
        Header {
            payload: payload as u64,
            ..self.clone()
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = vec![self.op, self.reduce, self.dtype, self.shape.len() as u8];
        for d in &self.shape {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&self.payload.to_le_bytes());
        b
    }

    fn read(mut r: &TcpStream) -> io::Result<Self> {
        let mut head = [0u8; 4];
        r.read_exact(&mut head)?;
        let mut rest = vec![0u8; head[3] as usize * 8 + 8];
        r.read_exact(&mut rest)?;
        let word = |i: usize| <[u8; 8]>::try_from(&rest[i * 8..i * 8 + 8]).unwrap();
        Ok(Header {
            op: head[0],
            reduce: head[1],
            dtype: head[2],
            shape: (0..head[3] as usize)
                .map(|i| i64::from_le_bytes(word(i)))
                .collect(),
            payload: u64::from_le_bytes(word(head[3] as usize)),
        })
    }

    fn describe(&self) -> String {
        let dtype = Dtype::from_code(self.dtype).map_or("?", Dtype::name);
        let reduce = match self.reduce {
            1 => " (sum)",
            2 => " (mean)",
            _ => "",
        };
        format!(
            "{}{reduce} of {:?} {dtype} ({} bytes)",
            Op::name(self.op),
            self.shape,
            self.payload
        )
    }
}

/// CPU collectives over TCP; see the module documentation.
pub(crate) struct TcpCollectives {
    rank: usize,
    world: usize,
    timeout: Duration,
    links: Arc<Links>,
    /// The ring: to rank + 1, and from rank − 1 (one connection in a world of two).
    next: TcpStream,
    prev: TcpStream,
    /// Point-to-point links to other ranks, made on first use.
    others: Vec<OnceLock<TcpStream>>,
    /// One collective at a time: messages on a link must not interleave.
    busy: Mutex<()>,
    /// Set by a failed exchange: a link may hold half a message, so later calls refuse.
    broken: AtomicBool,
}

/// Which side of a [`TcpCollectives::duplex`] failed first.
const READER: u8 = 1;
const WRITER: u8 = 2;

impl TcpCollectives {
    /// Links this rank into the ring (rank + 1 and rank − 1 do the same), within `timeout`.
    pub(crate) fn connect(
        links: Arc<Links>,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let (n, p) = ((rank + 1) % world, (rank + world - 1) % world);
        let link = |peer| links.connect(Channel::Tensors, peer, deadline);
        let (next, prev) = if n == p {
            let s = link(n)?;
            let clone = s.try_clone().map_err(Error::io("the ring's connection"))?;
            (s, clone)
        } else {
            (link(n)?, link(p)?)
        };
        Ok(TcpCollectives {
            rank,
            world,
            timeout,
            links,
            next,
            prev,
            others: (0..world).map(|_| OnceLock::new()).collect(),
            busy: Mutex::new(()),
            broken: AtomicBool::new(false),
        })
    }

    fn next_rank(&self) -> usize {
        (self.rank + 1) % self.world
    }

    fn prev_rank(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    /// Runs one collective: alone, refused after an earlier failure, a failure marking the
    /// links unusable.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::Invalid(
                "collectives are unusable after an earlier failure".into(),
            ));
        }
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let out = f();
        if out.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        out
    }

    /// Runs `read` here, reading from the previous rank; whatever it passes through its sender
    /// goes to the next rank from a writer thread. The first failure on either side is the
    /// result; the other side is unblocked by shutting its half of the socket.
    fn duplex<'a>(
        &self,
        header: &Header,
        read: impl FnOnce(&mpsc::Sender<Cow<'a, [u8]>>) -> Result<()>,
    ) -> Result<()> {
        let first = AtomicU8::new(0);
        let fail = |side: u8, stop: &TcpStream, how: Shutdown| {
            if first
                .compare_exchange(0, side, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let _ = stop.shutdown(how);
            }
        };
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<Cow<'a, [u8]>>();
            let writer = s.spawn(|| {
                let written = rx
                    .into_iter()
                    .try_for_each(|piece| self.write_piece(header, &piece));
                if written.is_err() {
                    fail(WRITER, &self.prev, Shutdown::Read);
                }
                written
            });
            let read = read(&tx);
            drop(tx);
            if read.is_err() {
                fail(READER, &self.next, Shutdown::Write);
            }
            let written = writer.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    what: Op::name(header.op).to_string(),
                    cause: io::Error::other("the sending thread panicked"),
                })
            });
            match first.load(Ordering::SeqCst) {
                WRITER => written,
                _ => read.and(written),
            }
        })
    }

    /// A piece for the next rank's reader (`Err` only when the writer already failed; its
    /// error is the one returned).
    fn pass<'a>(tx: &mpsc::Sender<Cow<'a, [u8]>>, piece: Cow<'a, [u8]>) -> Result<()> {
        tx.send(piece)
            .map_err(|_| Error::Invalid("the sending thread stopped".into()))
    }

    fn write_piece(&self, header: &Header, buf: &[u8]) -> Result<()> {
        let mut s = &self.next;
        s.write_all(&header.with_payload(buf.len()).encode())
            .and_then(|()| s.write_all(buf))
            .map_err(|e| peer_io_error(Op::name(header.op), self.next_rank(), self.timeout, e))
    }

    /// The next message from the previous rank, which must be `header`'s call with `dst.len()`
    /// bytes, into `dst`.
    fn read_piece(&self, header: &Header, dst: &mut [u8]) -> Result<()> {
        read_message(
            &self.prev,
            self.prev_rank(),
            self.rank,
            header,
            dst,
            self.timeout,
        )
    }

    /// Sums `input` over the ranks in rank order along the chain 0 → … → W−1 in `pieces` pieces;
    /// the finished result (÷ W for a mean) on rank W−1, `None` elsewhere.
    fn chain_reduce(
        &self,
        header: &Header,
        (dtype, op): (Dtype, ReduceOp),
        input: &[u8],
        pieces: usize,
    ) -> Result<Option<Vec<u8>>> {
        let (r, w) = (self.rank, self.world);
        let (elt, acc) = (dtype.size(), acc_size(dtype));
        let n = input.len() / elt;
        let last = r == w - 1;
        let mut result = vec![0u8; if last { input.len() } else { 0 }];
        self.duplex(header, |tx| {
            for i in 0..pieces {
                let (a, b) = chunk_bounds(n, pieces, i);
                let own = &input[a * elt..b * elt];
                let sum = if r == 0 {
                    acc_start(dtype, own)
                } else {
                    let mut got = vec![0u8; (b - a) * acc];
                    self.read_piece(header, &mut got)?;
                    acc_add(dtype, &mut got, own);
                    got
                };
                if last {
                    acc_finish(dtype, op, w, &sum, &mut result[a * elt..b * elt]);
                } else {
                    Self::pass(tx, Cow::Owned(sum))?;
                }
            }
            Ok(())
        })?;
        Ok(last.then_some(result))
    }

    /// Rank `src`'s `slices` on every rank, along the ring from `src` to the rank before it.
    fn chain_broadcast(&self, header: &Header, src: usize, slices: Vec<&mut [u8]>) -> Result<()> {
        let end = (src + self.world - 1) % self.world;
        self.duplex(header, |tx| {
            for slice in slices {
                if self.rank != src {
                    self.read_piece(header, slice)?;
                }
                if self.rank != end {
                    Self::pass(tx, Cow::Borrowed(slice))?;
                }
            }
            Ok(())
        })
    }

    /// Every rank's chunk in `chunks` (this rank's already in place) around the ring.
    fn ring_gather(&self, header: &Header, mut chunks: Vec<&mut [u8]>) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        let own: &[u8] = std::mem::take::<&mut [u8]>(&mut chunks[r]);
        let mut slots: Vec<Option<&mut [u8]>> = chunks.into_iter().map(Some).collect();
        self.duplex(header, |tx| {
            Self::pass(tx, Cow::Borrowed(own))?;
            // Step s brings chunk r−1−s, which the next step passes on.
            for s in 0..w - 1 {
                let dst = slots[(r + w - 1 - s) % w].take().expect("each chunk once");
                self.read_piece(header, dst)?;
                if s + 2 < w {
                    Self::pass(tx, Cow::Borrowed(dst))?;
                }
            }
            Ok(())
        })
    }

    /// Reduce-scatter's second half: rank W−1 holds every finished chunk (`all`); chunk c goes
    /// along the ring W−1 → 0 → 1 → … to rank c, into its `out`.
    fn scatter_from_last(&self, header: &Header, all: Option<&[u8]>, out: &mut [u8]) -> Result<()> {
        let (r, w, len) = (self.rank, self.world, out.len());
        self.duplex(header, |tx| {
            if let Some(all) = all {
                for c in 0..w - 1 {
                    Self::pass(tx, Cow::Borrowed(&all[c * len..(c + 1) * len]))?;
                }
                out.copy_from_slice(&all[(w - 1) * len..]);
                return Ok(());
            }
            self.read_piece(header, out)?;
            for _ in r + 1..w - 1 {
                let mut passing = vec![0u8; len];
                self.read_piece(header, &mut passing)?;
                Self::pass(tx, Cow::Owned(passing))?;
            }
            Ok(())
        })
    }

    /// The link to `p` for a point-to-point exchange: the ring's, or one made on first use.
    fn peer(&self, p: usize) -> Result<&TcpStream> {
        if p == self.next_rank() {
            return Ok(&self.next);
        }
        if p == self.prev_rank() {
            return Ok(&self.prev);
        }
        if self.others[p].get().is_none() {
            let deadline = Instant::now() + self.timeout;
            let s = self.links.connect(Channel::Tensors, p, deadline)?;
            let _ = self.others[p].set(s);
        }
        Ok(self.others[p].get().expect("set just above"))
    }

    /// Sends `sends[p]` to each rank p that has one and receives into `recvs[p]` from each rank
    /// p that has one: a writer thread sends to ranks r+1, r+2, … while this thread receives
    /// from r−1, r−2, … (mod W), so step k of one rank's writer meets step k of the receiver's
    /// reader and no pair of ranks can block each other writing. `sent(p)` describes the
    /// message to rank p, `expected(p)` the one this rank expects from rank p.
    fn exchange_described(
        &self,
        sent: &(dyn Fn(usize) -> Header + Sync),
        expected: &dyn Fn(usize) -> Header,
        sends: &[Option<&[u8]>],
        recvs: &mut [Option<&mut [u8]>],
    ) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        // Links made lowest rank first: a rank only ever waits for a higher one to call.
        for p in 0..w {
            if sends[p].is_some() || recvs[p].is_some() {
                self.peer(p)?;
            }
        }
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for k in 1..w {
                    let p = (r + k) % w;
                    if let Some(buf) = sends[p] {
                        let header = sent(p);
                        let what = Op::name(header.op);
                        let mut stream = self.peer(p)?;
                        stream
                            .write_all(&header.with_payload(buf.len()).encode())
                            .and_then(|()| stream.write_all(buf))
                            .map_err(|e| peer_io_error(what, p, self.timeout, e))?;
                    }
                }
                Ok(())
            });
            let mut read = Ok(());
            for k in 1..w {
                let p = (r + w - k) % w;
                if let Some(dst) = recvs[p].as_deref_mut() {
                    let stream = self.peer(p)?;
                    read = read_message(stream, p, r, &expected(p), dst, self.timeout);
                    if read.is_err() {
                        break;
                    }
                }
            }
            let written = writer.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    what: "send_recv".into(),
                    cause: io::Error::other("the sending thread panicked"),
                })
            });
            read.and(written)
        })
    }
}

/// Reads one message from `peer` on `stream` into `dst`; it must be `want`'s call with
/// `dst.len()` bytes.
fn read_message(
    mut stream: &TcpStream,
    peer: usize,
    this_rank: usize,
    want: &Header,
    dst: &mut [u8],
    timeout: Duration,
) -> Result<()> {
    let what = Op::name(want.op);
    let got = Header::read(stream).map_err(|e| peer_io_error(what, peer, timeout, e))?;
    let want = want.with_payload(dst.len());
    if got != want {
        return Err(Error::Mismatch {
            during: what,
            rank: peer,
            this_rank,
            sent: got.describe(),
            expected: want.describe(),
        });
    }
    stream
        .read_exact(dst)
        .map_err(|e| peer_io_error(what, peer, timeout, e))
}

/// `data` (of `elt`-byte elements) cut into `pieces` pieces as `chunk_bounds` cuts it.
fn split_pieces(data: &mut [u8], pieces: usize, elt: usize) -> Vec<&mut [u8]> {
    let n = data.len() / elt.max(1);
    let mut out = Vec::with_capacity(pieces);
    let mut rest = data;
    for i in 0..pieces {
        let (a, b) = chunk_bounds(n, pieces, i);
        let (head, tail) = rest.split_at_mut((b - a) * elt);
        out.push(head);
        rest = tail;
    }
    out
}

/// How many pieces `n` elements travel in (at least one, so every rank sends its header).
fn pieces_for(n: usize, acc: usize) -> usize {
    (n * acc).div_ceil(PIECE).max(1)
}

impl Transport for TcpCollectives {
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        let dtype = Dtype::of(t)?;
        let mut h = host(t);
        let pieces = pieces_for(h.numel(), acc_size(dtype));
        let shape = h.size();
        self.guarded(|| {
            let data = bytes_mut(&mut h);
            let chain = Header::new(Op::AllReduceChain, Some(op), dtype, &shape);
            if let Some(sum) = self.chain_reduce(&chain, (dtype, op), data, pieces)? {
                data.copy_from_slice(&sum);
            }
            let bcast = Header::new(Op::AllReduceBroadcast, Some(op), dtype, &shape);
            let slices = split_pieces(data, pieces, dtype.size());
            self.chain_broadcast(&bcast, self.world - 1, slices)
        })?;
        write_back(t, &h);
        Ok(())
    }

    fn all_gather(&self, t: &Tensor, out_shape: &[i64]) -> Result<Tensor> {
        let dtype = Dtype::of(t)?;
        let h = host(t);
        let mut out = Tensor::empty(out_shape, (t.kind(), Device::Cpu));
        let mine = bytes(&h);
        let mut chunks: Vec<&mut [u8]> = if mine.is_empty() {
            (0..self.world).map(|_| &mut [][..]).collect()
        } else {
            bytes_mut(&mut out).chunks_exact_mut(mine.len()).collect()
        };
        chunks[self.rank].copy_from_slice(mine);
        let header = Header::new(Op::AllGather, None, dtype, &h.size());
        self.guarded(|| self.ring_gather(&header, chunks))?;
        Ok(to_device_of(out, t))
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp, out_shape: &[i64]) -> Result<Tensor> {
        let dtype = Dtype::of(t)?;
        let h = host(t);
        let mut out = Tensor::empty(out_shape, (t.kind(), Device::Cpu));
        let header = Header::new(Op::ReduceScatter, Some(op), dtype, &h.size());
        self.guarded(|| {
            let all = self.chain_reduce(&header, (dtype, op), bytes(&h), self.world)?;
            self.scatter_from_last(&header, all.as_deref(), bytes_mut(&mut out))
        })?;
        Ok(to_device_of(out, t))
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let dtype = Dtype::of(t)?;
        let mut h = host(t);
        let pieces = pieces_for(h.numel(), dtype.size());
        let header = Header::new(Op::Broadcast, None, dtype, &h.size());
        self.guarded(|| {
            let slices = split_pieces(bytes_mut(&mut h), pieces, dtype.size());
            self.chain_broadcast(&header, root, slices)
        })?;
        if self.rank != root {
            write_back(t, &h);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let header = Header::new(Op::Barrier, None, Dtype::F32, &[]);
        self.guarded(|| {
            // Rank W−1 hears once every rank has arrived, then every rank hears from it.
            self.chain_broadcast(&header, 0, vec![&mut [][..]])?;
            self.chain_broadcast(&header, self.world - 1, vec![&mut [][..]])
        })
    }

    /// One message per peer and direction, each with its own header (shape and dtype checked by
    /// the receiver); the exchange's ordering keeps any pattern of sends free of deadlock.
    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> Result<()> {
        let w = self.world;
        let describe = |t: &Tensor| -> Result<Header> {
            Ok(Header::new(Op::SendRecv, None, Dtype::of(t)?, &t.size()))
        };
        let staged: Vec<(usize, Tensor)> = sends.iter().map(|(p, t)| (*p, host(t))).collect();
        let mut sent = vec![None; w];
        let mut send_bufs: Vec<Option<&[u8]>> = vec![None; w];
        for (p, h) in &staged {
            sent[*p] = Some(describe(h)?);
            send_bufs[*p] = Some(bytes(h));
        }
        let mut landing: Vec<(usize, Tensor)> = recvs.iter().map(|(p, t)| (*p, host(t))).collect();
        let mut expected = vec![None; w];
        for (p, h) in &landing {
            expected[*p] = Some(describe(h)?);
        }
        {
            let mut recv_bufs: Vec<Option<&mut [u8]>> = (0..w).map(|_| None).collect();
            for (p, h) in landing.iter_mut() {
                recv_bufs[*p] = Some(bytes_mut(h));
            }
            let header = |headers: &[Option<Header>], p: usize| {
                headers[p]
                    .clone()
                    .expect("a header for every peer with a message")
            };
            self.guarded(|| {
                self.exchange_described(
                    &|p| header(&sent, p),
                    &|p| header(&expected, p),
                    &send_bufs,
                    &mut recv_bufs,
                )
            })?;
        }
        for ((_, t), (_, h)) in recvs.iter_mut().zip(&landing) {
            write_back(t, h);
        }
        Ok(())
    }
}

/// A result computed on the host, returned on the device of the input.
fn to_device_of(out: Tensor, like: &Tensor) -> Tensor {
    match like.device() {
        Device::Cpu => out,
        d => out.to_device(d),
    }
}
