//! This rank's TCP links to other ranks, each made when first needed and kept: the control
//! tree's ([`crate::tree`]) and the CPU backend's ([`crate::tcp`]). Every rank listens on one
//! port, published once in the store (`links/RANK`); of two ranks, the higher one dials and the
//! lower one's acceptor thread takes the call, so two ranks asking for their link at the same
//! time meet without either waiting on the other, and no rank ever waits on a higher one that
//! waits on it. A rank holds only the links it uses: O(1) for the tree and the ring, not a mesh
//! of W − 1 (a mesh of 512 ranks in one process would need 261,632 sockets).

use crate::error::{Error, Result};
use crate::store::StoreClient;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Handshake magic (ASCII "CLDT") so a stray connection is refused rather than trusted.
const MAGIC: u32 = 0x434c_4454;

/// What a link carries: the two users keep separate connections, so their messages never
/// interleave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    Tree = 1,
    Tensors = 2,
}

type Accepted = HashMap<(u8, usize), TcpStream>;

/// The listening side and the address book; see the module documentation.
pub(crate) struct Links {
    rank: usize,
    world: usize,
    timeout: Duration,
    store: Arc<StoreClient>,
    /// Peers' addresses read from the store so far.
    addrs: Mutex<HashMap<usize, String>>,
    /// Connections the acceptor took, until asked for.
    accepted: Arc<(Mutex<Accepted>, Condvar)>,
    stop: Arc<AtomicBool>,
    own_addr: String,
    acceptor: Option<JoinHandle<()>>,
}

impl Links {
    /// Listens, publishes this rank's address and starts the acceptor.
    pub(crate) fn start(
        store: Arc<StoreClient>,
        rank: usize,
        world: usize,
        timeout: Duration,
    ) -> Result<Links> {
        let listener =
            TcpListener::bind(("0.0.0.0", 0)).map_err(Error::io("cannot listen for peers"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("the peers' port"))?
            .port();
        let own_addr = format!("{}:{port}", store.local_ip()?);
        store.set(&format!("links/{rank}"), own_addr.as_bytes())?;
        let accepted: Arc<(Mutex<Accepted>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::Builder::new()
                .name("dist-accept".into())
                .spawn(move || accept_loop(&listener, &accepted, &stop, world, timeout))
                .map_err(Error::io("starting the peers' acceptor"))?
        };
        Ok(Links {
            rank,
            world,
            timeout,
            store,
            addrs: Mutex::default(),
            accepted,
            stop,
            own_addr,
            acceptor: Some(acceptor),
        })
    }

    /// The link to `peer` on `channel` (a new connection: the caller keeps it), dialled by the
    /// higher of the two ranks, within `deadline`. Both ranks ask for it.
    pub(crate) fn connect(
        &self,
        channel: Channel,
        peer: usize,
        deadline: Instant,
    ) -> Result<TcpStream> {
        if peer >= self.world || peer == self.rank {
            return Err(Error::Invalid(format!(
                "rank {} has no link to rank {peer}",
                self.rank
            )));
        }
        let stream = if peer < self.rank {
            self.dial(channel, peer, deadline)?
        } else {
            self.take_accepted(channel, peer, deadline)?
        };
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(self.timeout)))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(Error::io("setting up a peer connection"))?;
        Ok(stream)
    }

    fn addr_of(&self, peer: usize) -> Result<String> {
        let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = addrs.get(&peer) {
            return Ok(a.clone());
        }
        let a = String::from_utf8_lossy(&self.store.get(&format!("links/{peer}"))?).into_owned();
        addrs.insert(peer, a.clone());
        Ok(a)
    }

    /// Connects to `peer` (retrying until `deadline`: it may not listen yet) and says who calls.
    fn dial(&self, channel: Channel, peer: usize, deadline: Instant) -> Result<TcpStream> {
        let addr = self.addr_of(peer)?;
        let mut stream = loop {
            match TcpStream::connect(&addr) {
                Ok(s) => break s,
                Err(cause) if Instant::now() >= deadline => {
                    return Err(Error::PeerUnreachable {
                        rank: peer,
                        addr,
                        cause,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut hello = MAGIC.to_le_bytes().to_vec();
        hello.push(channel as u8);
        hello.extend_from_slice(&(self.rank as u32).to_le_bytes());
        stream
            .write_all(&hello)
            .map_err(|cause| Error::PeerUnreachable {
                rank: peer,
                addr,
                cause,
            })?;
        Ok(stream)
    }

    /// Waits for `peer`'s call on `channel`.
    fn take_accepted(&self, channel: Channel, peer: usize, deadline: Instant) -> Result<TcpStream> {
        let (lock, arrived) = &*self.accepted;
        let mut taken = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(s) = taken.remove(&(channel as u8, peer)) {
                return Ok(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConnectTimeout {
                    after: self.timeout,
                    missing: vec![peer],
                });
            }
            taken = arrived
                .wait_timeout(taken, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor's blocking accept.
        let _ = TcpStream::connect(&self.own_addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Takes every call until stopped, filing each by (channel, rank) from its handshake; a call
/// without a valid handshake is dropped.
fn accept_loop(
    listener: &TcpListener,
    accepted: &(Mutex<Accepted>, Condvar),
    stop: &AtomicBool,
    world: usize,
    timeout: Duration,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok((channel, rank)) = read_hello(&stream, timeout) else {
            continue;
        };
        if rank >= world {
            continue;
        }
        let (lock, arrived) = accepted;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((channel, rank), stream);
        arrived.notify_all();
    }
}

/// The channel and rank a newly accepted peer says it is.
fn read_hello(mut stream: &TcpStream, timeout: Duration) -> io::Result<(u8, usize)> {
    let mut hello = [0u8; 9];
    stream.set_read_timeout(Some(timeout))?;
    stream.read_exact(&mut hello)?;
    if u32::from_le_bytes(hello[..4].try_into().expect("4 bytes")) != MAGIC {
        return Err(io::Error::other("not a clip-dist peer"));
    }
    let rank = u32::from_le_bytes(hello[5..].try_into().expect("4 bytes"));
    Ok((hello[4], rank as usize))
}

/// A failed read or write on `peer`'s link during `during`: the peer died, the wait timed out,
/// or a local socket error.
pub(crate) fn peer_io_error(
    during: &'static str,
    peer: usize,
    timeout: Duration,
    e: io::Error,
) -> Error {
    use io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => Error::PeerDied {
            rank: peer,
            during: Some(during),
        },
        WouldBlock | TimedOut => Error::PeerTimeout {
            rank: peer,
            during,
            after: timeout,
        },
        _ => Error::Io {
            what: format!("{during}: connection to rank {peer}"),
            cause: e,
        },
    }
}
