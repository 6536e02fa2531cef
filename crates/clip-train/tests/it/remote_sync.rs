//! `--remote-sync` against a real S3 server (s3s-fs, `scripts/start-s3.sh`): the run directory
//! is mirrored; with the local directory gone, `--resume latest` continues from the remote's
//! checkpoint, bitwise equal to an uninterrupted run; the server killed in the middle of an
//! upload and restarted: training goes on, the remote ends complete, and no partial checkpoint
//! is ever listed; a remote that is down for the whole run is a warning, not a failure.
//!
//! Each test starts its own server and hands its address to clip-train through the command's
//! environment; the test reads the remote with its own client (`client`), never the process-wide
//! one.
use crate::common::{
    assert_bitwise_equal, cli, free_port, ok, resume_latest, signal, tempdir, wait_until, SIGUSR1,
};
use crate::s3_server::{s3s_fs_or_skip, S3Server};
use aws_sdk_s3::config::{Credentials, Region};
use clip_data::s3::block_on;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");
const BUCKET: &str = "ci-bucket";

/// The tiny model on 10 steps of synthetic data, a checkpoint every 2 steps.
fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --train-num-samples 80 --batch-size 8 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --warmup 5 --log-every-n-steps 1 --seed 9 \
                 --save-every-n-steps 2";
    cli(flags, name, logs, extra)
}

pub(crate) fn synced(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let remote = [
        "--remote-sync",
        "s3://ci-bucket/runs",
        "--remote-sync-frequency",
        "1",
    ];
    args(logs, name, &[&remote[..], extra].concat())
}

/// clip-train with the server's client environment; the SDK's own retries kept short so the
/// outage tests spend their time in clip-train's retries, not the SDK's.
fn command(env: &[(String, String)], args: &[String]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("CLIP_S3_MAX_ATTEMPTS", "2");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "clip-train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn client(srv: &S3Server) -> aws_sdk_s3::Client {
    let get = |k: &str| srv.env.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let creds = Credentials::new(
        get("AWS_ACCESS_KEY_ID"),
        get("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(&srv.endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The objects under `prefix` (keys relative to it); an unreachable server lists nothing.
pub(crate) fn list(c: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let req = c.list_objects_v2().bucket(BUCKET).prefix(prefix).send();
    let Ok(out) = block_on(req) else {
        return vec![];
    };
    out.contents()
        .iter()
        .filter_map(|o| o.key()?.strip_prefix(prefix).map(String::from))
        .collect()
}

fn get(c: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    let out = block_on(c.get_object().bucket(BUCKET).key(key).send()).ok()?;
    Some(block_on(out.body.collect()).ok()?.to_vec())
}

/// Every file of the run directory, by relative path.
fn local_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, p);
            }
        }
    }
    out
}

/// The remote holds every file of `run_dir`, byte for byte; `out.log` up to its last line
/// ("Final remote sync successful.", written after the final sync).
fn assert_remote_complete(c: &aws_sdk_s3::Client, run_dir: &Path, prefix: &str) {
    let local = local_files(run_dir);
    assert!(
        local.contains_key("checkpoints/epoch_1.safetensors"),
        "{local:?}"
    );
    for (rel, path) in &local {
        let remote = get(c, &format!("{prefix}{rel}")).unwrap_or_default();
        let want = std::fs::read(path).unwrap();
        if rel == "out.log" {
            let text = String::from_utf8_lossy(&remote);
            assert!(
                want.starts_with(&remote),
                "out.log: not a prefix of the local log"
            );
            assert!(text.contains("Training finished."), "{text}");
        } else {
            assert!(remote == want, "{rel}: differs on the remote");
        }
    }
}

#[test]
fn a_run_synced_to_s3_resumes_from_the_remote_when_its_directory_is_gone() {
    let Some(bin) = s3s_fs_or_skip() else { return };
    let logs = tempdir("remote-resume");
    let srv = S3Server::start(&bin, logs.join("s3"));
    let c = client(&srv);
    ok(&args(&logs, "ref", &[]));
    // Preempted after step 4's checkpoint exists: the preemption checkpoint, then the final sync.
    let run = synced(&logs, "r", &[]);
    let run_dir = logs.join("r");
    let child = crate::procs::Guarded::spawn(command(&srv.env, &run).stderr(Stdio::piped()));
    wait_until("step_4", || {
        run_dir.join("checkpoints/step_4.safetensors").exists()
    });
    signal(&child, SIGUSR1);
    let out = child.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(err.contains("Final remote sync successful."), "{err}");
    // Only what changed is sent: each checkpoint once over all the passes, the log each time.
    let log = std::fs::read_to_string(run_dir.join("out.log")).unwrap();
    let sends = |name: &str| {
        log.lines()
            .filter_map(|l| l.split_once("Remote sync: sent ").map(|(_, list)| list))
            .filter(|list| list.split(", ").any(|n| n == name))
            .count()
    };
    assert_eq!(sends("checkpoints/step_2.safetensors"), 1, "{log}");
    assert!(sends("out.log") >= 2, "{log}");
    let remote = list(&c, "runs/r/");
    for want in ["out.log", "params.txt", "checkpoints/step_2.safetensors"] {
        assert!(remote.contains(&want.to_string()), "{remote:?}");
    }
    let newest = clip_train::checkpoint::candidates(&run_dir.join("checkpoints"))[0].clone();
    let newest_rel = format!(
        "checkpoints/{}",
        newest.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(
        get(&c, &format!("runs/r/{newest_rel}")),
        Some(std::fs::read(&newest).unwrap())
    );
    // The node and its disk are gone: the same command continues from the remote.
    std::fs::remove_dir_all(&run_dir).unwrap();
    let out = output(&mut command(&srv.env, &resume_latest(&run)));
    let err = String::from_utf8_lossy(&out.stderr);
    let fetched = format!("Fetched checkpoint s3://ci-bucket/runs/r/{newest_rel}");
    assert!(err.contains(&fetched), "{err}");
    assert_bitwise_equal(
        &run_dir.join("checkpoints/epoch_1.safetensors"),
        &logs.join("ref/checkpoints/epoch_1.safetensors"),
    );
    // The resumed run synced its end too.
    assert_remote_complete(&c, &run_dir, "runs/r/");
    drop(srv);
    let _ = std::fs::remove_dir_all(&logs);
}

/// Lists the remote's checkpoints every 50 ms while the run goes on, downloading each new one
/// and verifying its checksum; returns what it saw and the failures.
fn watch_checkpoints(
    c: aws_sdk_s3::Client,
    prefix: String,
    stop: Arc<AtomicBool>,
    tmp: PathBuf,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut bad = Vec::new();
        loop {
            // One more listing after the stop: the run's final sync is complete by then.
            let last = stop.load(Ordering::SeqCst);
            for rel in list(&c, &prefix) {
                if !rel.ends_with(".safetensors") || seen.contains(&rel) {
                    continue;
                }
                let Some(bytes) = get(&c, &format!("{prefix}{rel}")) else {
                    continue; // the server went down between the listing and the read
                };
                let file = tmp.join("listed.safetensors");
                std::fs::write(&file, bytes).unwrap();
                if let Err(e) = clip_train::checkpoint::load(&file) {
                    bad.push(format!("{rel}: {e:#}"));
                }
                seen.insert(rel);
            }
            if last {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (seen.len(), bad)
    })
}

#[test]
fn a_server_killed_during_an_upload_loses_nothing_and_never_shows_a_partial_checkpoint() {
    let Some(bin) = s3s_fs_or_skip() else { return };
    let logs = tempdir("remote-outage");
    let srv = S3Server::start(&bin, logs.join("s3"));
    let c = client(&srv);
    let flag = logs.join("paused");
    // clip_tiny's checkpoints (21 MB: its 49408-token embedding and its moments) go up in
    // parts of S3's minimum 5 MiB, so each is a multipart upload; the hook holds the first one
    // after its first part until the test has killed the server.
    let mut cmd = command(&srv.env, &synced(&logs, "k", &["--model", "clip_tiny"]));
    cmd.env("CLIP_TRAIN_REMOTE_SYNC_PART_BYTES", "5242880").env(
        "CLIP_TRAIN_TEST_REMOTE_SYNC_PAUSE",
        format!("checkpoints/:{}", flag.display()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_checkpoints(
        c.clone(),
        "runs/k/checkpoints/".into(),
        stop.clone(),
        logs.clone(),
    );
    let child = crate::procs::Guarded::spawn(cmd.stderr(Stdio::piped()));
    wait_until("the paused upload", || flag.exists());
    srv.kill();
    std::fs::remove_file(&flag).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    srv.restart();
    let out = child.wait_with_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    stop.store(true, Ordering::SeqCst);
    let (seen, bad) = watcher.join().unwrap();
    assert!(bad.is_empty(), "partial checkpoints listed: {bad:?}");
    // Every checkpoint of the run (steps 2, 4, … 10 and epoch 1) was listed and verified.
    assert_eq!(seen, 6, "{err}");
    // The kill hit an upload, which was retried.
    assert!(
        err.contains("| WARNING | remote sync: uploading checkpoints/"),
        "{err}"
    );
    assert!(err.contains("Final remote sync successful."), "{err}");
    assert_remote_complete(&c, &logs.join("k"), "runs/k/");
    drop(srv);
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn a_remote_that_stays_down_is_a_warning_not_a_dead_run() {
    let logs = tempdir("remote-down");
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let env = [
        ("AWS_ENDPOINT_URL", nobody.as_str()),
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_REGION", "us-east-1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let out = output(&mut command(&env, &synced(&logs, "d", &[])));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("| WARNING | remote sync to s3://ci-bucket/runs/d/ failed"),
        "{err}"
    );
    assert!(err.contains("Final remote sync failed"), "{err}");
    assert!(logs.join("d/checkpoints/epoch_1.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&logs);
}
