//! A small TCP key-value store hosted by rank 0 (the role of torch's `TCPStore`): rendezvous,
//! exchanging addresses and the NCCL id, barriers, and — because it holds one connection per
//! rank — noticing dead ranks and collecting heartbeats for the watchdog.
//!
//! Wire format: every message is a frame (`u32` little-endian length, payload); a request is
//! answered by one reply frame, except `HEARTBEAT`, which is fire-and-forget so a training step
//! pays no round trip. An error reply carries the [`Error`] itself (variant and fields), so a
//! rank reads the same typed error the store decided.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const OP_HELLO: u8 = 1;
const OP_SET: u8 = 2;
const OP_GET: u8 = 3;
const OP_ADD: u8 = 4;
const OP_WAIT_ALL: u8 = 5;
const OP_HEARTBEAT: u8 = 6;
const OP_STATUS: u8 = 7;
const OP_BYE: u8 = 8;
/// `SET` without a reply (the flight recorder's progress, on every collective).
const OP_SET_QUIET: u8 = 9;
/// The watchdog's question: is any rank dead or hung? Answered from one scan of the ranks
/// shared by every asker for [`VERDICT_FRESH`], so a poll round of W ranks costs rank 0 O(W).
const OP_VERDICT: u8 = 10;
/// A failed collective's culprit: the job's first one (kept once proposed) and the deaths in
/// the order the store saw them.
const OP_FAILURE: u8 = 11;
/// Operations, for the request counters.
const OPS: usize = 12;

const REPLY_OK: u8 = 0;
const REPLY_ERR: u8 = 1;
const REPLY_VALUE: u8 = 2;
const REPLY_INT: u8 = 3;
const REPLY_STATUS: u8 = 4;
const REPLY_VERDICT: u8 = 5;
const REPLY_FAILURE: u8 = 6;

const ERR_REFUSED: u8 = 1;
const ERR_RENDEZVOUS_TIMEOUT: u8 = 2;
const ERR_KEY_TIMEOUT: u8 = 3;
const ERR_PEER_DIED: u8 = 4;
const ERR_PROTOCOL: u8 = 5;

const ROLE_RANK: u8 = 0;
const ROLE_MONITOR: u8 = 1;

/// Frames larger than this are a protocol error (a stray client, not a store message).
const MAX_FRAME: usize = 1 << 30;
/// How often a server thread blocked in a wait checks whether its client went away.
const POLL: Duration = Duration::from_millis(100);
/// Slack on the client's socket timeout beyond the wait it asked the server for.
const REPLY_SLACK: Duration = Duration::from_secs(10);
/// How long one scan of the ranks answers every watchdog's [`OP_VERDICT`].
const VERDICT_FRESH: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Encoding.

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn new(op: u8) -> Self {
        Enc(vec![op])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(self, v: &[u8]) -> Self {
        let mut s = self.u64(v.len() as u64);
        s.0.extend_from_slice(v);
        s
    }
    fn millis(self, d: Duration) -> Self {
        self.u64(d.as_millis() as u64)
    }
    fn ranks(self, ranks: &[usize]) -> Self {
        ranks
            .iter()
            .fold(self.u64(ranks.len() as u64), |e, &r| e.u64(r as u64))
    }
}

/// Reads a received frame front to back.
struct Dec {
    buf: Vec<u8>,
    pos: usize,
}

impl Dec {
    fn new(buf: Vec<u8>) -> Self {
        Dec { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() - self.pos < n {
            return Err(Error::Protocol("truncated store message".into()));
        }
        self.pos += n;
        Ok(&self.buf[self.pos - n..self.pos])
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<&[u8]> {
        let n = self.u64()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
    fn millis(&mut self) -> Result<Duration> {
        Ok(Duration::from_millis(self.u64()?))
    }
    fn ranks(&mut self) -> Result<Vec<usize>> {
        let n = self.u64()?;
        (0..n).map(|_| Ok(self.u64()? as usize)).collect()
    }
}

/// The error reply for `e`: the variants the store decides travel as themselves, anything else
/// as its message.
fn encode_error(e: &Error) -> Enc {
    let reply = Enc::new(REPLY_ERR);
    match e {
        Error::RendezvousRefused(why) => reply.u8(ERR_REFUSED).bytes(why.as_bytes()),
        Error::RendezvousTimeout { after, missing } => reply
            .u8(ERR_RENDEZVOUS_TIMEOUT)
            .millis(*after)
            .ranks(missing),
        Error::StoreTimeout { key, after } => reply
            .u8(ERR_KEY_TIMEOUT)
            .bytes(key.as_bytes())
            .millis(*after),
        Error::PeerDied { rank, .. } => reply.u8(ERR_PEER_DIED).u64(*rank as u64),
        other => reply.u8(ERR_PROTOCOL).bytes(other.to_string().as_bytes()),
    }
}

/// The inverse of [`encode_error`] (after the `REPLY_ERR` byte).
fn decode_error(d: &mut Dec) -> Result<Error> {
    Ok(match d.u8()? {
        ERR_REFUSED => Error::RendezvousRefused(d.string()?),
        ERR_RENDEZVOUS_TIMEOUT => Error::RendezvousTimeout {
            after: d.millis()?,
            missing: d.ranks()?,
        },
        ERR_KEY_TIMEOUT => Error::StoreTimeout {
            key: d.string()?,
            after: d.millis()?,
        },
        ERR_PEER_DIED => Error::PeerDied {
            rank: d.u64()? as usize,
            during: None,
        },
        ERR_PROTOCOL => Error::Protocol(d.string()?),
        code => Error::Protocol(format!("unknown store error code {code}")),
    })
}

fn write_frame(mut w: &TcpStream, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "store message over 1 GiB",
        ));
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

fn read_frame(mut r: &TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized store frame",
        ));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// Server.

/// Where a rank is, as the store sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankState {
    /// Has not connected yet.
    NotArrived,
    /// Connected.
    Alive,
    /// Said goodbye (`Dist::shutdown`) and may have exited.
    Finished,
    /// Its connection closed without a goodbye: the process died.
    Dead,
}

impl RankState {
    fn code(self) -> u8 {
        match self {
            RankState::NotArrived => 0,
            RankState::Alive => 1,
            RankState::Finished => 2,
            RankState::Dead => 3,
        }
    }
    fn from_code(c: u8) -> Result<Self> {
        Ok(match c {
            0 => RankState::NotArrived,
            1 => RankState::Alive,
            2 => RankState::Finished,
            3 => RankState::Dead,
            _ => return Err(Error::Protocol(format!("bad rank state {c}"))),
        })
    }
}

/// One rank's entry in [`StoreClient::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankStatus {
    pub rank: usize,
    pub state: RankState,
    /// The last step passed to `heartbeat`, if any.
    pub step: Option<u64>,
    /// Time since its last heartbeat (or since it connected), on rank 0's clock.
    pub since_heartbeat: Duration,
}

struct Slot {
    state: RankState,
    step: Option<u64>,
    last_beat: Instant,
}

/// Why the rendezvous failed, decided once for every rank.
#[derive(Clone)]
enum Failure {
    Refused(String),
    TimedOut {
        after: Duration,
        missing: Vec<usize>,
    },
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Refused(why) => Error::RendezvousRefused(why),
            Failure::TimedOut { after, missing } => Error::RendezvousTimeout { after, missing },
        }
    }
}

struct State {
    world_size: usize,
    kv: HashMap<String, Vec<u8>>,
    /// How many times each key that is read a known number of times has been read.
    reads: HashMap<String, u64>,
    ranks: Vec<Slot>,
    /// A rendezvous error every waiting rank must see.
    failure: Option<Failure>,
    /// Ranks in the order their connections closed without a goodbye.
    deaths: Vec<usize>,
    /// The first culprit a failed collective proposed ([`Culprit::encode`]).
    culprit: Option<Vec<u8>>,
    /// The last scan for [`OP_VERDICT`]: when, under which timeout, its answer.
    verdict: Option<(Instant, Duration, Option<Error>)>,
}

impl State {
    fn first_with(&self, state: RankState) -> Option<usize> {
        self.ranks.iter().position(|s| s.state == state)
    }

    fn status(&self) -> Vec<RankStatus> {
        let now = Instant::now();
        self.ranks
            .iter()
            .enumerate()
            .map(|(rank, slot)| RankStatus {
                rank,
                state: slot.state,
                step: slot.step,
                since_heartbeat: now - slot.last_beat,
            })
            .collect()
    }
}

/// Why a server-side wait ended without its value.
enum Interrupted {
    Deadline,
    ClientLeft,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    counters: Counters,
}

/// What serving costs rank 0, counted as it goes (see [`StoreStats`]).
#[derive(Default)]
struct Counters {
    requests: [AtomicU64; OPS],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    cpu_ns: AtomicU64,
}

/// What the store has served since it started: requests by operation, bytes each way, and the
/// CPU time of its threads (`clip-tool sim-ranks` prints the differences over a step).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Requests (frames) received, by operation code.
    pub by_op: [u64; OPS],
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cpu: Duration,
}

impl StoreStats {
    /// Every request received.
    pub fn requests(&self) -> u64 {
        self.by_op.iter().sum()
    }

    /// What was served between `earlier` and `self`.
    pub fn since(&self, earlier: &StoreStats) -> StoreStats {
        StoreStats {
            by_op: std::array::from_fn(|i| self.by_op[i] - earlier.by_op[i]),
            bytes_in: self.bytes_in - earlier.bytes_in,
            bytes_out: self.bytes_out - earlier.bytes_out,
            cpu: self.cpu.saturating_sub(earlier.cpu),
        }
    }

    /// The operations with requests, by name: `get 12, set 3`.
    pub fn breakdown(&self) -> String {
        const NAMES: [&str; OPS] = [
            "?",
            "hello",
            "set",
            "get",
            "add",
            "wait_all",
            "heartbeat",
            "status",
            "bye",
            "set_quiet",
            "verdict",
            "failure",
        ];
        let parts: Vec<String> = (0..OPS)
            .filter(|&i| self.by_op[i] > 0)
            .map(|i| format!("{} {}", NAMES[i], self.by_op[i]))
            .collect();
        parts.join(", ")
    }
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id is valid on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the store down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `ready` gives a value, the deadline passes, or the client closes its
    /// connection: a dead client's thread must notice its EOF while it waits.
    fn wait_for<T>(
        &self,
        stream: &TcpStream,
        deadline: Instant,
        mut ready: impl FnMut(&State) -> Option<T>,
    ) -> std::result::Result<T, Interrupted> {
        let mut st = self.lock();
        loop {
            if let Some(v) = ready(&st) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Interrupted::Deadline);
            }
            st = self
                .changed
                .wait_timeout(st, POLL.min(deadline - now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            drop(st);
            if peer_gone(stream) {
                return Err(Interrupted::ClientLeft);
            }
            st = self.lock();
        }
    }
}

/// Whether the other end closed (EOF or reset), without consuming anything.
fn peer_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let gone = match stream.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    gone || stream.set_nonblocking(false).is_err()
}

/// The store, served by rank 0 from background threads for the life of the process.
pub struct StoreServer {
    port: u16,
    shared: Arc<Shared>,
}

impl StoreServer {
    /// Listens on all interfaces at `port` (0: any free port) for a job of `world_size` ranks.
    /// A port it cannot listen on is a [`Error::Config`] error (MASTER_PORT is taken or
    /// privileged).
    pub fn start(port: u16, world_size: usize) -> Result<Self> {
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
            Error::Config(format!(
                "rank 0 cannot listen for the store on port {port}: {e}"
            ))
        })?;
        let port = listener
            .local_addr()
            .map_err(Error::io("the store's address"))?
            .port();
        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                world_size,
                kv: HashMap::new(),
                reads: HashMap::new(),
                ranks: (0..world_size)
                    .map(|_| Slot {
                        state: RankState::NotArrived,
                        step: None,
                        last_beat: now,
                    })
                    .collect(),
                failure: None,
                deaths: Vec::new(),
                culprit: None,
                verdict: None,
            }),
            changed: Condvar::new(),
            counters: Counters::default(),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("store-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let shared = accept_shared.clone();
                    // A failed spawn only loses that client, which then times out.
                    let _ = std::thread::Builder::new()
                        .name("store-conn".into())
                        .spawn(move || serve(&shared, stream));
                }
            })
            .map_err(Error::io("starting the store"))?;
        Ok(StoreServer { port, shared })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it has served so far.
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            by_op: std::array::from_fn(|i| c.requests[i].load(Ordering::Relaxed)),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            cpu: Duration::from_nanos(c.cpu_ns.load(Ordering::Relaxed)),
        }
    }

    /// Waits (up to `timeout`) until no rank is still connected: rank 0 calls this before it
    /// exits so the others can say goodbye to a store that still exists.
    pub fn wait_until_all_left(&self, timeout: Duration) {
        let mut st = self.shared.lock();
        let deadline = Instant::now() + timeout;
        while st.first_with(RankState::Alive).is_some() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One client connection, until it closes. A rank connection that closes without `BYE` marks
/// the rank dead.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        shared,
        stream: &stream,
        rank: None,
        said_bye: false,
    };
    let counters = &shared.counters;
    let mut cpu = thread_cpu();
    while let Ok(frame) = read_frame(&stream) {
        let op = frame.first().map_or(0, |&op| op as usize);
        counters.requests[op.min(OPS - 1)].fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_in
            .fetch_add(4 + frame.len() as u64, Ordering::Relaxed);
        let reply = conn
            .handle(frame)
            .unwrap_or_else(|e| Some(encode_error(&e)));
        if let Some(reply) = reply {
            counters
                .bytes_out
                .fetch_add(4 + reply.0.len() as u64, Ordering::Relaxed);
            if write_frame(&stream, &reply.0).is_err() {
                break;
            }
        }
        let now = thread_cpu();
        counters
            .cpu_ns
            .fetch_add((now - cpu).as_nanos() as u64, Ordering::Relaxed);
        cpu = now;
    }
    if let (Some(r), false) = (conn.rank, conn.said_bye) {
        let mut st = shared.lock();
        st.ranks[r].state = RankState::Dead;
        st.deaths.push(r);
        shared.changed.notify_all();
    }
}

/// The server's side of one client connection.
struct Conn<'a> {
    shared: &'a Shared,
    stream: &'a TcpStream,
    /// The rank this connection stands for (none for a monitor, or before `HELLO`).
    rank: Option<usize>,
    said_bye: bool,
}

impl Conn<'_> {
    /// Answers one request (`None`: no reply).
    fn handle(&mut self, frame: Vec<u8>) -> Result<Option<Enc>> {
        let mut d = Dec::new(frame);
        let ok = Some(Enc::new(REPLY_OK));
        match d.u8()? {
            OP_HELLO => self.hello(&mut d).map(|()| ok),
            OP_SET => {
                let key = d.string()?;
                let value = d.bytes()?.to_vec();
                self.shared.lock().kv.insert(key, value);
                self.shared.changed.notify_all();
                Ok(ok)
            }
            OP_SET_QUIET => {
                let key = d.string()?;
                let value = d.bytes()?.to_vec();
                self.shared.lock().kv.insert(key, value);
                Ok(None)
            }
            OP_GET => self.get(&mut d).map(Some),
            OP_ADD => self.add(&mut d).map(Some),
            OP_WAIT_ALL => self.wait_all(d.millis()?).map(|()| ok),
            OP_HEARTBEAT => {
                let step = d.u64()?;
                if let Some(r) = self.rank {
                    let mut st = self.shared.lock();
                    st.ranks[r].step = Some(step);
                    st.ranks[r].last_beat = Instant::now();
                }
                Ok(None)
            }
            OP_STATUS => Ok(Some(self.status())),
            OP_VERDICT => Ok(Some(self.verdict(d.millis()?))),
            OP_FAILURE => self.failure(&mut d).map(Some),
            OP_BYE => {
                if let Some(r) = self.rank {
                    self.said_bye = true;
                    self.shared.lock().ranks[r].state = RankState::Finished;
                    self.shared.changed.notify_all();
                }
                Ok(ok)
            }
            op => Err(Error::Protocol(format!("unknown store operation {op}"))),
        }
    }

    /// Registers a rank (or a monitor). A rank that does not fit the world fails the whole
    /// rendezvous, so every waiting rank hears of it.
    fn hello(&mut self, d: &mut Dec) -> Result<()> {
        if d.u8()? == ROLE_MONITOR {
            return Ok(());
        }
        let r = d.u64()? as usize;
        let world = d.u64()? as usize;
        let mut st = self.shared.lock();
        let expected = st.world_size;
        let problem = if world != expected {
            Some(format!(
                "rank {r} has world size {world} but rank 0 has {expected}"
            ))
        } else if r >= expected {
            Some(format!("rank {r} is outside a world of size {expected}"))
        } else if st.ranks[r].state != RankState::NotArrived {
            Some(format!(
                "rank {r} joined twice (two processes with the same rank?)"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            let failure = st.failure.get_or_insert(Failure::Refused(problem)).clone();
            self.shared.changed.notify_all();
            return Err(failure.into());
        }
        st.ranks[r] = Slot {
            state: RankState::Alive,
            step: None,
            last_beat: Instant::now(),
        };
        self.rank = Some(r);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// A key's value once some rank set it. `readers` > 0: the key is removed after that many
    /// reads (the byte collectives' keys, read once by every other rank). A dead rank fails the
    /// wait at once: the value may never come.
    fn get(&mut self, d: &mut Dec) -> Result<Enc> {
        let key = d.string()?;
        let timeout = d.millis()?;
        let readers = d.u64()?;
        let deadline = Instant::now() + timeout;
        let outcome = self
            .shared
            .wait_for(self.stream, deadline, |st| match st.kv.get(&key) {
                Some(v) => Some(Ok(v.clone())),
                None => st.first_with(RankState::Dead).map(Err),
            });
        let value = match outcome {
            Ok(Ok(value)) => value,
            Ok(Err(rank)) => return Err(Error::PeerDied { rank, during: None }),
            Err(_) => {
                return Err(Error::StoreTimeout {
                    key,
                    after: timeout,
                })
            }
        };
        if readers > 0 {
            let mut st = self.shared.lock();
            let reads = st.reads.entry(key.clone()).or_default();
            *reads += 1;
            if *reads >= readers {
                st.reads.remove(&key);
                st.kv.remove(&key);
            }
        }
        Ok(Enc::new(REPLY_VALUE).bytes(&value))
    }

    fn add(&mut self, d: &mut Dec) -> Result<Enc> {
        let key = d.string()?;
        let delta = d.i64()?;
        let mut st = self.shared.lock();
        let old = match st.kv.get(&key) {
            None => 0,
            Some(v) => i64::from_le_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::Protocol(format!("store key {key:?} is not a counter")))?,
            ),
        };
        let new = old.wrapping_add(delta);
        st.kv.insert(key, new.to_le_bytes().to_vec());
        self.shared.changed.notify_all();
        Ok(Enc::new(REPLY_INT).i64(new))
    }

    /// The rendezvous: waits until every rank has connected.
    fn wait_all(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let outcome = self.shared.wait_for(self.stream, deadline, |st| {
            if let Some(f) = &st.failure {
                return Some(Err(f.clone()));
            }
            st.first_with(RankState::NotArrived)
                .is_none()
                .then_some(Ok(()))
        });
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(failure.into()),
            // Nobody reads the reply.
            Err(Interrupted::ClientLeft) => Err(Error::Protocol("client left".into())),
            Err(Interrupted::Deadline) => {
                // The first rank to time out decides for everyone, so every rank reports the
                // same missing ranks (rank 0 waits for the others before it exits).
                let mut st = self.shared.lock();
                let missing = (0..st.world_size)
                    .filter(|&r| st.ranks[r].state == RankState::NotArrived)
                    .collect();
                let failure = Failure::TimedOut {
                    after: timeout,
                    missing,
                };
                let failure = st.failure.get_or_insert(failure).clone();
                self.shared.changed.notify_all();
                Err(failure.into())
            }
        }
    }

    /// Whether a rank died (the first to) or hung, by [`verdict`]'s rule, from a scan of the
    /// ranks at most [`VERDICT_FRESH`] old.
    fn verdict(&self, timeout: Duration) -> Enc {
        let mut st = self.shared.lock();
        let fresh = |v: &(Instant, Duration, Option<Error>)| {
            v.1 == timeout && v.0.elapsed() < VERDICT_FRESH
        };
        if !st.verdict.as_ref().is_some_and(fresh) {
            let found = match st.deaths.first() {
                Some(&rank) => Some(Error::PeerDied { rank, during: None }),
                None => verdict(&st.status(), timeout),
            };
            st.verdict = Some((Instant::now(), timeout, found));
        }
        let reply = Enc::new(REPLY_VERDICT);
        match &st.verdict.as_ref().expect("just set").2 {
            Some(Error::PeerDied { rank, .. }) => reply.u8(1).u64(*rank as u64),
            Some(Error::PeerHung {
                rank,
                idle,
                all_idle,
            }) => reply
                .u8(2)
                .u64(*rank as u64)
                .millis(*idle)
                .u8(*all_idle as u8),
            _ => reply.u8(0),
        }
    }

    /// Keeps the proposed culprit unless one is kept already; answers the kept one and the
    /// deaths in order.
    fn failure(&mut self, d: &mut Dec) -> Result<Enc> {
        let proposed = d.bytes()?.to_vec();
        let mut st = self.shared.lock();
        if st.culprit.is_none() && !proposed.is_empty() {
            st.culprit = Some(proposed);
        }
        let kept = st.culprit.clone().unwrap_or_default();
        let deaths: Vec<usize> = st.deaths.clone();
        Ok(Enc::new(REPLY_FAILURE).bytes(&kept).ranks(&deaths))
    }

    fn status(&self) -> Enc {
        let st = self.shared.lock();
        let now = Instant::now();
        let mut reply = Enc::new(REPLY_STATUS).u64(st.world_size as u64);
        for slot in &st.ranks {
            reply = reply
                .u8(slot.state.code())
                .u8(slot.step.is_some() as u8)
                .u64(slot.step.unwrap_or(0))
                .millis(now - slot.last_beat);
        }
        reply
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

// ---------------------------------------------------------------------------------------------
// Client.

/// A connection to rank 0's store. Requests are serialised on one connection; a rank holds
/// two (its own, whose closing tells the store it died, and the watchdog's).
pub struct StoreClient {
    stream: Mutex<TcpStream>,
    addr: String,
    timeout: Duration,
    barriers: AtomicU64,
}

impl StoreClient {
    /// Connects to the store at `host:port`, retrying until `timeout` (rank 0 may start last),
    /// and registers as `rank` of `world_size`.
    pub fn connect(
        host: &str,
        port: u16,
        rank: usize,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Self> {
        let client = Self::connect_raw(host, port, timeout)?;
        client.request(
            &Enc::new(OP_HELLO)
                .u8(ROLE_RANK)
                .u64(rank as u64)
                .u64(world_size as u64),
            timeout,
        )?;
        Ok(client)
    }

    /// A connection that does not stand for a rank (the watchdog's): its closing means nothing.
    pub fn connect_monitor(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let client = Self::connect_raw(host, port, timeout)?;
        client.request(&Enc::new(OP_HELLO).u8(ROLE_MONITOR), timeout)?;
        Ok(client)
    }

    fn connect_raw(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let addr = format!("{host}:{port}");
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let attempt = (host, port).to_socket_addrs().ok().and_then(|addrs| {
                addrs.into_iter().find_map(|a: SocketAddr| {
                    TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok()
                })
            });
            if let Some(s) = attempt {
                break s;
            }
            if Instant::now() >= deadline {
                return Err(Error::StoreUnreachable {
                    addr,
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        stream
            .set_nodelay(true)
            .map_err(Error::io("a store connection"))?;
        Ok(StoreClient {
            stream: Mutex::new(stream),
            addr,
            timeout,
            barriers: AtomicU64::new(0),
        })
    }

    /// The address of this connection's own end: an address of this host that rank 0 (and so,
    /// in practice, every rank) can reach.
    pub(crate) fn local_ip(&self) -> Result<std::net::IpAddr> {
        let addr = self.lock().local_addr();
        Ok(addr.map_err(|e| self.lost(e))?.ip())
    }

    fn lock(&self) -> MutexGuard<'_, TcpStream> {
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lost(&self, cause: io::Error) -> Error {
        Error::StoreLost {
            addr: self.addr.clone(),
            cause,
        }
    }

    /// Sends one request and reads its reply; `wait` is how long the server may take.
    fn request(&self, msg: &Enc, wait: Duration) -> Result<Dec> {
        let stream = self.lock();
        stream
            .set_read_timeout(Some(wait + REPLY_SLACK))
            .map_err(|e| self.lost(e))?;
        write_frame(&stream, &msg.0).map_err(|e| self.lost(e))?;
        let mut d = Dec::new(read_frame(&stream).map_err(|e| self.lost(e))?);
        if d.u8()? == REPLY_ERR {
            return Err(decode_error(&mut d)?);
        }
        Ok(d)
    }

    /// How long a request may wait (`CLIP_DIST_TIMEOUT`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Stores `value` under `key`, waking every `get` waiting for it.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.request(
            &Enc::new(OP_SET).bytes(key.as_bytes()).bytes(value),
            self.timeout,
        )?;
        Ok(())
    }

    /// The value under `key`, waiting up to the timeout for some rank to set it. A rank that
    /// dies meanwhile fails it at once ([`Error::PeerDied`] naming the rank).
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.take(key, 0)
    }

    /// [`StoreClient::get`], and the store forgets `key` once it has been read `readers` times
    /// (0: never).
    pub(crate) fn take(&self, key: &str, readers: usize) -> Result<Vec<u8>> {
        let msg = Enc::new(OP_GET)
            .bytes(key.as_bytes())
            .millis(self.timeout)
            .u64(readers as u64);
        let mut d = self.request(&msg, self.timeout)?;
        Ok(d.bytes()?.to_vec())
    }

    /// [`StoreClient::set`] with no reply, and nothing at all when another thread is using
    /// this connection (`Ok(false)`).
    pub(crate) fn try_set_quiet(&self, key: &str, value: &[u8]) -> Result<bool> {
        let stream = match self.stream.try_lock() {
            Ok(s) => s,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(false),
        };
        let msg = Enc::new(OP_SET_QUIET).bytes(key.as_bytes()).bytes(value);
        write_frame(&stream, &msg.0).map_err(|e| self.lost(e))?;
        Ok(true)
    }

    /// The value under `key` if some rank set it, without waiting (`None` if unset).
    pub(crate) fn get_now(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let msg = Enc::new(OP_GET)
            .bytes(key.as_bytes())
            .millis(Duration::ZERO)
            .u64(0);
        match self.request(&msg, Duration::ZERO) {
            Ok(mut d) => Ok(Some(d.bytes()?.to_vec())),
            // A dead rank fails a wait for a missing key at once: still just missing here.
            Err(Error::StoreTimeout { .. } | Error::PeerDied { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Adds `delta` to the counter under `key` (0 if unset) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let msg = Enc::new(OP_ADD).bytes(key.as_bytes()).i64(delta);
        self.request(&msg, self.timeout)?.i64()
    }

    /// Waits until every rank has connected. On timeout the error names the missing ranks; a
    /// world-size mismatch or a duplicate rank fails every rank at once.
    pub fn rendezvous(&self) -> Result<()> {
        let msg = Enc::new(OP_WAIT_ALL).millis(self.timeout);
        self.request(&msg, self.timeout)?;
        Ok(())
    }

    /// Waits until all `world_size` ranks have called `barrier` as often as this one.
    pub fn barrier(&self, world_size: usize) -> Result<()> {
        let n = self.barriers.fetch_add(1, Ordering::Relaxed);
        let key = format!("barrier/{n}");
        if self.add(&key, 1)? == world_size as i64 {
            self.set(&format!("{key}/go"), &[])?;
        }
        self.take(&format!("{key}/go"), world_size)?;
        Ok(())
    }

    /// Records this rank's progress (no reply: a heartbeat costs one small write).
    pub fn heartbeat(&self, step: u64) -> Result<()> {
        let stream = self.lock();
        write_frame(&stream, &Enc::new(OP_HEARTBEAT).u64(step).0).map_err(|e| self.lost(e))
    }

    /// Every rank's state, step and heartbeat age.
    pub fn status(&self) -> Result<Vec<RankStatus>> {
        let mut d = self.request(&Enc::new(OP_STATUS), self.timeout)?;
        let world = d.u64()? as usize;
        (0..world)
            .map(|rank| {
                let state = RankState::from_code(d.u8()?)?;
                let has_step = d.u8()? != 0;
                let step = d.u64()?;
                let since = d.millis()?;
                Ok(RankStatus {
                    rank,
                    state,
                    step: has_step.then_some(step),
                    since_heartbeat: since,
                })
            })
            .collect()
    }

    /// Whether a rank died (the first the store saw die) or hung (no heartbeat for `timeout`):
    /// the store's [`verdict`], a few bytes whatever the world size.
    pub fn verdict(&self, timeout: Duration) -> Result<Option<Error>> {
        let mut d = self.request(&Enc::new(OP_VERDICT).millis(timeout), self.timeout)?;
        Ok(match d.u8()? {
            0 => None,
            1 => Some(Error::PeerDied {
                rank: d.u64()? as usize,
                during: None,
            }),
            _ => Some(Error::PeerHung {
                rank: d.u64()? as usize,
                idle: d.millis()?,
                all_idle: d.u8()? != 0,
            }),
        })
    }

    /// Proposes `culprit` as the cause of the job's failure (kept only if none was before) and
    /// returns the one kept, with the ranks that died in the order the store saw them.
    pub(crate) fn failure(
        &self,
        culprit: Option<Culprit>,
    ) -> Result<(Option<Culprit>, Vec<usize>)> {
        let proposed = culprit.map_or(Vec::new(), |c| c.encode());
        let mut d = self.request(&Enc::new(OP_FAILURE).bytes(&proposed), self.timeout)?;
        let kept = Culprit::decode(d.bytes()?);
        Ok((kept, d.ranks()?))
    }

    /// Ranks whose connection closed without a goodbye (their process died).
    pub fn dead_ranks(&self) -> Result<Vec<usize>> {
        Ok(self
            .status()?
            .into_iter()
            .filter(|s| s.state == RankState::Dead)
            .map(|s| s.rank)
            .collect())
    }

    /// Tells the store this rank is leaving on purpose, so its closing is not a death.
    pub fn bye(&self) -> Result<()> {
        self.request(&Enc::new(OP_BYE), self.timeout)?;
        Ok(())
    }
}

/// The cause of a failed collective as the ranks agree on it (see `Group::blame`): a rank that
/// died, or one the others timed out waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Culprit {
    Died(usize),
    TimedOut(usize),
}

impl Culprit {
    fn encode(self) -> Vec<u8> {
        let (kind, rank) = match self {
            Culprit::Died(r) => (1u8, r),
            Culprit::TimedOut(r) => (2u8, r),
        };
        let mut b = vec![kind];
        b.extend_from_slice(&(rank as u64).to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Culprit> {
        let rank = u64::from_le_bytes(b.get(1..9)?.try_into().ok()?) as usize;
        match b[0] {
            1 => Some(Culprit::Died(rank)),
            2 => Some(Culprit::TimedOut(rank)),
            _ => None,
        }
    }
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
