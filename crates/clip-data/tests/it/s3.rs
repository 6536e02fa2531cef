//! Shards from a real S3 server (s3s-fs, started by scripts/start-s3.sh): native aws-sdk-s3,
//! `pipe:aws s3 cp`, a missing key, and a server killed and restarted mid-shard.
//!
//! The S3 client is process-global (it reads the environment once), so every scenario runs in
//! this one test against one server.

use crate::common::*;
use crate::s3_server::{s3s_fs_or_skip, S3Server};
use clip_data::loader::{Batch, Loader, LoaderConfig};
use clip_data::samples::{Item, ShardSamples, SkipReason};
use clip_data::shards::ShardList;
use std::sync::Arc;
use std::time::Duration;

fn sample_keys(url: &str) -> (Vec<String>, Vec<(SkipReason, String)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for it in ShardSamples::open(url) {
        match it {
            Item::Sample(s) => ok.push(s.key),
            Item::Skip { reason, detail, .. } => bad.push((reason, detail)),
        }
    }
    (ok, bad)
}

#[test]
fn s3_sources() {
    let Some(bin) = s3s_fs_or_skip() else { return };
    let srv = S3Server::start(&bin, tmpdir("s3-main"));
    for (k, v) in &srv.env {
        // Before any S3 client exists in this process: the client reads the environment once.
        std::env::set_var(k, v);
    }
    let d = tmpdir("s3src");
    for i in 0..4 {
        let p = d.join(format!("shard-{i:05}.tar"));
        good_shard(&p, &format!("k{i}-"), 25);
        srv.put("ci-bucket", &format!("laion/shard-{i:05}.tar"), &p);
    }
    let want = |i: usize| (0..25).map(|j| format!("k{i}-{j:05}")).collect::<Vec<_>>();

    // 1. native
    let (ok, bad) = sample_keys("s3://ci-bucket/laion/shard-00001.tar");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok, want(1));

    // 2. through the aws CLI (the model card's way)
    let venv_bin = repo_root().join(".venv/bin");
    if venv_bin.join("aws").exists() {
        let path = format!(
            "{}:{}",
            venv_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        std::env::set_var("PATH", path);
    }
    let (ok, bad) = sample_keys("pipe:aws s3 cp s3://ci-bucket/laion/shard-00002.tar -");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(ok, want(2));

    // 3. a missing key, natively and through the CLI: skipped with the reason and the URL
    let (ok, bad) = sample_keys("s3://ci-bucket/laion/nope.tar");
    assert!(ok.is_empty());
    assert_eq!(bad[0].0, SkipReason::OpenFailed);
    assert!(
        bad[0].1.contains("s3://ci-bucket/laion/nope.tar") && bad[0].1.contains("NoSuchKey"),
        "{}",
        bad[0].1
    );
    let (ok, bad) = sample_keys("pipe:aws s3 cp s3://ci-bucket/laion/nope.tar -");
    assert!(ok.is_empty());
    assert_eq!(bad[0].0, SkipReason::TruncatedTar);
    assert!(
        bad[0].1.contains("aws s3 cp") && bad[0].1.contains("404"),
        "{}",
        bad[0].1
    );

    // 4. the full loader over brace-expanded S3 URLs
    let mut cfg = LoaderConfig::new(
        ShardList::parse("s3://ci-bucket/laion/shard-{00000..00003}.tar", None).unwrap(),
        10,
    );
    cfg.num_samples = Some(100);
    cfg.workers = 2;
    let l = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    let bs: Vec<Batch> = l
        .epoch(0, None)
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap();
    let mut keys: Vec<String> = bs.iter().flat_map(|b| b.keys.clone()).collect();
    assert_eq!(keys.len(), 100);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 100);

    // 5. kill the server while a big shard is half read, restart it: the stream resumes from the
    //    byte reached (Range GET); no sample lost or duplicated
    let big = d.join("big.tar");
    let mut members = Vec::new();
    let mut filler = vec![0u8; 150_000];
    let mut x: u32 = 1;
    for i in 0..400 {
        let key = format!("big{i:05}");
        for b in filler.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        members.push((format!("{key}.jpg"), jpeg(i, 8, 8)));
        members.push((format!("{key}.txt"), key.clone().into_bytes()));
        members.push((format!("{key}.bin"), filler.clone()));
    }
    write_tar(&big, &members);
    srv.put("ci-bucket", "laion/big.tar", &big);
    let before = clip_data::s3::resume_count();
    let mut it = ShardSamples::open("s3://ci-bucket/laion/big.tar");
    let mut got = Vec::new();
    for _ in 0..40 {
        match it.next().unwrap() {
            Item::Sample(s) => got.push(s.key),
            other => panic!("{other:?}"),
        }
    }
    srv.kill_and_restart(Duration::from_millis(500));
    for item in it {
        match item {
            Item::Sample(s) => got.push(s.key),
            other => panic!("after restart: {other:?}"),
        }
    }
    let want: Vec<String> = (0..400).map(|i| format!("big{i:05}")).collect();
    assert_eq!(got, want);
    assert!(
        clip_data::s3::resume_count() > before,
        "the server restart did not break the body: no resume happened"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(&d);
}
