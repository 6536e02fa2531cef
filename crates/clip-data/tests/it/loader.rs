//! Loader on real tar files: corrupt inputs, no-progress errors, determinism, resume.

use crate::common::*;
use clip_data::buffers::{BatchBuffer, BufferRing, VecBuffer};
use clip_data::loader::{epoch_plan, Batch, Loader, LoaderConfig, Position, Processor};
use clip_data::order::{fetch_members, Member};
use clip_data::samples::{Item, RawSample, ShardSamples, SkipReason};
use clip_data::shards::ShardList;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn keys(bs: &[Batch]) -> Vec<String> {
    bs.iter()
        .flat_map(|b| {
            b.keys
                .iter()
                .map(|k| k.rsplit('/').next().unwrap().to_string())
        })
        .collect()
}

fn dataset(name: &str, shards: usize, per: usize) -> (std::path::PathBuf, String) {
    let d = tmpdir(name);
    for s in 0..shards {
        good_shard(&d.join(format!("shard-{s:03}.tar")), &format!("s{s}-"), per);
    }
    let spec = format!("{}/shard-{{000..{:03}}}.tar", d.display(), shards - 1);
    (d, spec)
}

#[test]
fn corrupt_inputs_are_skipped_and_counted() {
    let d = tmpdir("corrupt");
    good_shard(&d.join("good.tar"), "g", 5);
    // truncated: a good shard cut in the middle of a member
    good_shard(&d.join("full.tar"), "t", 6);
    let full = std::fs::read(d.join("full.tar")).unwrap();
    std::fs::write(d.join("trunc.tar"), &full[..full.len() / 2 + 100]).unwrap();
    // bad jpeg, missing caption, missing image, one fine sample
    write_tar(
        &d.join("mixed.tar"),
        &[
            (
                "badjpeg.jpg".into(),
                b"\xff\xd8\xff\xe0 this is not a jpeg".to_vec(),
            ),
            ("badjpeg.txt".into(), b"bad".to_vec()),
            ("nocap.jpg".into(), jpeg(1, 8, 8)),
            ("noimg.txt".into(), b"no image".to_vec()),
            ("ok.JPG".into(), jpeg(2, 8, 8)),
            ("ok.txt".into(), b"fine".to_vec()),
        ],
    );
    let spec = format!(
        "{0}/good.tar::{0}/trunc.tar::{0}/mixed.tar::{0}/missing.tar::pipe:echo partial; echo 'simulated failure' >&2; exit 7",
        d.display()
    );
    let mut cfg = LoaderConfig::new(ShardList::parse(&spec, None).unwrap(), 4);
    cfg.train = false;
    cfg.workers = 2;
    cfg.streams = Some(1);
    let loader = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    let batches: Vec<Batch> = loader
        .epoch(0, None)
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap();
    let ks = keys(&batches);
    // truncated shard: the samples before the cut survive, the broken one is dropped
    let t_ok = ks.iter().filter(|k| k.starts_with("trunc.tar#t")).count();
    assert!((1..6).contains(&t_ok), "{ks:?}");
    let expect_good: Vec<String> = (0..5).map(|i| format!("good.tar#g{i:05}")).collect();
    assert_eq!(ks[..5], expect_good[..]);
    assert!(ks.contains(&"mixed.tar#ok".to_string()));
    assert_eq!(ks.len(), 5 + t_ok + 1);
    // eval keeps the partial last batch
    assert_eq!(
        batches.iter().map(|b| b.batch_size).sum::<usize>(),
        ks.len()
    );
    let st = loader.stats();
    assert_eq!(st.samples as usize, ks.len());
    assert_eq!(st.skipped.get(&SkipReason::DecodeError), Some(&1), "{st:?}");
    assert_eq!(
        st.skipped.get(&SkipReason::MissingCaption),
        Some(&1),
        "{st:?}"
    );
    assert_eq!(
        st.skipped.get(&SkipReason::MissingImage),
        Some(&1),
        "{st:?}"
    );
    assert_eq!(st.skipped.get(&SkipReason::OpenFailed), Some(&1), "{st:?}");
    // truncated tar + failing pipe ("partial\n" is not a tar, then exit 7)
    assert_eq!(
        st.skipped.get(&SkipReason::TruncatedTar),
        Some(&2),
        "{st:?}"
    );
    let rep = loader.shard_reports();
    let pipe = rep.iter().find(|(k, _)| k.starts_with("pipe:")).unwrap().1;
    let err = pipe.last_error.clone().unwrap();
    assert!(
        err.contains("simulated failure") || err.contains("tar"),
        "{err}"
    );
    let miss = rep
        .iter()
        .find(|(k, _)| k.ends_with("missing.tar"))
        .unwrap()
        .1;
    assert!(miss.last_error.as_ref().unwrap().contains("missing.tar"));
}

#[test]
fn failing_pipe_command_error_has_stderr() {
    // a pipe that writes a valid tar and then fails: the failure surfaces after the data
    let d = tmpdir("pipefail");
    good_shard(&d.join("a.tar"), "a", 3);
    let url = format!(
        "pipe:cat {}; echo 'access denied for key' >&2; exit 2",
        d.join("a.tar").display()
    );
    let items: Vec<Item> = ShardSamples::open(&url).collect();
    let n_ok = items
        .iter()
        .filter(|i| matches!(i, Item::Sample(_)))
        .count();
    assert_eq!(n_ok, 3);
    let last = items.last().unwrap();
    match last {
        Item::Skip {
            reason: SkipReason::TruncatedTar,
            detail,
            ..
        } => {
            assert!(
                detail.contains("access denied for key") && detail.contains("cat "),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nothing_usable_is_an_error_naming_shards() {
    let d = tmpdir("nothing");
    write_tar(
        &d.join("nocaps.tar"),
        &[
            ("a.jpg".into(), jpeg(0, 4, 4)),
            ("b.jpg".into(), jpeg(1, 4, 4)),
        ],
    );
    let spec = format!("{0}/nocaps.tar::{0}/gone.tar", d.display());
    let mut cfg = LoaderConfig::new(ShardList::parse(&spec, None).unwrap(), 2);
    cfg.resampled = true;
    cfg.num_samples = Some(100);
    cfg.workers = 1;
    cfg.no_progress_timeout = Duration::from_secs(20);
    let loader = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    let t = Instant::now();
    let r: anyhow::Result<Vec<Batch>> = loader.epoch(0, None).unwrap().collect();
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("nocaps.tar") && e.contains("missing_caption"),
        "{e}"
    );
    assert!(e.contains("gone.tar") && e.contains("open_failed"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn stalled_source_times_out() {
    let marker = format!("clip-stall-{}", std::process::id());
    let spec = format!("pipe:sleep 300; echo {marker}");
    let mut cfg = LoaderConfig::new(ShardList::parse(&spec, None).unwrap(), 2);
    cfg.train = false;
    cfg.workers = 1;
    cfg.no_progress_timeout = Duration::from_secs(1);
    let loader = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    let t = Instant::now();
    let e = loader
        .epoch(0, None)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no valid sample"), "{e}");
    // The 1 s timeout, ten times over (the command itself would sleep 300 s).
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // dropping the epoch killed the hung command (its reader then reaps it)
    std::thread::sleep(Duration::from_millis(500));
    let alive = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&marker))
        .count();
    assert_eq!(alive, 0, "the hung pipe command is still running");
}

fn train_cfg(spec: &str, workers: usize, streams: usize) -> LoaderConfig {
    let mut cfg = LoaderConfig::new(ShardList::parse(spec, None).unwrap(), 8);
    cfg.seed = 42;
    cfg.workers = workers;
    cfg.streams = Some(streams);
    cfg.num_samples = Some(200);
    cfg.sample_shuffle = (50, 10); // small buffers so that the shuffle is visible in 400 samples
    cfg.shard_shuffle = (5, 2);
    cfg
}

fn run(cfg: LoaderConfig, epoch: u64) -> Vec<Batch> {
    let l = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    l.epoch(epoch, None)
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap()
}

#[test]
fn deterministic_for_any_worker_count() {
    let (_d, spec) = dataset("det", 8, 50);
    let a = run(train_cfg(&spec, 1, 2), 0);
    let b = run(train_cfg(&spec, 3, 2), 0);
    let c = run(train_cfg(&spec, 2, 2), 0);
    // OpenCLIP arithmetic: 200 / 8 = 25 batches -> 26 (multiple of 2 streams)
    assert_eq!(a.len(), 26);
    assert!(a.iter().all(|x| x.batch_size == 8));
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(keys(&a), keys(&c));
    // augmentation RNG is per sample, not per thread
    assert_eq!(
        a.iter().map(|x| x.images().to_vec()).collect::<Vec<_>>(),
        b.iter().map(|x| x.images().to_vec()).collect::<Vec<_>>()
    );
    // round-robin over streams in a fixed order
    assert!(a.iter().enumerate().all(|(i, x)| x.stream == i % 2));
    // shuffled, and differently per epoch and seed
    let mut sorted = keys(&a);
    sorted.sort();
    assert_ne!(sorted, keys(&a));
    assert_ne!(keys(&a), keys(&run(train_cfg(&spec, 2, 2), 1)));
    let mut other = train_cfg(&spec, 2, 2);
    other.seed = 43;
    assert_ne!(keys(&a), keys(&run(other, 0)));
    // no duplicates within an epoch in plain mode
    let mut k = keys(&a);
    k.sort();
    k.dedup();
    assert_eq!(k.len(), 26 * 8);
}

#[test]
fn saved_position_restores_exactly() {
    let (_d, spec) = dataset("resume", 6, 40);
    for resampled in [false, true] {
        let mut cfg = train_cfg(&spec, 2, 3);
        cfg.resampled = resampled;
        let full = run(cfg.clone(), 1);
        for cut in [0usize, 1, 5, 13] {
            let l = Loader::new(cfg.clone(), Arc::new(TestProc)).unwrap();
            let mut it = l.epoch(1, None).unwrap();
            for _ in 0..cut {
                it.next().unwrap().unwrap();
            }
            let json = it.position().to_json();
            drop(it);
            let pos = Position::from_json(&json).unwrap();
            let mut cfg2 = cfg.clone();
            cfg2.workers = 1; // decode threads do not matter
            let l2 = Loader::new(cfg2, Arc::new(TestProc)).unwrap();
            let rest: Vec<Batch> = epoch_1_from(&l2, &pos);
            assert_eq!(
                keys(&rest),
                keys(&full[cut..]),
                "resampled={resampled} cut={cut}"
            );
            assert_eq!(
                rest.iter().map(|b| b.images()).collect::<Vec<_>>(),
                full[cut..].iter().map(|b| b.images()).collect::<Vec<_>>()
            );
        }
        // a position does not restore under another data order
        let l = Loader::new(cfg.clone(), Arc::new(TestProc)).unwrap();
        let pos = l.epoch(1, None).unwrap().position().clone();
        let mut cfg3 = cfg.clone();
        cfg3.seed = 1;
        assert!(Loader::new(cfg3, Arc::new(TestProc))
            .unwrap()
            .epoch(1, Some(&pos))
            .is_err());
        assert!(l.epoch(2, Some(&pos)).is_err());
    }
}

/// The trainer's use: batches are taken a step ahead, assembled into a fixed ring of buffers it
/// gives back when done; a batch taken but not yet confirmed stays out of the position.
#[test]
fn batches_taken_ahead_stay_out_of_the_position_until_confirmed() {
    let (_d, spec) = dataset("held", 6, 40);
    let cfg = train_cfg(&spec, 2, 3);
    let full = run(cfg.clone(), 1);
    let l = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    let after = |n: usize| {
        let mut it = l.epoch(1, None).unwrap();
        for _ in 0..n {
            it.next().unwrap().unwrap();
        }
        it.position()
    };
    let ring = || {
        let n = 8 * 3 * TestProc.image_size() * TestProc.image_size();
        let bufs = (0..3)
            .map(|_| {
                Box::new(VecBuffer {
                    images: vec![0.0; n],
                    tokens: vec![0; 8 * 77],
                }) as Box<dyn BatchBuffer>
            })
            .collect();
        BufferRing::fixed(bufs)
    };
    for cut in [0usize, 4, 11] {
        let mut it = l.epoch_with(1, None, Some(ring())).unwrap();
        for want in &full[..cut] {
            let b = it.next().unwrap().unwrap(); // confirmed, its buffer back in the ring
            assert_eq!(b.images(), want.images());
        }
        let a = it.next_held().unwrap().unwrap();
        let b = it.next_held().unwrap().unwrap();
        assert_eq!(keys(&[a, b]), keys(&full[cut..cut + 2]));
        assert_eq!(it.position(), after(cut), "cut {cut}");
        it.confirm(1);
        assert_eq!(it.position(), after(cut + 1), "cut {cut}");
        it.confirm(1);
        assert_eq!(it.position(), after(cut + 2), "cut {cut}");
    }
    // the epoch's end moves the position only once every batch before it is confirmed
    let mut it = l.epoch_with(1, None, Some(ring())).unwrap();
    let mut n = 0;
    while let Some(b) = it.next_held() {
        assert_eq!(b.unwrap().images(), full[n].images());
        n += 1;
    }
    assert_eq!(n, full.len());
    it.confirm(n - 1);
    assert_eq!(it.position(), after(n - 1));
    it.confirm(1);
    let mut past_end = l.epoch(1, None).unwrap();
    while past_end.next().is_some() {}
    assert_eq!(it.position(), past_end.position());
}

#[test]
fn plain_mode_needs_enough_shards() {
    let (_d, spec) = dataset("few", 3, 5);
    let mut cfg = train_cfg(&spec, 2, 2);
    cfg.world = 2;
    let e = Loader::new(cfg, Arc::new(TestProc))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("must be >="), "{e}");
}

#[test]
fn upsampling_weights_sources() {
    let d = tmpdir("ups");
    good_shard(&d.join("a.tar"), "a", 20);
    good_shard(&d.join("b.tar"), "b", 20);
    let spec = format!("{0}/a.tar::{0}/b.tar", d.display());
    let mut cfg = LoaderConfig::new(ShardList::parse(&spec, Some("1::4")).unwrap(), 10);
    cfg.resampled = true;
    cfg.num_samples = Some(2000);
    cfg.workers = 2;
    cfg.sample_shuffle = (50, 10);
    let bs = run(cfg, 0);
    let k = keys(&bs);
    assert_eq!(k.len(), 2000);
    let frac_b = k.iter().filter(|x| x.starts_with("b.tar")).count() as f64 / k.len() as f64;
    assert!((frac_b - 0.8).abs() < 0.1, "{frac_b}");
    // without --dataset-resampled, factors are an error
    let mut cfg = LoaderConfig::new(ShardList::parse(&spec, Some("1::4")).unwrap(), 10);
    cfg.num_samples = Some(20);
    assert!(Loader::new(cfg, Arc::new(TestProc)).is_err());
}

#[test]
fn epoch_arithmetic_matches_openclip() {
    // the reference run: 203,666,042 samples, 256 per GPU, 512 GPUs
    let (_, batches, samples) = epoch_plan(203_666_042, 256, 512, 1);
    assert_eq!(batches, 1554);
    assert_eq!(samples, 1554 * 131_072);
    let (per, batches, _) = epoch_plan(203_666_042, 256, 512, 4);
    assert_eq!((per, batches), (389, 1556));
    assert_eq!(epoch_plan(100, 10, 1, 3), (4, 12, 120));
}

#[test]
fn a_sample_reads_back_from_its_byte_range() {
    let (d, _) = dataset("ranges", 1, 30);
    let url = d.join("shard-000.tar").display().to_string();
    let all: Vec<RawSample> = ShardSamples::open(&url)
        .filter_map(|i| match i {
            Item::Sample(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 30);
    for s in &all {
        let back: Vec<Item> =
            ShardSamples::open_range(&url, s.offset, Some(s.offset + s.len)).collect();
        assert_eq!(back.len(), 1, "{} at {}+{}", s.key, s.offset, s.len);
        let Item::Sample(b) = &back[0] else {
            panic!("{:?}", back[0])
        };
        assert_eq!(
            (&b.key, &b.caption, &b.image),
            (&s.key, &s.caption, &s.image)
        );
        assert_eq!((b.offset, b.len), (s.offset, s.len));
    }
    // a shuffled selection, adjacent ones coalesced, comes back in the asked order
    let pick: Vec<Member> = [7usize, 3, 4, 5, 29, 0]
        .iter()
        .map(|&i| Member {
            shard: all[i].shard.clone(),
            offset: all[i].offset,
            len: all[i].len,
        })
        .collect();
    let back = fetch_members(&pick).unwrap();
    let got: Vec<&str> = back.iter().map(|s| s.key.as_str()).collect();
    let want: Vec<&str> = [7usize, 3, 4, 5, 29, 0]
        .iter()
        .map(|&i| all[i].key.as_str())
        .collect();
    assert_eq!(got, want);
}

/// The rest of epoch 1 from `pos`, with `cfg`.
fn rest_from(cfg: &LoaderConfig, pos: &Position) -> Vec<Batch> {
    epoch_1_from(&Loader::new(cfg.clone(), Arc::new(TestProc)).unwrap(), pos)
}

/// The rest of epoch 1 from `pos`, with loader `l`.
fn epoch_1_from(l: &Loader, pos: &Position) -> Vec<Batch> {
    l.epoch(1, Some(pos))
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap()
}

#[test]
fn version_1_positions_still_resume_and_continue_as_version_2() {
    let (_d, spec) = dataset("v1", 6, 40);
    let cfg = train_cfg(&spec, 2, 3);
    let full = run(cfg.clone(), 1);
    let l = Loader::new(cfg.clone(), Arc::new(TestProc)).unwrap();
    let mut it = l.epoch(1, None).unwrap();
    for _ in 0..5 {
        it.next().unwrap().unwrap();
    }
    // what a checkpoint of an older clip-train holds: sample counts, no reading state
    let mut v1 = it.position();
    drop(it);
    assert_eq!(v1.version, 2);
    assert!(v1.streams.iter().all(|s| s.read.is_some()));
    v1.version = 1;
    v1.streams.iter_mut().for_each(|s| s.read = None);
    let v1 = Position::from_json(&v1.to_json()).unwrap();
    assert_eq!(keys(&rest_from(&cfg, &v1)), keys(&full[5..]));
    // resumed from it, the loader's next positions are version 2 and exact again
    let l = Loader::new(cfg.clone(), Arc::new(TestProc)).unwrap();
    let mut it = l.epoch(1, Some(&v1)).unwrap();
    for _ in 0..4 {
        it.next().unwrap().unwrap();
    }
    let v2 = Position::from_json(&it.position().to_json()).unwrap();
    drop(it);
    assert!(v2.version == 2 && v2.streams.iter().all(|s| s.read.is_some()));
    assert_eq!(keys(&rest_from(&cfg, &v2)), keys(&full[9..]));
}

#[test]
fn a_pipe_resume_opens_no_finished_shard() {
    let (d, _) = dataset("pipe-resume", 8, 20);
    let log = d.join("opened.log");
    let spec = (0..8)
        .map(|s| {
            let tar = d.join(format!("shard-{s:03}.tar"));
            format!("pipe:echo {s} >> {}; cat {}", log.display(), tar.display())
        })
        .collect::<Vec<_>>()
        .join("::");
    let mut cfg = train_cfg(&spec, 2, 2);
    cfg.num_samples = Some(160);
    cfg.sample_shuffle = (20, 5);
    let full = run(cfg.clone(), 1);
    assert_eq!(full.len(), 20);
    let cut = 14;
    let l = Loader::new(cfg.clone(), Arc::new(TestProc)).unwrap();
    let mut it = l.epoch(1, None).unwrap();
    for _ in 0..cut {
        it.next().unwrap().unwrap();
    }
    let pos = Position::from_json(&it.position().to_json()).unwrap();
    drop(it);
    std::fs::remove_file(&log).unwrap();
    assert_eq!(keys(&rest_from(&cfg, &pos)), keys(&full[cut..]));
    let opened: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| format!("shard-{:03}.tar", l.trim().parse::<usize>().unwrap()))
        .collect();
    // finished at the cut: shards a stream took before the one it reads now, none of whose
    // samples still wait in its shuffle buffer
    let order = clip_data::order::OrderCfg {
        urls: Arc::new(cfg.shards.urls()),
        weights: Arc::new(cfg.shards.weights()),
        resampled: false,
        train: true,
        seed: cfg.seed,
        rank: 0,
        world: 1,
        streams: 2,
        shard_shuffle: cfg.shard_shuffle,
        sample_shuffle: cfg.sample_shuffle,
        pieces: None,
    };
    let mut finished = Vec::new();
    for (s, sp) in pos.streams.iter().enumerate() {
        let c = sp.read.as_ref().expect("a version-2 position");
        let needed: Vec<&str> = c
            .waiting
            .iter()
            .map(|m| &*m.shard)
            .chain(c.read.current.iter().map(|(u, _, _)| &**u))
            .collect();
        finished.extend(
            order
                .shard_sequence(s, 1)
                .take(c.read.shards_taken as usize)
                .filter(|u| !needed.contains(&u.as_str()))
                .map(|u| {
                    u.rsplit(' ')
                        .next()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_string()
                }),
        );
    }
    assert!(
        !finished.is_empty(),
        "the cut must come after a finished shard"
    );
    for f in &finished {
        assert!(
            !opened.contains(f),
            "{f} was finished at the cut but reopened: {opened:?}"
        );
    }
}

/// An eval pass split into shares by stream (`eval_share`, evaluation on every rank): at world 1
/// to 5 the shares' batches, put back in round-robin order (a stream's k-th batch in
/// round k), are the whole pass's batches in its order, partial ones included; a share without
/// a shard (5 streams, 4 shards: stream 4 reads nothing, rank 4 of 5 has only it) is `None`.
#[test]
fn eval_shares_are_the_whole_pass() {
    let (_d, spec) = dataset("evalshare", 4, 7);
    let mut cfg = LoaderConfig::new(ShardList::parse(&spec, None).unwrap(), 3);
    cfg.train = false;
    cfg.workers = 2;
    cfg.streams = Some(5);
    let loader = Loader::new(cfg, Arc::new(TestProc)).unwrap();
    let whole: Vec<Batch> = loader.epoch(0, None).unwrap().map(Result::unwrap).collect();
    assert_eq!(whole.iter().map(|b| b.batch_size).sum::<usize>(), 28);
    let tagged = |bs: &[Batch]| -> Vec<(usize, usize, Vec<String>)> {
        let mut seen = [0usize; 5];
        bs.iter()
            .map(|b| {
                seen[b.stream] += 1;
                (seen[b.stream] - 1, b.stream, b.keys.clone())
            })
            .collect()
    };
    let want = tagged(&whole);
    for world in 1..=5 {
        let mut got = Vec::new();
        for rank in 0..world {
            match loader.eval_share(rank, world).unwrap() {
                Some(it) => {
                    let mine: Vec<Batch> = it.map(Result::unwrap).collect();
                    assert!(mine.iter().all(|b| b.stream % world == rank));
                    got.extend(tagged(&mine));
                }
                None => assert_eq!((rank, world), (4, 5), "only stream 4's share is empty"),
            }
        }
        got.sort();
        assert_eq!(got, want, "world {world}");
    }
}

/// (keys of the first `cut` batches of every rank, their positions after them) of epoch 1 on
/// `world` ranks.
fn cut_world(cfg: &LoaderConfig, world: usize, cut: usize) -> (Vec<String>, Vec<Position>) {
    let (mut trained, mut positions) = (Vec::new(), Vec::new());
    for rank in 0..world {
        let mut c = cfg.clone();
        (c.rank, c.world) = (rank, world);
        let l = Loader::new(c, Arc::new(TestProc)).unwrap();
        let mut it = l.epoch(1, None).unwrap();
        for _ in 0..cut {
            trained.extend(keys(&[it.next().unwrap().unwrap()]));
        }
        positions.push(Position::from_json(&it.position().to_json()).unwrap());
    }
    (trained, positions)
}

/// Rank `rank` of `world` × `streams` splitting `saved`: its loader and split position.
fn split_on(
    cfg: &LoaderConfig,
    saved: &[Position],
    (rank, world, streams): (usize, usize, usize),
) -> (Loader, clip_data::rebalance::Split) {
    let mut c = cfg.clone();
    (c.rank, c.world, c.streams) = (rank, world, Some(streams));
    let l = Loader::new(c, Arc::new(TestProc)).unwrap();
    let split = clip_data::rebalance::split_epoch(&l, saved, 1).unwrap();
    (l, split)
}

fn sorted(mut k: Vec<String>) -> Vec<String> {
    k.sort();
    k
}

/// Issue 12: an epoch interrupted on one world size and finished on another trains every sample
/// of the epoch once — the split position itself resumes exactly and splits again.
#[test]
fn an_epoch_split_over_another_world_size_trains_every_sample_once() {
    let (d, spec) = dataset("split", 8, 32);
    let mut cfg = train_cfg(&spec, 2, 2);
    cfg.num_samples = Some(256); // 8 batches per stream: every sample in the epoch
    let all: Vec<String> = (0..8)
        .flat_map(|s| (0..32).map(move |i| format!("shard-{s:03}.tar#s{s}-{i:05}")))
        .collect();
    let whole = run(
        LoaderConfig {
            world: 2,
            ..cfg.clone()
        },
        1,
    );
    assert_eq!(whole.len(), 16, "8 batches per stream, 2 streams");
    for sizes_json in [false, true] {
        if sizes_json {
            let sizes: serde_json::Map<String, serde_json::Value> = (0..8)
                .map(|s| (format!("shard-{s:03}.tar"), 32.into()))
                .collect();
            std::fs::write(d.join("sizes.json"), serde_json::to_string(&sizes).unwrap()).unwrap();
        }
        // 2 ranks × 2 streams, cut after 2 and after 4 batches per rank, onto 4 × 1 and 1 × 3
        for (cut, world, streams, per_stream) in [(2, 4, 1, 7), (4, 1, 3, 8)] {
            let (mut trained, saved) = cut_world(&cfg, 2, cut);
            let summary = split_on(&cfg, &saved, (0, world, streams)).1.summary;
            assert!(
                summary.contains(&format!(
                    "{per_stream} batches of 8 each, 0 samples left out"
                )),
                "{summary}"
            );
            assert!(summary.contains(if sizes_json {
                "from sizes.json"
            } else {
                "estimated at 32"
            }));
            if cut == 2 {
                // the split pieces include shards begun and not begun, cut by sample count
                assert!(summary.contains("4 shards begun, 4 not begun"), "{summary}");
            }
            for rank in 0..world {
                let (l, split) = split_on(&cfg, &saved, (rank, world, streams));
                let json = split.position.to_json();
                let rest: Vec<Batch> = epoch_1_from(&l, &Position::from_json(&json).unwrap());
                assert_eq!(rest.len() as u64, split.batches, "{summary}");
                trained.extend(keys(&rest));
            }
            assert_eq!(sorted(trained), all, "cut {cut} onto {world}×{streams}");
        }
    }
    // split onto 4 × 1, each rank trains 3 of its 7 batches, the rest goes on 1 × 2; rank 1's
    // split position resumed after 2 batches continues its batches exactly
    let (mut trained, saved) = cut_world(&cfg, 2, 2);
    let mut again = Vec::new();
    for rank in 0..4 {
        let (l, split) = split_on(&cfg, &saved, (rank, 4, 1));
        let full: Vec<Batch> = epoch_1_from(&l, &split.position);
        let mut it = l.epoch(1, Some(&split.position)).unwrap();
        for _ in 0..3 {
            trained.extend(keys(&[it.next().unwrap().unwrap()]));
        }
        let pos = Position::from_json(&it.position().to_json()).unwrap();
        drop(it);
        let rest: Vec<Batch> = epoch_1_from(&l, &pos);
        assert_eq!(
            keys(&rest),
            keys(&full[3..]),
            "rank {rank} resumes its split epoch"
        );
        again.push(pos);
    }
    for stream_rank in 0..1 {
        let (l, split) = split_on(&cfg, &again, (stream_rank, 1, 2));
        assert!(
            split.summary.contains("8 batches of 8 each"),
            "{}",
            split.summary
        );
        let rest: Vec<Batch> = epoch_1_from(&l, &split.position);
        trained.extend(keys(&rest));
    }
    assert_eq!(sorted(trained), all, "split twice");
}

/// A resampled epoch resumed on another world size draws afresh from the given seed: the
/// batches asked for, in another order than the interrupted run's.
#[test]
fn a_resampled_epoch_restarts_from_a_new_seed_on_another_world_size() {
    let (_d, spec) = dataset("split-resampled", 4, 40);
    let mut cfg = train_cfg(&spec, 2, 2);
    cfg.resampled = true;
    let (_, saved) = cut_world(&cfg, 2, 3);
    let mut c = cfg.clone();
    c.world = 3;
    let l = Loader::new(c, Arc::new(TestProc)).unwrap();
    let pos = clip_data::rebalance::resampled_restart(&l, &saved, 99, 5).unwrap();
    let pos = Position::from_json(&pos.to_json()).unwrap();
    let a: Vec<Batch> = epoch_1_from(&l, &pos);
    assert_eq!(a.len(), 6, "5 batches over 2 streams: 3 each");
    let other = clip_data::rebalance::resampled_restart(&l, &saved, 98, 5).unwrap();
    let b: Vec<Batch> = epoch_1_from(&l, &other);
    assert_ne!(keys(&a), keys(&b), "the seed decides the draw");
    // a plain split refuses resampled positions, and positions of another order are refused
    assert!(clip_data::rebalance::split_epoch(&l, &saved, 1).is_err());
    let mut c = cfg.clone();
    (c.world, c.seed) = (3, 7);
    let l = Loader::new(c, Arc::new(TestProc)).unwrap();
    let e = clip_data::rebalance::resampled_restart(&l, &saved, 99, 5).unwrap_err();
    assert!(
        e.to_string().contains("does not match this data order"),
        "{e}"
    );
}
