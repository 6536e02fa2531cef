//! Real multi-process runs of `dist-selftest` over the CPU (TCP) backend: every collective
//! against a reference computed here from the same seeded inputs (bitwise, on every rank), the
//! rendezvous timeout, and dead, killed and hung ranks ending the job with a message naming them.

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
    ranks: Vec<(usize, Child)>,
}

impl Job {
    /// Starts `ranks` of a world of `world` on a fresh port.
    fn start(dir: &Path, world: usize, ranks: &[usize], timeout_s: f64, args: &[&str]) -> Job {
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
            ranks,
        }
    }

    fn stdout(&self, rank: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("out.{rank}"))).unwrap_or_default()
    }

    fn stderr(&self, rank: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("err.{rank}"))).unwrap_or_default()
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
        let status = job.wait(rank, Duration::from_secs(20));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        assert_eq!(
            job.stderr(rank).trim(),
            "error: rendezvous timed out after 1.5s: ranks 2, 3 never arrived",
            "rank {rank}"
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
}

/// SIGKILL one rank of a running job: the others end promptly with a line naming it (starting
/// with `expected`).
fn kill_rank(name: &str, args: &[&str], victim: usize, expected: &str) {
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
    kill_rank("kill-1", &["train"], 1, expected);
}

#[test]
fn killed_rank_0_fails_the_collectives() {
    let expected = "error: all_reduce: rank 0 closed its connection (process died?)";
    kill_rank("kill-0", &["train"], 0, expected);
}

/// Without collectives in flight (a NCCL rank would just block), the watchdog notices.
#[test]
fn killed_rank_is_named_by_the_watchdog() {
    let expected = "error: rank 1 died (its connection to the store closed)";
    kill_rank("watch-1", &["heartbeat", "3"], 1, expected);
}

#[test]
fn killed_rank_0_is_named_by_the_watchdog() {
    // The watchdog's line, or the same diagnosis from the next heartbeat's write.
    let expected = "error: lost the store on rank 0";
    kill_rank("watch-0", &["heartbeat", "3"], 0, expected);
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

#[test]
fn collective_timeout_names_the_rank() {
    let dir = scratch("stall");
    let mut job = Job::start(&dir, 3, &[0, 1, 2], 3.0, &["stall", "1"]);
    for rank in [0, 2] {
        // Normally ~4 s (the 3 s timeout and the start); ten times that.
        let status = job.wait(rank, Duration::from_secs(40));
        assert_eq!(status.code(), Some(clip_dist::EXIT_DIST_FAILURE));
        assert_eq!(
            job.stderr(rank).trim(),
            "error: all_reduce: timed out after 3s waiting for rank 1",
            "rank {rank}"
        );
    }
}
