//! The rank-0 store in one process: operations, blocking gets, counters, rendezvous checks and
//! dead-rank tracking (a dropped client connection is a dead rank), each error by its variant.

use clip_dist::{Error, Fault, RankState, StoreClient, StoreServer};
use std::time::{Duration, Instant};

fn client(port: u16, rank: usize, world: usize, timeout: Duration) -> StoreClient {
    StoreClient::connect("127.0.0.1", port, rank, world, timeout).unwrap()
}

#[test]
fn set_get_add_and_dead_ranks() {
    let server = StoreServer::start(0, 3).unwrap();
    let port = server.port();
    let t = Duration::from_secs(5);
    let c0 = client(port, 0, 3, t);
    let c1 = client(port, 1, 3, t);
    let c2 = client(port, 2, 3, t);
    c0.rendezvous().unwrap();

    c0.set("a", b"hello").unwrap();
    assert_eq!(c1.get("a").unwrap(), b"hello");
    assert_eq!(c0.add("n", 2).unwrap(), 2);
    assert_eq!(c1.add("n", -5).unwrap(), -3);

    // A get waits for the set.
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (c2.get("later").unwrap(), started.elapsed(), c2)
    });
    std::thread::sleep(Duration::from_millis(200));
    c1.set("later", b"x").unwrap();
    let (value, waited, c2) = waiter.join().unwrap();
    assert_eq!(value, b"x");
    assert!(waited >= Duration::from_millis(150), "{waited:?}");

    // Heartbeats show up in the status (they are fire-and-forget: poll).
    c1.heartbeat(7).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = c0.status().unwrap();
        if status[1].step == Some(7) || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status[1].step, Some(7));
    assert_eq!(status[0].step, None);
    assert!(status.iter().all(|s| s.state == RankState::Alive));

    // A rank leaving with a goodbye is not dead; one that just disconnects is.
    c2.bye().unwrap();
    drop(c2);
    drop(c1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c0.dead_ranks().unwrap() != vec![1] {
        assert!(Instant::now() < deadline, "{:?}", c0.status().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c0.status().unwrap()[2].state, RankState::Finished);
}

#[test]
fn get_times_out_with_the_key() {
    let server = StoreServer::start(0, 1).unwrap();
    let c = client(server.port(), 0, 1, Duration::from_millis(300));
    let e = c.get("never").unwrap_err();
    assert_eq!(
        e.to_string(),
        "timed out after 0.3s waiting for store key \"never\""
    );
    assert!(
        matches!(&e, Error::StoreTimeout { key, after } if key == "never" && after.as_millis() == 300),
        "{e:?}"
    );
    assert_eq!(e.fault(), Fault::Job);
}

#[test]
fn get_fails_at_once_when_a_rank_died() {
    let server = StoreServer::start(0, 3).unwrap();
    let t = Duration::from_secs(30);
    let c0 = client(server.port(), 0, 3, t);
    let c1 = client(server.port(), 1, 3, t);
    let c2 = client(server.port(), 2, 3, t);
    c0.rendezvous().unwrap();
    // Rank 2 leaves properly; rank 1 dies (its connection closes without a goodbye).
    c2.bye().unwrap();
    drop(c2);
    drop(c1);
    let started = Instant::now();
    let e = c0.get("never").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(
        matches!(
            e,
            Error::PeerDied {
                rank: 1,
                during: None
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "rank 1 died (its connection to the store closed)"
    );
    assert_eq!(e.fault(), Fault::Job);
}

#[test]
fn unreachable_store() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let e = StoreClient::connect("127.0.0.1", port, 1, 2, Duration::from_millis(500))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        format!("cannot reach rank 0's store at 127.0.0.1:{port} after 0.5s")
    );
    // The 0.5 s it tries for, ten times over.
    assert!(started.elapsed() < Duration::from_secs(5));
    let want = format!("127.0.0.1:{port}");
    assert!(
        matches!(&e, Error::StoreUnreachable { addr, after } if *addr == want && after.as_millis() == 500),
        "{e:?}"
    );
    assert_eq!(e.fault(), Fault::Job);
}

#[test]
fn world_size_mismatch_fails_everyone() {
    let server = StoreServer::start(0, 2).unwrap();
    let t = Duration::from_secs(5);
    let c0 = client(server.port(), 0, 2, t);
    let e = StoreClient::connect("127.0.0.1", server.port(), 1, 3, t)
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "rendezvous failed: rank 1 has world size 3 but rank 0 has 2"
    );
    assert!(matches!(e, Error::RendezvousRefused(_)), "{e:?}");
    assert_eq!(e.fault(), Fault::Launch);
    let started = Instant::now();
    let e0 = c0.rendezvous().unwrap_err();
    assert_eq!(e0.to_string(), e.to_string());
    assert!(matches!(e0, Error::RendezvousRefused(_)), "{e0:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}
