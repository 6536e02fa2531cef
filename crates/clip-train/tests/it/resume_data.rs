//! Resuming the data where it stands (issue 12): a resume reads what the epoch still needs,
//! not the shards already trained on. Against a real S3 server with a byte-counting proxy in
//! front: resuming late in an epoch reads less than resuming early, in proportion to what is
//! left, and both end bitwise equal to the uninterrupted run. An epoch resumed on another world
//! size trains each of its samples once.
use crate::common::{assert_bitwise_equal, cli, make_shards, resume_latest, stopped_copy, tempdir};
use crate::distributed::{spawn_world_with, wait_all};
use crate::s3_server::{s3s_fs_or_skip, CountingProxy, S3Server};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

/// One epoch of 8 steps over 64 samples in 4 S3 shards, a checkpoint every step.
fn args(logs: &Path, name: &str) -> Vec<String> {
    let flags = "--dataset-type webdataset --train-num-samples 64 --batch-size 8 --workers 2 \
                 --epochs 1 --model clip_tiny --lr 1e-3 --warmup 2 --seed 3 \
                 --save-every-n-steps 1 --log-every-n-steps 1";
    let data = "s3://ci-bucket/wds/{00000..00003}.tar";
    cli(flags, name, logs, &["--train-data", data])
}

/// Runs clip-train against `proxy`; the bytes the server sent meanwhile.
fn served_during(srv: &S3Server, proxy: &CountingProxy, args: &[String]) -> u64 {
    let before = proxy.served();
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in &srv.env {
        cmd.env(k, v);
    }
    cmd.env("AWS_ENDPOINT_URL", &proxy.endpoint);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "clip-train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.served() - before
}

#[test]
fn resuming_late_in_an_epoch_reads_less_from_s3_than_resuming_early() {
    let Some(bin) = s3s_fs_or_skip() else { return };
    let dir = tempdir("resume-bytes");
    let srv = S3Server::start(&bin, dir.join("s3"));
    let proxy = CountingProxy::start(&srv.endpoint);
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 64, 16, 0);
    let mut data_bytes = 0;
    for i in 0..4 {
        let p = shards.join(format!("{i:05}.tar"));
        data_bytes += std::fs::metadata(&p).unwrap().len();
        srv.put("ci-bucket", &format!("wds/{i:05}.tar"), &p);
    }
    let logs = dir.join("logs");
    let full = served_during(&srv, &proxy, &args(&logs, "full"));
    assert!(
        full >= data_bytes,
        "the whole epoch crossed: {full} of {data_bytes} bytes"
    );
    let last = logs.join("full/checkpoints/epoch_1.safetensors");
    let mut read = Vec::new();
    for step in [2, 6] {
        let name = format!("stop{step}");
        stopped_copy(&logs.join("full"), &logs.join(&name), step);
        read.push(served_during(
            &srv,
            &proxy,
            &resume_latest(&args(&logs, &name)),
        ));
        assert_bitwise_equal(
            &logs.join(&name).join("checkpoints/epoch_1.safetensors"),
            &last,
        );
    }
    // 48 and 16 of the 64 samples are left: what crossed follows (plus per-request headers)
    let (early, late) = (read[0] as f64, read[1] as f64);
    eprintln!("served: full {full}, resumed at step 2 {early}, at step 6 {late} bytes");
    assert!(early < 0.9 * full as f64, "early {early} vs full {full}");
    let ratio = late / early;
    assert!(
        (0.2..0.55).contains(&ratio),
        "late/early = {ratio} (expected about 1/3)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir` with its length and modification time.
fn listing(dir: &Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(listing(&p));
        } else {
            let m = std::fs::metadata(&p).unwrap();
            out.push((p, m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// A resume the data cannot serve is refused before the job starts: one line naming the
/// numbers, exit 2, the run directory untouched. (Rank 0 of a bigger world is enough: the
/// refusal comes before the rendezvous.)
#[test]
fn resumes_onto_a_layout_the_data_cannot_serve_are_refused_before_anything_is_written() {
    let dir = tempdir("resume-refused");
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 64, 16, 0);
    let logs = dir.join("logs");
    let flags = "--dataset-type webdataset --train-num-samples 64 --batch-size 8 --workers 2 \
                 --epochs 2 --model clip_tiny --lr 1e-3 --seed 3 --save-every-n-steps 3";
    let data = format!("{}/{{00000..00003}}.tar", shards.display());
    let base = cli(flags, "r", &logs, &["--train-data", &data]);
    crate::common::ok(&[&base[..], &["--epochs".into(), "1".into()]].concat());
    let run = logs.join("r");
    let refused = |world: &str, extra: &[&str], want: &str| {
        let before = listing(&run);
        let out = Command::new(BIN)
            .args(resume_latest(&base))
            .args(extra)
            .env("RANK", "0")
            .env("WORLD_SIZE", world)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", crate::common::free_port().to_string())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(listing(&run), before, "nothing written");
    };
    // the epoch checkpoint keeps 2 streams per rank: 3 ranks would need 6 plain shards
    refused(
        "3",
        &["--workers", "1"],
        "number of shards (4) must be >= workers (2) x world size (3)",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `args` on `world` ranks (CPU backend), each logging the keys it trains to `keys`.
fn run_ranks(world: usize, args: &[String], keys: &Path) {
    std::fs::create_dir_all(keys).unwrap();
    let children = spawn_world_with(world, &|_| args.to_vec(), 120, &|_, cmd| {
        cmd.env("CLIP_TRAIN_TEST_KEYS", keys);
    });
    for (rank, out) in wait_all(children).iter().enumerate() {
        assert!(
            out.status.success(),
            "rank {rank} of {world}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The (batch, key) lines of every rank's `CLIP_TRAIN_TEST_KEYS` file in `dir`.
fn trained_keys(dir: &Path) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            let mut f = line.splitn(3, ' ');
            let (_epoch, batch, key) = (f.next(), f.next().unwrap(), f.next().unwrap());
            out.push((batch.parse().unwrap(), key.to_string()));
        }
    }
    out
}

fn final_step(run: &Path) -> i64 {
    clip_train::checkpoint::peek_state(&run.join("checkpoints/epoch_1.safetensors"))
        .unwrap()
        .step
}

/// Issue 12: a mid-epoch checkpoint resumed by another number of ranks (2 → 1, 1 → 3, CPU
/// backend): the samples trained before the checkpoint and after the resume are the
/// uninterrupted epoch's, each once; the step counters fit the new epoch length. With
/// `--dataset-resampled` (1 → 2) the run goes on from a new seed and says so.
#[test]
fn an_epoch_resumed_on_another_world_size_trains_each_of_its_samples_once() {
    let dir = tempdir("resume-world");
    let shards = dir.join("shards");
    make_shards(&dir, &shards, 64, 8, 0);
    let data = format!("{}/{{00000..00007}}.tar", shards.display());
    let flags = "--dataset-type webdataset --train-num-samples 64 --batch-size 4 --workers 1 \
                 --epochs 1 --model clip_tiny --lr 1e-3 --seed 3 --log-every-n-steps 1 \
                 --save-every-n-steps 1";
    // (world, stopped after step, world of the resume, its log line, steps in all, flags)
    let resampled: &[&str] = &["--dataset-resampled"];
    let accum: &[&str] = &["--accum-freq", "2"];
    let cases = [
        (
            2,
            3,
            1,
            "continuing at step 6 of 16 on 1 ranks",
            3 + 10,
            &[][..],
        ),
        (1, 4, 3, "continuing at step 2 of 6 on 3 ranks", 4 + 4, &[]),
        (
            1,
            4,
            2,
            "continuing at step 2 of 8 on 2 ranks",
            4 + 6,
            resampled,
        ),
        // 2 batches a step: the rest is split in whole steps
        (
            2,
            1,
            1,
            "continuing at step 2 of 8 on 1 ranks",
            1 + 6,
            accum,
        ),
    ];
    for (before, stop, after, said, steps, flags_too) in cases {
        let logs = dir.join(format!("logs-{before}-{after}-{}", flags_too.len()));
        let extra = [&["--train-data", data.as_str()][..], flags_too].concat();
        let resampled = flags_too == resampled;
        let per_step = if flags_too == accum { 2 } else { 1 };
        let (full_keys, rest_keys) = (logs.join("keys-full"), logs.join("keys-rest"));
        run_ranks(before, &cli(flags, "full", &logs, &extra), &full_keys);
        stopped_copy(&logs.join("full"), &logs.join("cut"), stop);
        run_ranks(
            after,
            &resume_latest(&cli(flags, "cut", &logs, &extra)),
            &rest_keys,
        );
        let log = std::fs::read_to_string(logs.join("cut/out.log")).unwrap();
        assert!(
            log.contains(&format!(
                "Resuming on {after} ranks a checkpoint of {before}"
            )),
            "{log}"
        );
        assert!(log.contains(said), "{log}");
        assert_eq!(final_step(&logs.join("cut")), steps);
        let full = trained_keys(&full_keys);
        let rest = trained_keys(&rest_keys);
        if resampled {
            assert!(
                log.contains("draws afresh from a seed derived from step 4"),
                "{log}"
            );
            assert_eq!(rest.len(), 6 * 2 * 4, "6 steps of 2 ranks × 4");
            continue;
        }
        let mut trained: Vec<&String> = full
            .iter()
            .filter(|(b, _)| *b < stop * per_step)
            .map(|(_, k)| k)
            .collect();
        trained.extend(rest.iter().map(|(_, k)| k));
        trained.sort();
        let mut uninterrupted: Vec<&String> = full.iter().map(|(_, k)| k).collect();
        uninterrupted.sort();
        assert_eq!(uninterrupted.len(), 64);
        assert_eq!(trained, uninterrupted, "{before} → {after} ranks");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Synthetic data (whose batches are a function of their index) resumed mid-epoch on another
/// world size continues at the converted step, and says the samples differ.
#[test]
fn synthetic_data_resumed_on_another_world_size_continues_at_the_converted_step() {
    let dir = tempdir("resume-world-synthetic");
    let logs = dir.join("logs");
    let flags = "--dataset-type synthetic --train-num-samples 64 --batch-size 4 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --seed 3 --save-every-n-steps 1";
    run_ranks(1, &cli(flags, "full", &logs, &[]), &dir.join("keys"));
    stopped_copy(&logs.join("full"), &logs.join("cut"), 4);
    run_ranks(
        2,
        &resume_latest(&cli(flags, "cut", &logs, &[])),
        &dir.join("keys"),
    );
    let log = std::fs::read_to_string(logs.join("cut/out.log")).unwrap();
    assert!(
        log.contains("16 samples trained, continuing at step 2 of 8 on 2 ranks"),
        "{log}"
    );
    assert!(
        log.contains("samples differ from an uninterrupted run's"),
        "{log}"
    );
    assert_eq!(final_step(&logs.join("cut")), 4 + 6);
    let _ = std::fs::remove_dir_all(&dir);
}
