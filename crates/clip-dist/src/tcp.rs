//! CPU collectives over a full mesh of TCP connections (the role of gloo, for development and
//! tests; worlds up to ~16 ranks).
//!
//! Every exchange is "each rank sends some peers a message and receives from some peers": a
//! writer thread sends to ranks r+1, r+2, … while the calling thread receives from r-1, r-2, …
//! (mod W). Step k of one rank's writer meets step k of the receiver's reader, so the slowest
//! step can always proceed and no pair of ranks can block each other writing (the classic
//! deadlock when every rank writes a large buffer before reading).
//!
//! Every message carries a small header (collective, reduction, dtype, shape, payload length)
//! that the receiver checks against its own call, so ranks calling collectives in a different
//! order or with different shapes fail with one clear line instead of garbage.
//!
//! `all_reduce` is a reduce-scatter (rank c reduces chunk c in rank order) followed by an
//! all-gather, so each element is computed once and every rank receives the same bits.

use crate::error::{Error, Result};
use crate::group::Transport;
use crate::host::{bytes, bytes_mut, chunk_bounds, host, reduce_into, write_back, Dtype};
use crate::store::StoreClient;
use crate::ReduceOp;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// Handshake magic (ASCII "CLDT") so a stray connection is refused rather than trusted.
const MAGIC: u32 = 0x434c_4454;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    AllReduceScatter = 1,
    AllReduceGather = 2,
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
    /// `peers[p]`: the connection to rank p (`None` at this rank's own index).
    peers: Vec<Option<TcpStream>>,
    /// One collective at a time: messages on a connection must not interleave.
    busy: Mutex<()>,
    /// Set by a failed exchange: the streams may hold half a message, so later calls refuse.
    broken: AtomicBool,
}

impl TcpCollectives {
    /// Builds the mesh: publishes this rank's listening address in the store, connects to every
    /// lower rank and accepts every higher one, all within `timeout`.
    pub(crate) fn connect(
        store: &StoreClient,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let listener =
            TcpListener::bind(("0.0.0.0", 0)).map_err(Error::io("cannot listen for peers"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("the collectives port"))?
            .port();
        let addr = format!("{}:{port}", store.local_ip()?);
        store.set(&format!("tcp/{rank}"), addr.as_bytes())?;

        let mut peers: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        for (p, slot) in peers.iter_mut().enumerate().take(rank) {
            // Read once by every higher rank.
            let addr = store.take(&format!("tcp/{p}"), world - 1 - p)?;
            let addr = String::from_utf8_lossy(&addr).into_owned();
            *slot = Some(connect_to(p, addr, rank, deadline)?);
        }
        listener
            .set_nonblocking(true)
            .map_err(Error::io("the collectives port"))?;
        while peers[rank + 1..].iter().any(Option::is_none) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let p = read_hello(&stream, timeout)?;
                    if p <= rank || p >= world || peers[p].is_some() {
                        return Err(Error::Protocol(format!(
                            "unexpected connection to this rank's collectives port (rank {p}?)"
                        )));
                    }
                    peers[p] = Some(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing = (rank + 1..world).filter(|&p| peers[p].is_none());
                        return Err(Error::ConnectTimeout {
                            after: timeout,
                            missing: missing.collect(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(Error::io("accepting a peer")(e)),
            }
        }
        for s in peers.iter().flatten() {
            s.set_nodelay(true)
                .and_then(|()| s.set_read_timeout(Some(timeout)))
                .and_then(|()| s.set_write_timeout(Some(timeout)))
                .map_err(Error::io("setting up a peer connection"))?;
        }
        Ok(TcpCollectives {
            rank,
            world,
            timeout,
            peers,
            busy: Mutex::new(()),
            broken: AtomicBool::new(false),
        })
    }

    fn peer(&self, p: usize) -> &TcpStream {
        self.peers[p].as_ref().expect("a peer other than this rank")
    }

    /// What a failed read or write on rank `peer`'s connection during `what` means.
    fn io_error(&self, what: &'static str, peer: usize, e: io::Error) -> Error {
        use io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => Error::PeerDied {
                rank: peer,
                during: Some(what),
            },
            WouldBlock | TimedOut => Error::PeerTimeout {
                rank: peer,
                during: what,
                after: self.timeout,
            },
            _ => Error::Io {
                what: format!("{what}: connection to rank {peer}"),
                cause: e,
            },
        }
    }

    /// Sends `sends[p]` to each rank p that has one and receives into `recvs[p]` from each rank
    /// p that has one; `header` describes this rank's call (its payload length is filled in per
    /// message and checked against what arrives).
    fn exchange(
        &self,
        header: &Header,
        sends: &[Option<&[u8]>],
        recvs: &mut [Option<&mut [u8]>],
    ) -> Result<()> {
        self.exchange_described(&|_| header.clone(), &|_| header.clone(), sends, recvs)
    }

    /// [`TcpCollectives::exchange`] with a header per peer: `sent(p)` describes the message to
    /// rank p, `expected(p)` the one this rank expects from rank p (point to point, where each
    /// message has its own shape).
    fn exchange_described(
        &self,
        sent: &(dyn Fn(usize) -> Header + Sync),
        expected: &dyn Fn(usize) -> Header,
        sends: &[Option<&[u8]>],
        recvs: &mut [Option<&mut [u8]>],
    ) -> Result<()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::Invalid(
                "collectives are unusable after an earlier failure".into(),
            ));
        }
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let result = if sends.iter().all(Option::is_none) {
            self.read_all(expected, recvs)
        } else {
            std::thread::scope(|s| {
                let writer = s.spawn(|| self.write_all(sent, sends));
                let read = self.read_all(expected, recvs);
                let written = writer.join().unwrap_or_else(|_| {
                    Err(Error::Io {
                        what: sends
                            .iter()
                            .position(Option::is_some)
                            .map_or("sending", |p| Op::name(sent(p).op))
                            .to_string(),
                        cause: io::Error::other("the sending thread panicked"),
                    })
                });
                read.and(written)
            })
        };
        if result.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        result
    }

    /// The sending half of [`TcpCollectives::exchange`]: ranks r+1, r+2, … in turn.
    fn write_all(&self, header: &dyn Fn(usize) -> Header, sends: &[Option<&[u8]>]) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        for k in 1..w {
            let p = (r + k) % w;
            if let Some(buf) = sends[p] {
                let header = header(p);
                let what = Op::name(header.op);
                let mut stream = self.peer(p);
                stream
                    .write_all(&header.with_payload(buf.len()).encode())
                    .and_then(|()| stream.write_all(buf))
                    .map_err(|e| self.io_error(what, p, e))?;
            }
        }
        Ok(())
    }

    /// The receiving half of [`TcpCollectives::exchange`]: ranks r-1, r-2, … in turn.
    fn read_all(
        &self,
        header: &dyn Fn(usize) -> Header,
        recvs: &mut [Option<&mut [u8]>],
    ) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        for k in 1..w {
            let p = (r + w - k) % w;
            if let Some(dst) = recvs[p].as_deref_mut() {
                let header = header(p);
                let what = Op::name(header.op);
                let mut stream = self.peer(p);
                let got = Header::read(stream).map_err(|e| self.io_error(what, p, e))?;
                let want = header.with_payload(dst.len());
                if got != want {
                    return Err(Error::Mismatch {
                        during: what,
                        rank: p,
                        this_rank: r,
                        sent: got.describe(),
                        expected: want.describe(),
                    });
                }
                stream
                    .read_exact(dst)
                    .map_err(|e| self.io_error(what, p, e))?;
            }
        }
        Ok(())
    }

    /// Sends `part(p)` to every other rank p, receives every other rank's part for this rank
    /// (`out.len()` bytes each), and reduces them, this rank's own `part(rank)` in its place, in
    /// rank order into `out`.
    fn reduce_parts<'a>(
        &self,
        header: &Header,
        dtype: Dtype,
        op: ReduceOp,
        part: impl Fn(usize) -> &'a [u8],
        out: &mut [u8],
    ) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        let mut scratch = vec![0u8; out.len() * (w - 1)];
        let mut parts = scratch.chunks_exact_mut(out.len().max(1));
        let mut recvs: Vec<Option<&mut [u8]>> = (0..w)
            .map(|p| (p != r).then(|| parts.next().unwrap_or(&mut [][..])))
            .collect();
        let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != r).then(|| part(p))).collect();
        self.exchange(header, &sends, &mut recvs)?;
        let inputs: Vec<&[u8]> = recvs
            .iter()
            .map(|recv| recv.as_deref().unwrap_or_else(|| part(r)))
            .collect();
        reduce_into(dtype, op, &inputs, out);
        Ok(())
    }

    /// Sends this rank's chunk (`chunks[rank]`) to every rank and receives rank p's into
    /// `chunks[p]`.
    fn gather_chunks(&self, header: &Header, mut chunks: Vec<&mut [u8]>) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        let own: &[u8] = std::mem::take::<&mut [u8]>(&mut chunks[r]);
        let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != r).then_some(own)).collect();
        let mut recvs: Vec<Option<&mut [u8]>> = chunks
            .into_iter()
            .enumerate()
            .map(|(p, c)| (p != r).then_some(c))
            .collect();
        self.exchange(header, &sends, &mut recvs)
    }
}

/// Connects to rank `p` at `addr` (retrying until `deadline`: it may not listen yet) and says
/// which rank this is.
fn connect_to(p: usize, addr: String, rank: usize, deadline: Instant) -> Result<TcpStream> {
    let mut stream = loop {
        match TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(cause) if Instant::now() >= deadline => {
                return Err(Error::PeerUnreachable {
                    rank: p,
                    addr,
                    cause,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut hello = MAGIC.to_le_bytes().to_vec();
    hello.extend_from_slice(&(rank as u32).to_le_bytes());
    stream
        .write_all(&hello)
        .map_err(|cause| Error::PeerUnreachable {
            rank: p,
            addr,
            cause,
        })?;
    Ok(stream)
}

/// The rank a newly accepted peer says it is.
fn read_hello(mut stream: &TcpStream, timeout: Duration) -> Result<usize> {
    let mut hello = [0u8; 8];
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(timeout)))
        .and_then(|()| stream.read_exact(&mut hello))
        .map_err(Error::io("reading a peer's handshake"))?;
    let magic = u32::from_le_bytes(hello[..4].try_into().unwrap());
    if magic != MAGIC {
        return Err(Error::Protocol(
            "unexpected connection to this rank's collectives port".into(),
        ));
    }
    Ok(u32::from_le_bytes(hello[4..].try_into().unwrap()) as usize)
}

impl Transport for TcpCollectives {
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        let dtype = Dtype::of(t)?;
        let (r, w, elt) = (self.rank, self.world, dtype.size());
        let mut h = host(t);
        let n = h.numel();
        let shape = h.size();
        let span = |c: usize| {
            let (a, b) = chunk_bounds(n, w, c);
            a * elt..b * elt
        };
        let data = bytes_mut(&mut h);

        // Reduce-scatter: chunk p goes to rank p; this rank reduces chunk r.
        let mut reduced = vec![0u8; span(r).len()];
        let header = Header::new(Op::AllReduceScatter, Some(op), dtype, &shape);
        let view: &[u8] = data;
        self.reduce_parts(&header, dtype, op, |p| &view[span(p)], &mut reduced)?;
        data[span(r)].copy_from_slice(&reduced);

        // All-gather of the reduced chunks.
        let mut chunks: Vec<&mut [u8]> = Vec::with_capacity(w);
        let mut rest = data;
        for c in 0..w {
            let (head, tail) = rest.split_at_mut(span(c).len());
            chunks.push(head);
            rest = tail;
        }
        let header = Header::new(Op::AllReduceGather, Some(op), dtype, &shape);
        self.gather_chunks(&header, chunks)?;
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
        self.gather_chunks(&header, chunks)?;
        Ok(to_device_of(out, t))
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp, out_shape: &[i64]) -> Result<Tensor> {
        let dtype = Dtype::of(t)?;
        let h = host(t);
        let mut out = Tensor::empty(out_shape, (t.kind(), Device::Cpu));
        let data = bytes(&h);
        let len = data.len() / self.world;
        let header = Header::new(Op::ReduceScatter, Some(op), dtype, &h.size());
        let part = |p: usize| &data[p * len..(p + 1) * len];
        self.reduce_parts(&header, dtype, op, part, bytes_mut(&mut out))?;
        Ok(to_device_of(out, t))
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let dtype = Dtype::of(t)?;
        let w = self.world;
        let mut h = host(t);
        let header = Header::new(Op::Broadcast, None, dtype, &h.size());
        let mut recvs: Vec<Option<&mut [u8]>> = (0..w).map(|_| None).collect();
        if self.rank == root {
            let data = bytes(&h);
            let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != root).then_some(data)).collect();
            self.exchange(&header, &sends, &mut recvs)
        } else {
            recvs[root] = Some(bytes_mut(&mut h));
            self.exchange(&header, &vec![None; w], &mut recvs)?;
            write_back(t, &h);
            Ok(())
        }
    }

    fn barrier(&self) -> Result<()> {
        let (r, w) = (self.rank, self.world);
        let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != r).then_some(&[][..])).collect();
        let mut recvs: Vec<Option<&mut [u8]>> =
            (0..w).map(|p| (p != r).then(|| &mut [][..])).collect();
        self.exchange(
            &Header::new(Op::Barrier, None, Dtype::F32, &[]),
            &sends,
            &mut recvs,
        )
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
            self.exchange_described(
                &|p| header(&sent, p),
                &|p| header(&expected, p),
                &send_bufs,
                &mut recv_bufs,
            )?;
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
