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

use crate::host::{bytes, bytes_mut, chunk_bounds, host, reduce_into, write_back, Dtype};
use crate::store::StoreClient;
use crate::world::fmt_secs;
use crate::{Collectives, ReduceOp};
use anyhow::{anyhow, bail, Context, Result};
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
}

impl Op {
    fn name(code: u8) -> &'static str {
        match code {
            1 | 2 => "all_reduce",
            3 => "all_gather",
            4 => "reduce_scatter",
            5 => "broadcast",
            6 => "barrier",
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
pub struct TcpCollectives {
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
    pub fn connect(
        store: &StoreClient,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let listener = TcpListener::bind(("0.0.0.0", 0)).context("cannot listen for peers")?;
        let addr = format!("{}:{}", store.local_ip()?, listener.local_addr()?.port());
        store.set(&format!("tcp/{rank}"), addr.as_bytes())?;

        let mut peers: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        for (p, slot) in peers.iter_mut().enumerate().take(rank) {
            let addr = String::from_utf8(store.get(&format!("tcp/{p}"))?)?;
            let mut stream = loop {
                match TcpStream::connect(&addr) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= deadline => {
                        bail!("cannot connect to rank {p} at {addr}: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            let mut hello = MAGIC.to_le_bytes().to_vec();
            hello.extend_from_slice(&(rank as u32).to_le_bytes());
            stream.write_all(&hello)?;
            *slot = Some(stream);
        }

        listener.set_nonblocking(true)?;
        while peers[rank + 1..].iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false)?;
                    stream.set_read_timeout(Some(timeout))?;
                    let mut hello = [0u8; 8];
                    stream
                        .read_exact(&mut hello)
                        .context("reading a peer's handshake")?;
                    let magic = u32::from_le_bytes(hello[..4].try_into().unwrap());
                    let p = u32::from_le_bytes(hello[4..].try_into().unwrap()) as usize;
                    if magic != MAGIC || p <= rank || p >= world || peers[p].is_some() {
                        bail!("unexpected connection to this rank's collectives port (rank {p}?)");
                    }
                    peers[p] = Some(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> = (rank + 1..world)
                            .filter(|&p| peers[p].is_none())
                            .map(|p| p.to_string())
                            .collect();
                        bail!(
                            "timed out after {} waiting for ranks {} to connect",
                            fmt_secs(timeout),
                            missing.join(", ")
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e).context("accepting a peer"),
            }
        }
        for s in peers.iter().flatten() {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
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

    fn io_error(&self, what: &str, peer: usize, e: io::Error) -> anyhow::Error {
        use io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
                anyhow!("{what}: rank {peer} closed its connection (process died?)")
            }
            WouldBlock | TimedOut => anyhow!(
                "{what}: timed out after {} waiting for rank {peer}",
                fmt_secs(self.timeout)
            ),
            _ => anyhow!("{what}: connection to rank {peer}: {e}"),
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
        if self.broken.load(Ordering::Relaxed) {
            bail!("collectives are unusable after an earlier failure");
        }
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let what = Op::name(header.op);
        let (r, w) = (self.rank, self.world);
        let write_all = || -> Result<()> {
            for k in 1..w {
                let p = (r + k) % w;
                if let Some(buf) = sends[p] {
                    let mut stream = self.peer(p);
                    stream
                        .write_all(&header.with_payload(buf.len()).encode())
                        .and_then(|()| stream.write_all(buf))
                        .map_err(|e| self.io_error(what, p, e))?;
                }
            }
            Ok(())
        };
        let read_all = |recvs: &mut [Option<&mut [u8]>]| -> Result<()> {
            for k in 1..w {
                let p = (r + w - k) % w;
                if let Some(dst) = recvs[p].as_deref_mut() {
                    let mut stream = self.peer(p);
                    let got = Header::read(stream).map_err(|e| self.io_error(what, p, e))?;
                    let want = header.with_payload(dst.len());
                    if got != want {
                        bail!(
                            "{what}: rank {p} sent {} but this rank (rank {r}) expects {} (ranks called collectives in a different order or with different shapes)",
                            got.describe(),
                            want.describe()
                        );
                    }
                    stream
                        .read_exact(dst)
                        .map_err(|e| self.io_error(what, p, e))?;
                }
            }
            Ok(())
        };
        let result = if sends.iter().all(Option::is_none) {
            read_all(recvs)
        } else {
            std::thread::scope(|s| {
                let writer = s.spawn(write_all);
                let read = read_all(recvs);
                let written = writer
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("{what}: the sending thread panicked")));
                read.and(written)
            })
        };
        if result.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Collectives for TcpCollectives {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        let dtype = Dtype::of(t)?;
        dtype.check_reduce(op)?;
        let (r, w, elt) = (self.rank, self.world, dtype.size());
        let mut h = host(t);
        let n = h.numel();
        let shape = h.size();
        let span = |c: usize| {
            let (a, b) = chunk_bounds(n, w, c);
            a * elt..b * elt
        };
        let mine = span(r);
        let data = bytes_mut(&mut h);

        // Reduce-scatter: chunk p goes to rank p; this rank reduces chunk r.
        let mut scratch = vec![0u8; mine.len() * (w - 1)];
        {
            let mut parts = scratch.chunks_exact_mut(mine.len().max(1));
            let mut recvs: Vec<Option<&mut [u8]>> = (0..w)
                .map(|p| {
                    (p != r).then(|| match parts.next() {
                        Some(part) => part,
                        None => &mut [][..],
                    })
                })
                .collect();
            let sends: Vec<Option<&[u8]>> =
                (0..w).map(|p| (p != r).then(|| &data[span(p)])).collect();
            let header = Header::new(Op::AllReduceScatter, Some(op), dtype, &shape);
            self.exchange(&header, &sends, &mut recvs)?;
            let inputs: Vec<&[u8]> = (0..w)
                .map(|p| match &recvs[p] {
                    Some(part) => &**part,
                    None => &data[mine.clone()],
                })
                .collect();
            let mut reduced = vec![0u8; mine.len()];
            reduce_into(dtype, op, &inputs, &mut reduced);
            data[mine.clone()].copy_from_slice(&reduced);
        }

        // All-gather of the reduced chunks.
        let mut chunks: Vec<&mut [u8]> = Vec::with_capacity(w);
        let mut rest = data;
        for c in 0..w {
            let (head, tail) = rest.split_at_mut(span(c).len());
            chunks.push(head);
            rest = tail;
        }
        let own: &[u8] = std::mem::take::<&mut [u8]>(&mut chunks[r]);
        let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != r).then_some(own)).collect();
        let mut recvs: Vec<Option<&mut [u8]>> = chunks
            .into_iter()
            .enumerate()
            .map(|(p, c)| (p != r).then_some(c))
            .collect();
        let header = Header::new(Op::AllReduceGather, Some(op), dtype, &shape);
        self.exchange(&header, &sends, &mut recvs)?;
        write_back(t, &h);
        Ok(())
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let dtype = Dtype::of(t)?;
        let (r, w) = (self.rank, self.world);
        let h = host(t);
        let shape = h.size();
        let mut out_shape = if shape.is_empty() {
            vec![1]
        } else {
            shape.clone()
        };
        out_shape[0] *= w as i64;
        let mut out = Tensor::empty(&out_shape, (t.kind(), Device::Cpu));
        let mine = bytes(&h);
        let mut chunks: Vec<&mut [u8]> = if mine.is_empty() {
            (0..w).map(|_| &mut [][..]).collect()
        } else {
            bytes_mut(&mut out).chunks_exact_mut(mine.len()).collect()
        };
        chunks[r].copy_from_slice(mine);
        let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != r).then_some(mine)).collect();
        let mut recvs: Vec<Option<&mut [u8]>> = chunks
            .into_iter()
            .enumerate()
            .map(|(p, c)| (p != r).then_some(c))
            .collect();
        self.exchange(
            &Header::new(Op::AllGather, None, dtype, &shape),
            &sends,
            &mut recvs,
        )?;
        Ok(to_device_of(out, t))
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let dtype = Dtype::of(t)?;
        dtype.check_reduce(op)?;
        let (r, w) = (self.rank, self.world);
        let h = host(t);
        let shape = h.size();
        let mut out_shape = shape.clone();
        match out_shape.first_mut() {
            Some(d0) if *d0 % w as i64 == 0 => *d0 /= w as i64,
            _ => bail!(
                "reduce_scatter needs a first dimension divisible by the world size {w}, got shape {shape:?}"
            ),
        }
        let mut out = Tensor::empty(&out_shape, (t.kind(), Device::Cpu));
        let data = bytes(&h);
        let len = data.len() / w;
        let part = |p: usize| &data[p * len..(p + 1) * len];
        let mut scratch = vec![0u8; len * (w - 1)];
        let mut parts = scratch.chunks_exact_mut(len.max(1));
        let mut recvs: Vec<Option<&mut [u8]>> = (0..w)
            .map(|p| {
                (p != r).then(|| match parts.next() {
                    Some(part) => part,
                    None => &mut [][..],
                })
            })
            .collect();
        let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != r).then(|| part(p))).collect();
        self.exchange(
            &Header::new(Op::ReduceScatter, Some(op), dtype, &shape),
            &sends,
            &mut recvs,
        )?;
        let inputs: Vec<&[u8]> = (0..w)
            .map(|p| match &recvs[p] {
                Some(buf) => &**buf,
                None => part(r),
            })
            .collect();
        reduce_into(dtype, op, &inputs, bytes_mut(&mut out));
        Ok(to_device_of(out, t))
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let dtype = Dtype::of(t)?;
        let w = self.world;
        if root >= w {
            bail!("broadcast root {root} is outside a world of size {w}");
        }
        let mut h = host(t);
        let header = Header::new(Op::Broadcast, None, dtype, &h.size());
        if self.rank == root {
            let data = bytes(&h);
            let sends: Vec<Option<&[u8]>> = (0..w).map(|p| (p != root).then_some(data)).collect();
            let mut recvs: Vec<Option<&mut [u8]>> = (0..w).map(|_| None).collect();
            self.exchange(&header, &sends, &mut recvs)
        } else {
            let sends: Vec<Option<&[u8]>> = vec![None; w];
            let mut recvs: Vec<Option<&mut [u8]>> = (0..w).map(|_| None).collect();
            recvs[root] = Some(bytes_mut(&mut h));
            self.exchange(&header, &sends, &mut recvs)?;
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
}

/// A result computed on the host, returned on the device of the input.
pub(crate) fn to_device_of(out: Tensor, like: &Tensor) -> Tensor {
    match like.device() {
        Device::Cpu => out,
        d => out.to_device(d),
    }
}
