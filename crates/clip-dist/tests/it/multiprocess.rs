//! Real multi-process runs of `dist-selftest` over the CPU (TCP) backend: every collective
//! against a reference computed here from the same seeded inputs (bitwise, on every rank), the
//! byte collectives, the rendezvous timeout, and dead, killed and hung ranks ending the job with
//! a message naming them. A rank's `clip_dist::Error` is checked by its variant (the selftest
//! prints its `Debug` form) and by the exit status its `Fault` gives.

#[path = "../../src/bin/dist-selftest/cases.rs"]
mod cases;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

const BIN: &str = env!("CARGO_BIN_EXE_dist-selftest");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A temporary folder for one test's logs and results.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clip-dist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Ranks of one job; any still running when dropped are killed.
struct Job {
    dir: PathBuf,
    port: String,
    ranks: Vec<(usize, Child)>,
}

impl Job {
    /// Starts `ranks` of a world of `world` on a fresh port.
    fn start(dir: &Path, world: usize, ranks: &[usize], timeout_s: f64, args: &[&str]) -> Job {
        Job::start_env(dir, world, ranks, timeout_s, args, &[])
    }

    /// [`Job::start`], then `env` set for every rank (overriding the job's own variables).
    fn start_env(
        dir: &Path,
        world: usize,
        ranks: &[usize],
        timeout_s: f64,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Job {
        let port = free_port().to_string();
        let ranks = ranks
            .iter()
            .map(|&rank| {
                let out = std::fs::File::create(dir.join(format!("out.{rank}"))).unwrap();
                let err = std::fs::File::create(dir.join(format!("err.{rank}"))).unwrap();
                let mut cmd = Command::new(BIN);
                if world == 1 {
                    // A world of one needs no address at all.
                    cmd.env_remove("MASTER_ADDR").env_remove("MASTER_PORT");
                } else {
                    cmd.env("MASTER_ADDR", "127.0.0.1")
                        .env("MASTER_PORT", &port);
                }
                for var in clip_dist::LOCAL_RANK_VARS
                    .iter()
                    .chain(&clip_dist::RANK_VARS)
                    .chain(&clip_dist::WORLD_SIZE_VARS)
                {
                    cmd.env_remove(var);
                }
                let child = cmd
                    .args(args)
                    .env("RANK", rank.to_string())
                    .env("LOCAL_RANK", rank.to_string())
                    .env("WORLD_SIZE", world.to_string())
                    .env("CLIP_DIST_TIMEOUT", timeout_s.to_string())
                    .envs(env.iter().copied())
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .unwrap();
                (rank, child)
            })
            .collect();
        Job {
            dir: dir.to_path_buf(),
            port,
            ranks,
        }
    }

    fn stdout(&self, rank: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("out.{rank}"))).unwrap_or_default()
    }

    fn stderr(&self, rank: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("err.{rank}"))).unwrap_or_default()
    }

    /// The `Debug` form of the `clip_dist::Error` that ended `rank` (empty if none did).
    fn variant(&self, rank: usize) -> String {
        let out = self.stdout(rank);
        let line = out.lines().find_map(|l| l.strip_prefix("variant: "));
        line.unwrap_or_default().to_string()
    }

    /// Waits (up to `limit`) for `rank` to exit and checks how: the exit status, the error's
    /// variant, its line.
    fn expect_failure(&mut self, rank: usize, limit: u64, status: i32, variant: &str, line: &str) {
        let code = self.wait(rank, Duration::from_secs(limit)).code();
        assert_eq!(code, Some(status), "rank {rank}: {}", self.stderr(rank));
        assert_eq!(self.variant(rank), variant, "rank {rank}");
        assert_eq!(self.stderr(rank).trim(), line, "rank {rank}");
    }

    fn child(&mut self, rank: usize) -> &mut Child {
        &mut self.ranks.iter_mut().find(|(r, _)| *r == rank).unwrap().1
    }

    /// Waits for `rank` to exit, failing the test after `limit`.
    fn wait(&mut self, rank: usize, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child(rank).try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "rank {rank} still running after {limit:?}; stderr: {}",
                self.stderr(rank)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every rank printed `ready`.
    fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for &(rank, _) in &self.ranks {
            while !self.stdout(rank).contains("ready") {
                assert!(
                    Instant::now() < deadline,
                    "rank {rank} not ready; stderr: {}",
                    self.stderr(rank)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        for (_, child) in &mut self.ranks {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tensor's raw bytes: comparisons here are bitwise (-0.0 ≠ +0.0).
fn raw(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut v, t.numel());
    v
}

/// The naive reduction: rank 0's tensor plus each next rank's in order, bf16 in f32 and rounded
/// once at the end, a mean dividing the f32 sum.
fn reduce(xs: &[Tensor], mean: bool) -> Tensor {
    let kind = xs[0].kind();
    let acc_kind = if kind == Kind::BFloat16 {
        Kind::Float
    } else {
        kind
    };
    let mut acc = xs[0].to_kind(acc_kind).copy();
    for x in &xs[1..] {
        acc = &acc + x.to_kind(acc_kind);
    }
    if mean {
        acc /= xs.len() as f64;
    }
    acc.to_kind(kind)
}

fn reference(name: &str, xs: &[Tensor], rank: usize, root: usize) -> Tensor {
    let w = xs.len() as i64;
    let scatter = |t: Tensor| {
        let n = t.size()[0] / w;
        t.narrow(0, rank as i64 * n, n)
    };
    match name {
        "all_reduce_sum" => reduce(xs, false),
        "all_reduce_mean" => reduce(xs, true),
        "all_reduce_sum_transposed" => reduce(xs, false).transpose(0, 1),
        "broadcast" => xs[root].shallow_clone(),
        "broadcast_transposed" => xs[root].transpose(0, 1),
        "all_gather" if xs[0].dim() == 0 => Tensor::stack(xs, 0),
        "all_gather" => Tensor::cat(xs, 0),
        "send_recv_ring" => xs[(rank + xs.len() - 1) % xs.len()].shallow_clone(),
        "send_recv_bidir" => {
            let w = xs.len();
            Tensor::cat(&[&xs[(rank + 1) % w], &-&xs[(rank + w - 1) % w]], 0)
        }
        "reduce_scatter_sum" => scatter(reduce(xs, false)),
        "reduce_scatter_mean" => scatter(reduce(xs, true)),
        other => panic!("no reference for {other}"),
    }
}

fn check_collectives(world: usize) {
    let dir = scratch(&format!("collectives-{world}"));
    let ranks: Vec<usize> = (0..world).collect();
    let results = dir.join("results");
    let mut job = Job::start(
        &dir,
        world,
        &ranks,
        30.0,
        &["collectives", results.to_str().unwrap()],
    );
    for rank in 0..world {
        let status = job.wait(rank, Duration::from_secs(60));
        assert!(status.success(), "rank {rank}: {}", job.stderr(rank));
    }
    let cases = cases::cases(world);
    let mut checked = 0;
    for rank in 0..world {
        let got: HashMap<String, Tensor> =
            Tensor::load_multi(format!("{}.{rank}", results.display()))
                .unwrap()
                .into_iter()
                .collect();
        for (i, case) in cases.iter().enumerate() {
            let xs: Vec<Tensor> = (0..world).map(|r| cases::input(i, case, r)).collect();
            for &name in case.collectives {
                let key = format!("c{i}_{name}");
                let want = reference(name, &xs, rank, cases::root(i, world));
                let have = got.get(&key).unwrap_or_else(|| panic!("{key} missing"));
                let what = format!(
                    "world {world}, rank {rank}, {name} of {:?} {:?}",
                    case.shape, case.kind
                );
                assert_eq!(have.kind(), want.kind(), "{what}");
                assert_eq!(have.size(), want.size(), "{what}");
                assert!(raw(have) == raw(&want), "{what}: values differ");
                checked += 1;
            }
        }
    }
    assert!(checked > 50 * world);
}

#[test]
fn collectives_world_1() {
    check_collectives(1);
}

#[test]
fn collectives_world_2() {
    check_collectives(2);
}

#[test]
fn collectives_world_3() {
    check_collectives(3);
}

#[test]
fn collectives_world_4() {
    check_collectives(4);
}

#[test]
fn rendezvous_timeout_names_missing_ranks() {
    let dir = scratch("rendezvous");
    let mut job = Job::start(&dir, 4, &[0, 1], 1.5, &["rendezvous"]);
    for rank in [0, 1] {
        job.expect_failure(
            rank,
            20,
            clip_dist::EXIT_DIST_FAILURE,
            "RendezvousTimeout { after: 1.5s, missing: [2, 3] }",
            "error: rendezvous timed out after 1.5s: ranks 2, 3 never arrived",
        );
    }
}

#[test]
fn missing_rank_0_is_reported() {
    let dir = scratch("no-rank-0");
    let mut job = Job::start(&dir, 2, &[1], 1.0, &["rendezvous"]);
    let status = job.wait(1, Duration::from_secs(20));
    assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
    let err = job.stderr(1);
    assert!(
        err.starts_with("error: cannot reach rank 0's store at 127.0.0.1:")
            && err.contains("after 1s"),
        "{err}"
    );
    let variant = format!(
        "StoreUnreachable {{ addr: \"127.0.0.1:{}\", after: 1s }}",
        job.port
    );
    assert_eq!(job.variant(1), variant);
}

/// SIGKILL one rank of a running job: the others end promptly with a line naming it (starting
/// with `expected`) and, when the error was returned rather than the watchdog's, `variant`.
fn kill_rank(name: &str, args: &[&str], victim: usize, expected: &str, variant: Option<&str>) {
    let dir = scratch(name);
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 30.0, args);
    job.wait_ready(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    job.child(victim).kill().unwrap();
    let killed = Instant::now();
    for rank in (0..3).filter(|&r| r != victim) {
        // Normally within ~3 s (the watchdog polls every second); the bounds are ten times that.
        let status = job.wait(rank, Duration::from_secs(30));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        let err = job.stderr(rank);
        assert!(err.starts_with(expected), "rank {rank}: {err}");
        if let Some(variant) = variant {
            assert_eq!(job.variant(rank), variant, "rank {rank}");
        }
    }
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn killed_rank_fails_the_collectives() {
    let expected = "error: all_reduce: rank 1 closed its connection (process died?)";
    let variant = r#"PeerDied { rank: 1, during: Some("all_reduce") }"#;
    kill_rank("kill-1", &["train"], 1, expected, Some(variant));
}

#[test]
fn killed_rank_0_fails_the_collectives() {
    let expected = "error: all_reduce: rank 0 closed its connection (process died?)";
    let variant = r#"PeerDied { rank: 0, during: Some("all_reduce") }"#;
    kill_rank("kill-0", &["train"], 0, expected, Some(variant));
}

/// Without collectives in flight (a NCCL rank would just block), the watchdog notices.
#[test]
fn killed_rank_is_named_by_the_watchdog() {
    let expected = "error: rank 1 died (its connection to the store closed)";
    kill_rank("watch-1", &["heartbeat", "3"], 1, expected, None);
}

#[test]
fn killed_rank_0_is_named_by_the_watchdog() {
    // The watchdog's line, or the same diagnosis from the next heartbeat's write.
    let expected = "error: lost the store on rank 0";
    kill_rank("watch-0", &["heartbeat", "3"], 0, expected, None);
}

#[test]
fn hung_rank_is_named_by_the_watchdog() {
    let dir = scratch("hung");
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 30.0, &["heartbeat", "1"]);
    for rank in [0, 2] {
        // Normally ~5 s; ten times that.
        let status = job.wait(rank, Duration::from_secs(60));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        let err = job.stderr(rank);
        assert!(
            err.starts_with("error: rank 1 has made no progress for") && err.contains("(hung?)"),
            "rank {rank}: {err}"
        );
    }
    assert!(!job.wait(1, Duration::from_secs(10)).success());
}

/// The collective's own timeout names the rank; the flight recorder comes first and names it
/// too (every rank publishes each collective it enters).
#[test]
fn collective_timeout_names_the_rank() {
    let dir = scratch("stall");
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 3.0, &["stall", "1"]);
    for rank in [0, 2] {
        let status = job.wait(rank, Duration::from_secs(40));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        assert_eq!(
            job.variant(rank),
            r#"PeerTimeout { rank: 1, during: "all_reduce", after: 3s }"#
        );
        let err = job.stderr(rank);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 4, "rank {rank}: {err}");
        assert_eq!(
            lines[0],
            format!("flight recorder of rank {rank} (last 1 calls, oldest first):")
        );
        let call = "all_reduce (sum) of [10] f32 (40 bytes)";
        let record = format!("  rank {rank} #1 {call}: started ");
        assert!(lines[1].starts_with(&record), "{err}");
        let diagnosis = format!(
            "flight recorder: collective #1 ({call}): rank 1 never entered it \
             (their last: rank 1: none)"
        );
        assert_eq!(lines[2], diagnosis);
        assert_eq!(
            lines[3],
            "error: all_reduce: timed out after 3s waiting for rank 1"
        );
    }
}

/// What a rank printed about collective #5 of the `stop` / `skip` modes, which `culprit`
/// never entered (its last was #4): its records #1 to #5, the newest still open or timed out,
/// and the line naming the culprit.
fn check_flight_report(job: &Job, rank: usize, culprit: usize) {
    let err = job.stderr(rank);
    let call = "all_reduce (sum) of [1000] f32 (4000 bytes)";
    let title = format!("flight recorder of rank {rank} (last 5 calls, oldest first):");
    assert!(err.contains(&title), "rank {rank}: {err}");
    for seq in 1..=5 {
        let record = format!("\n  rank {rank} #{seq} {call}: started ");
        assert!(err.contains(&record), "rank {rank}, #{seq}: {err}");
    }
    let diagnosis = format!(
        "\nflight recorder: collective #5 ({call}): rank {culprit} never entered it \
         (their last: rank {culprit}: #4 {call})\n"
    );
    assert!(err.contains(&diagnosis), "rank {rank}: {err}");
}

/// A rank stopped (SIGSTOP) between two all-reduces: the heartbeats alone cannot tell which
/// rank the others wait for (everyone stopped beating at once); the watchdog's flight recorder
/// names it on every other rank, and they end within a few seconds of the timeout.
#[test]
fn stopped_rank_is_named_by_the_flight_recorder() {
    let dir = scratch("flight-stop");
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 2.0, &["stop", "1"]);
    job.wait_ready(Duration::from_secs(30));
    let started = Instant::now();
    for rank in [0, 2] {
        // Normally ~5 s (the timeout, a poll, the others' linger); six times that.
        let status = job.wait(rank, Duration::from_secs(30));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        let err = job.stderr(rank);
        assert!(
            err.starts_with("error: ") && err.lines().next().unwrap().ends_with("(hung?)"),
            "rank {rank}: {err}"
        );
        assert!(err.contains("#5 all_reduce (sum) of [1000] f32 (4000 bytes): started "));
        assert!(err.contains(", still running\n"), "rank {rank}: {err}");
        check_flight_report(&job, rank, 1);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Stopped, not dead: it never ran its watchdog again.
    assert!(job.child(1).try_wait().unwrap().is_none());
}

/// Rank 0 skips an all-reduce and goes on heartbeating: the watchdog would blame the others
/// (their heartbeats stopped), but their collective times out and the flight recorder names
/// rank 0, which never entered it.
#[test]
fn skipped_collective_is_named_by_the_flight_recorder() {
    let dir = scratch("flight-skip");
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 3.0, &["skip", "0"]);
    for rank in [1, 2] {
        let status = job.wait(rank, Duration::from_secs(40));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        let variant = job.variant(rank);
        assert!(
            variant.starts_with("PeerTimeout { rank: ") && variant.contains("all_reduce"),
            "{variant}"
        );
        check_flight_report(&job, rank, 0);
        let err = job.stderr(rank);
        let last = err.lines().last().unwrap();
        assert!(last.starts_with("error: all_reduce: timed out after 3s waiting for rank "));
    }
}

/// The byte collectives through the store at every world size: each rank saved what it got, and
/// every byte must be the sender's (strings over 16 KiB, multi-byte UTF-8 and NULs, lengths
/// differing by rank, one empty).
#[test]
fn byte_collectives_worlds_1_to_4() {
    for world in 1..=4 {
        let dir = scratch(&format!("bytes-{world}"));
        let ranks: Vec<usize> = (0..world).collect();
        let out = dir.join("got");
        let mut job = Job::start(&dir, world, &ranks, 30.0, &["bytes", out.to_str().unwrap()]);
        for rank in 0..world {
            let status = job.wait(rank, Duration::from_secs(60));
            assert!(
                status.success(),
                "world {world}, rank {rank}: {}",
                job.stderr(rank)
            );
        }
        let got = |rank: usize, what: String| {
            let path = format!("{}.{rank}.{what}", out.display());
            String::from_utf8(std::fs::read(&path).unwrap()).unwrap()
        };
        for rank in 0..world {
            for root in 0..world {
                let sent = cases::text(root, root);
                assert!(sent.len() > 16 * 1024);
                let have = got(rank, format!("b{root}"));
                assert!(
                    have == sent,
                    "world {world}, rank {rank}: broadcast from {root}"
                );
            }
            for p in 0..world {
                let have = got(rank, format!("g{p}"));
                assert!(
                    have == cases::text(world, p),
                    "world {world}, rank {rank}: from {p}"
                );
                assert_eq!(got(rank, format!("e{p}")), cases::short(p));
            }
        }
    }
}

#[test]
fn byte_collectives_called_differently_fail_naming_the_rank() {
    let dir = scratch("bytes-mismatch");
    let mut job = Job::start(&dir, 2, &[0, 1], 30.0, &["mismatch"]);
    job.expect_failure(
        1,
        20,
        clip_dist::EXIT_DIST_FAILURE,
        r#"Mismatch { during: "all_gather_bytes", rank: 0, this_rank: 1, sent: "broadcast_bytes", expected: "all_gather_bytes" }"#,
        "error: all_gather_bytes: rank 0 sent broadcast_bytes but this rank (rank 1) expects all_gather_bytes (ranks called collectives in a different order or with different shapes)",
    );
}

/// A point-to-point message of another shape than the receiver's tensor: the receiver names the
/// sender and both shapes (each message carries its own header).
#[test]
fn a_message_of_another_shape_fails_naming_the_sender() {
    let dir = scratch("p2p-mismatch");
    let mut job = Job::start(&dir, 2, &[0, 1], 30.0, &["p2p-mismatch"]);
    job.expect_failure(
        1,
        20,
        clip_dist::EXIT_DIST_FAILURE,
        r#"Mismatch { during: "send_recv", rank: 0, this_rank: 1, sent: "send_recv of [3] f32 (12 bytes)", expected: "send_recv of [4] f32 (16 bytes)" }"#,
        "error: send_recv: rank 0 sent send_recv of [3] f32 (12 bytes) but this rank (rank 1) expects send_recv of [4] f32 (16 bytes) (ranks called collectives in a different order or with different shapes)",
    );
}

/// A peer that dies just before the final barrier: the others' `shutdown` names it and they
/// exit 70 (the watchdog is off here, so the error is the one `shutdown` returns).
#[test]
fn peer_dying_at_the_final_barrier_is_named() {
    let dir = scratch("shutdown");
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 30.0, &["shutdown", "1"]);
    for rank in [0, 2] {
        job.expect_failure(
            rank,
            20,
            clip_dist::EXIT_DIST_FAILURE,
            r#"PeerDied { rank: 1, during: Some("barrier") }"#,
            "error: barrier: rank 1 closed its connection (process died?)",
        );
    }
}

/// Launch mistakes are configuration errors (exit 2), found before anything waits.
#[test]
fn launch_mistakes_are_config_errors() {
    // The ranks started, the variables set, the message of every rank.
    type Case<'a> = (&'a [usize], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            &[0, 1],
            &[("MASTER_PORT", "abc")],
            r#"MASTER_PORT="abc" is not a port number: invalid digit found in string"#,
        ),
        (
            &[1],
            &[("MASTER_PORT", "0")],
            r#"MASTER_PORT="0" is not a port number: port 0 cannot be shared with the other ranks"#,
        ),
        (
            &[5],
            &[],
            "rank 5 is not below the world size 2 (check RANK / WORLD_SIZE or their slurm/MPI equivalents)",
        ),
    ];
    for (i, (ranks, env, message)) in cases.into_iter().enumerate() {
        let dir = scratch(&format!("config-{i}"));
        let mut job = Job::start_env(&dir, 2, ranks, 30.0, &["rendezvous"], env);
        for &rank in ranks {
            let variant = format!("Config({message:?})");
            job.expect_failure(rank, 20, 2, &variant, &format!("error: {message}"));
        }
    }
}

/// Rank 0 cannot listen on MASTER_PORT (another process has it): a configuration error too.
#[test]
fn a_taken_master_port_is_a_config_error() {
    let dir = scratch("port-taken");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut job = Job::start_env(
        &dir,
        2,
        &[0],
        30.0,
        &["rendezvous"],
        &[("MASTER_PORT", &port)],
    );
    let status = job.wait(0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "{}", job.stderr(0));
    let prefix = format!("Config(\"rank 0 cannot listen for the store on port {port}: ");
    assert!(job.variant(0).starts_with(&prefix), "{}", job.variant(0));
}

/// A world of one checks every call as a larger world would (an `Invalid` error, this
/// process's fault: exit 1), and its byte collectives give back what they got.
#[test]
fn world_of_one_checks_calls_like_any_world() {
    use clip_dist::{Backend, Collectives, Error, Fault, InitOptions, ReduceOp, WorldInfo};
    let world = WorldInfo::single();
    let opts = InitOptions::from_env(&world, None, Backend::Cpu).unwrap();
    let dist = clip_dist::init(world, opts).unwrap();
    let c: &dyn Collectives = dist.collectives();
    let long = cases::text(0, 0);
    assert_eq!(
        c.broadcast_bytes(long.as_bytes(), 0).unwrap(),
        long.as_bytes()
    );
    assert_eq!(c.all_gather_bytes(b"").unwrap(), vec![Vec::<u8>::new()]);
    let f32s = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, tch::Device::Cpu));
    let invalid: Vec<(Error, &str)> = vec![
        (
            c.broadcast_bytes(b"x", 1).unwrap_err(),
            "broadcast root 1 is outside a world of size 1",
        ),
        (
            c.broadcast(&mut f32s(&[2]), 1).unwrap_err(),
            "broadcast root 1 is outside a world of size 1",
        ),
        (
            c.reduce_scatter(&f32s(&[]), ReduceOp::Sum).unwrap_err(),
            "reduce_scatter needs a first dimension divisible by the world size 1, got shape []",
        ),
        (
            c.all_reduce(&mut Tensor::from_slice(&[1i64]), ReduceOp::Mean)
                .unwrap_err(),
            "a mean of i64 tensors is not supported (it would truncate)",
        ),
        (
            c.all_gather(&Tensor::from_slice(&[1i32])).unwrap_err(),
            "collectives support f32, bf16, f64 and i64 tensors, not Int",
        ),
        (
            c.send_recv(&[(0, &f32s(&[2]))], &mut []).unwrap_err(),
            "send_recv on rank 0: send peer 0 is this rank itself",
        ),
        (
            c.send_recv(&[], &mut [(1, &mut f32s(&[2]))]).unwrap_err(),
            "send_recv on rank 0: receive peer 1 is outside a world of size 1",
        ),
    ];
    // Nothing to send or receive is a valid exchange in any world.
    c.send_recv(&[], &mut []).unwrap();
    for (e, message) in invalid {
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        assert_eq!(e.to_string(), message);
        assert_eq!(e.fault(), Fault::Local);
        assert_eq!(e.fault().exit_status(), 1);
    }
    dist.shutdown().unwrap();
}

/// `nccl` mode in a world of one runs the real NCCL backend, not the local stand-in: with a
/// CUDA driver it passes its own bitwise checks, and without one (the CPU machines) it fails
/// at NCCL's setup saying so — either way NCCL was reached.
#[test]
fn nccl_mode_runs_nccl_at_world_size_1() {
    let dir = scratch("nccl-1");
    let out = dir.join("results");
    let mut job = Job::start(&dir, 1, &[0], 30.0, &["nccl", out.to_str().unwrap()]);
    let status = job.wait(0, Duration::from_secs(120));
    let driver = Path::new("/proc/driver/nvidia/version").exists();
    if driver {
        assert!(status.success(), "{}", job.stderr(0));
        assert!(
            job.stdout(0)
                .contains("results bitwise equal to the local reference"),
            "{}",
            job.stdout(0)
        );
    } else {
        assert_eq!(status.code(), Some(1), "{}", job.stderr(0));
        assert_eq!(
            job.stderr(0).trim(),
            "error: NCCL needs the CUDA driver, and libcuda.so.1 cannot be loaded"
        );
    }
}

/// `CLIP_NCCL_LIB` naming a library that is not there: one line listing what was tried and what
/// to set (NCCL is loaded before the CUDA driver is asked for, so this holds without a GPU).
#[test]
fn a_missing_nccl_library_is_listed() {
    let dir = scratch("nccl-lib");
    let out = dir.join("results");
    let missing = dir.join("nowhere/libnccl.so.2");
    let missing = missing.to_str().unwrap();
    let env = [("CLIP_NCCL_LIB", missing)];
    let args = ["nccl", out.to_str().unwrap()];
    let mut job = Job::start_env(&dir, 1, &[0], 30.0, &args, &env);
    let status = job.wait(0, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", job.stderr(0));
    let err = job.stderr(0);
    let tried = format!("error: cannot load NCCL; tried {missing} (");
    assert!(err.starts_with(&tried), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(
        err.trim_end()
            .ends_with("; set CLIP_NCCL_LIB to the path of libnccl.so.2"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
