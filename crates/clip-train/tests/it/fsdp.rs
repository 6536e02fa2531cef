//! `--fsdp` as real multi-process runs on the CPU backend: the same training as DDP (1 × 8 =
//! 2 × 4 = 4 × 2 samples, ConvNeXt and ViT, `--accum-freq 2`, `--grad-checkpointing`), in fp32 to
//! float round-off and under `amp_bf16` to bf16 rounding; checkpoints — `full` as DDP writes
//! them (OpenCLIP loads them strictly), `sharded` one file per rank and an index — that resume on
//! any number of ranks, with or without `--fsdp`; evaluation of the sharded model; a non-finite
//! step skipped with every shard untouched, a non-finite shard never checkpointed.
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::common::{cli, logged_losses, no_drop_path_config, tempdir};
use crate::distributed::{max_relative_error, max_update_error, run_world_ok};

/// Synthetic data, 3 steps of 8 samples (with `--accum-freq 2`, 6 batches of `batch`), lr 1
/// and `--eps 1` (the update follows the gradient, see `distributed.rs`).
fn args(logs: &Path, name: &str, model: &str, batch: usize, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --epochs 1 --warmup 2 --log-every-n-steps 1 --seed 3 \
                 --local-loss --gather-with-grad --eps 1 --lr 1 --grad-clip-norm 0.05";
    let batch = batch.to_string();
    let more = [&["--batch-size", &batch, "--model", model], extra].concat();
    cli(flags, name, logs, &more)
}

fn epoch(logs: &Path, name: &str, n: usize) -> PathBuf {
    logs.join(format!("{name}/checkpoints/epoch_{n}.safetensors"))
}

/// DDP on 1 rank × 8 against `--fsdp` on 2 × 4 and 4 × 2, and hybrid on 4 × 2 (two groups of
/// 2 shards: `--fsdp-shard-size 2`), `--accum-freq 2` and `--grad-checkpointing` (each
/// micro-batch's backward gathers every unit again for the recompute and reduce-scatters its
/// gradients), both image towers: the same losses and weights within 1e-5, the same three
/// updates within 1e-3 (as DDP's own world sizes agree).
#[test]
fn fsdp_on_2_and_4_ranks_trains_like_ddp_on_1() {
    let logs = tempdir("fsdp-equiv");
    let tiny = no_drop_path_config(&logs);
    let common = [
        "--accum-freq",
        "2",
        "--grad-checkpointing",
        "--train-num-samples",
        "48",
    ];
    for model in [tiny.as_str(), "vit_tiny_test"] {
        let tag = if model == "vit_tiny_test" {
            "vit"
        } else {
            "convnext"
        };
        let run = |world: usize, name: &str, extra: &[&str]| {
            let name = format!("{tag}-{name}");
            let a = args(
                &logs,
                &name,
                model,
                8 / world,
                &[&common[..], extra].concat(),
            );
            run_world_ok(world, &|_| a.clone());
            name
        };
        let init = run(1, "init", &["--lr", "0"]);
        let ddp = run(1, "ddp1", &[]);
        let losses = logged_losses(&logs.join(&ddp));
        assert_eq!(losses.len(), 3);
        let hybrid = ["--fsdp", "--fsdp-shard-size", "2"];
        for (world, name, flags) in [
            (2, "fsdp2", &["--fsdp"][..]),
            (4, "fsdp4", &["--fsdp"]),
            (4, "hybrid4", &hybrid),
        ] {
            let fsdp = run(world, name, flags);
            for (a, b) in losses.iter().zip(&logged_losses(&logs.join(&fsdp))) {
                assert!((a - b).abs() <= 1e-5 * a, "{fsdp}: loss {b} vs DDP's {a}");
            }
            let (err, k) = max_relative_error(&epoch(&logs, &ddp, 1), &epoch(&logs, &fsdp, 1));
            assert!(err <= 1e-5, "{fsdp}: {k} relative error {err}");
            let (i, d, f) = (
                epoch(&logs, &init, 1),
                epoch(&logs, &ddp, 1),
                epoch(&logs, &fsdp, 1),
            );
            let (err, k) = max_update_error(&i, &d, &f);
            assert!(err <= 1e-3, "{fsdp}: update of {k} relative error {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// ‖Δa − Δb‖ / ‖Δa‖ over all the model's weights, Δ = weights − initial weights.
fn global_update_error(init: &Path, a: &Path, b: &Path) -> f64 {
    let (w0, wa, wb) = (weights(init), weights(a), weights(b));
    let (mut diff, mut norm) = (0.0, 0.0);
    for ((k, t0), ((_, ta), (_, tb))) in w0.iter().zip(wa.iter().zip(&wb)) {
        if k.starts_with("optimizer.") {
            continue;
        }
        let f = |t: &Tensor| t.to_kind(tch::Kind::Double);
        let (da, db) = (f(ta) - f(t0), f(tb) - f(t0));
        diff += (&da - &db)
            .square()
            .sum(tch::Kind::Double)
            .double_value(&[]);
        norm += da.square().sum(tch::Kind::Double).double_value(&[]);
    }
    (diff / norm).sqrt()
}

/// Every tensor of a checkpoint (full or sharded: `checkpoint::load` assembles those), model
/// and optimizer, by name.
fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let l = clip_train::checkpoint::load(path).unwrap();
    let mut all: Vec<(String, Tensor)> = l.model;
    all.extend(
        l.optimizer
            .into_iter()
            .map(|(k, t)| (format!("optimizer.{k}"), t)),
    );
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// `--precision amp_bf16`: FSDP gathers the parameters in bf16 and reduces the gradients in
/// fp32 (see docs/fsdp.md); autocast computes as without `--fsdp`. DDP's own 2 × 4 run differs
/// from 1 × 8 by bf16 rounding (whole-model update error ≈ 1e-4 here); FSDP's 4 × 2 run must stay
/// within one bf16 rounding (2⁻⁸) of DDP's 1 × 8 over the whole model's three updates.
#[test]
fn fsdp_under_amp_bf16_trains_like_ddp_to_bf16_rounding() {
    let logs = tempdir("fsdp-bf16");
    let common = [
        "--accum-freq",
        "2",
        "--grad-checkpointing",
        "--train-num-samples",
        "48",
        "--precision",
        "amp_bf16",
    ];
    let run = |world: usize, name: &str, extra: &[&str]| {
        let a = args(
            &logs,
            name,
            "vit_tiny_test",
            8 / world,
            &[&common[..], extra].concat(),
        );
        run_world_ok(world, &|_| a.clone());
        epoch(&logs, name, 1)
    };
    let init = run(1, "init", &["--lr", "0"]);
    let ddp = run(1, "ddp1", &[]);
    let fsdp = run(4, "fsdp4", &["--fsdp"]);
    let err = global_update_error(&init, &ddp, &fsdp);
    assert!(err <= 2f64.powi(-8), "whole-model update error {err}");
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--fsdp-checkpoint sharded` on 4 ranks: every checkpoint is an index with a folder of 4 shard
/// files (rewriting `epoch_latest` leaves only the files its new index lists); the mid-epoch
/// one resumes on 4 ranks to the very bits of the uninterrupted run, the epoch one on 2 ranks
/// with `--fsdp --fsdp-offload-cpu` and on 1 rank without `--fsdp` to the same weights within
/// 1e-5.
#[test]
fn a_sharded_checkpoint_of_4_ranks_resumes_on_4_2_and_1() {
    let logs = tempdir("fsdp-sharded");
    let tiny = no_drop_path_config(&logs);
    let run = |world: usize, name: &str, extra: &[&str]| {
        // The later --epochs overrides args' (as argparse).
        let flags = ["--train-num-samples", "24", "--epochs", "2"];
        let a = args(&logs, name, &tiny, 8 / world, &[&flags[..], extra].concat());
        run_world_ok(world, &|_| a.clone());
    };
    let sharded = ["--fsdp", "--fsdp-checkpoint", "sharded"];
    let every = ["--save-every-n-steps", "2", "--save-most-recent"];
    run(4, "full", &[&sharded[..], &every].concat());
    let ckpts = logs.join("full/checkpoints");
    for name in ["step_2", "step_4", "epoch_1", "epoch_2", "epoch_latest"] {
        let index = ckpts.join(format!("{name}.safetensors"));
        let files = clip_train::fsdp::sharded::listed_files(&index).unwrap();
        assert_eq!(files.len(), 4, "{name}: {files:?}");
        let on_disk = std::fs::read_dir(ckpts.join(format!("{name}.shards")))
            .unwrap()
            .count();
        assert_eq!(on_disk, 4, "{name}: files no index lists were left");
    }
    let resume = |n: &str| ckpts.join(format!("{n}.safetensors")).display().to_string();
    run(
        4,
        "on4",
        &[&sharded[..], &["--resume", &resume("step_2")]].concat(),
    );
    let (full, on4) = (epoch(&logs, "full", 2), epoch(&logs, "on4", 2));
    for ((ka, a), (kb, b)) in weights(&full).iter().zip(&weights(&on4)) {
        assert_eq!(ka, kb);
        assert!(a.equal(b), "{ka} differs after resuming on 4 ranks");
    }
    // On the host: the shards, the optimizer step and the scalars' copies (the same numbers).
    run(
        2,
        "on2",
        &[
            "--fsdp",
            "--fsdp-offload-cpu",
            "--resume",
            &resume("epoch_1"),
        ],
    );
    run(1, "on1", &["--resume", &resume("epoch_1")]);
    for name in ["on2", "on1"] {
        let got = weights(&epoch(&logs, name, 2));
        let want = weights(&full);
        assert_eq!(got.len(), want.len());
        for ((k, a), (_, b)) in want.iter().zip(&got) {
            let err =
                (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]).max(1e-30);
            assert!(err <= 1e-5, "{name}: {k} relative error {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--fsdp-checkpoint full` (the default) writes DDP's file: OpenCLIP builds the model from its
/// weights with a strict load, and gets exactly the tensors clip-train wrote.
#[test]
fn a_full_fsdp_checkpoint_loads_into_openclip_strictly() {
    let logs = tempdir("fsdp-full");
    let a = args(
        &logs,
        "run",
        "vit_tiny_test",
        4,
        &["--train-num-samples", "16", "--fsdp"],
    );
    run_world_ok(2, &|_| a.clone());
    let ckpt = epoch(&logs, "run", 1);
    let model = crate::common::model_weights(&ckpt, &logs.join("weights.safetensors"));
    let check = r#"
from safetensors.torch import load_file
model = open_clip.create_model("vit_tiny_test", pretrained=sys.argv[2])   # strict load
ref = load_file(sys.argv[2])
for k, v in model.state_dict().items():
    assert torch.equal(v, ref[k]), k
print(len(ref))
"#;
    // OpenCLIP's verdict on these exact weights (cached by their contents).
    let made = crate::clip_tool::openclip_golden("fsdp-full-strict", check, &[&model], &[], |d| {
        let n = crate::clip_tool::openclip(check, [&model]);
        std::fs::write(d.join("n.txt"), n).unwrap();
    });
    let Some(made) = made else {
        return;
    };
    let n = std::fs::read_to_string(made.join("n.txt")).unwrap();
    let keys = weights(&ckpt)
        .iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .count();
    assert_eq!(n.trim().parse::<usize>().unwrap(), keys);
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--fsdp-checkpoint sharded` with `--remote-sync`: each index goes up after its shards (the
/// remote never lists an index without them); with the run directory gone, `--resume latest`
/// fetches the newest index and the shards it lists, and the resumed run ends bitwise equal to
/// an uninterrupted one. 2 ranks, preempted after step 4 by a signal to one of them.
#[test]
fn a_sharded_checkpoint_resumes_from_the_remote() {
    use crate::common::{resume_latest, signal, wait_until, SIGUSR1};
    use crate::distributed::{spawn_world_with, wait_all};
    let Some(bin) = crate::s3_server::s3s_fs_or_skip() else {
        return;
    };
    let logs = tempdir("fsdp-remote");
    let srv = crate::s3_server::S3Server::start(&bin, logs.join("s3"));
    let sharded = [
        "--fsdp",
        "--fsdp-checkpoint",
        "sharded",
        "--batch-size",
        "4",
    ];
    let world = |args: Vec<String>| {
        let env = srv.env.clone();
        spawn_world_with(2, &|_| args.clone(), 120, &move |_, cmd| {
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        })
    };
    let ok = |outs: Vec<std::process::Output>, code: i32| {
        for (r, o) in outs.iter().enumerate() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(code), "rank {r}: {err}");
        }
    };
    ok(
        wait_all(world(crate::remote_sync::synced(&logs, "ref", &sharded))),
        0,
    );
    let run = crate::remote_sync::synced(&logs, "r", &sharded);
    let ranks = world(run.clone());
    let ckpts = logs.join("r/checkpoints");
    wait_until("step_4", || ckpts.join("step_4.safetensors").exists());
    signal(&ranks[0], SIGUSR1);
    ok(wait_all(ranks), 75);
    let c = crate::remote_sync::client(&srv);
    let remote = crate::remote_sync::list(&c, "runs/r/checkpoints/");
    let newest = clip_train::checkpoint::candidates(&ckpts)[0].clone();
    let listed = clip_train::fsdp::sharded::listed_files(&newest).unwrap();
    for f in &listed {
        assert!(remote.contains(f), "{f} is not on the remote: {remote:?}");
    }
    std::fs::remove_dir_all(logs.join("r")).unwrap();
    let out = wait_all(world(resume_latest(&run)));
    let err = String::from_utf8_lossy(&out[0].stderr).into_owned();
    ok(out, 0);
    let name = newest.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&format!(
            "Fetched checkpoint s3://ci-bucket/runs/r/checkpoints/{name}"
        )),
        "{err}"
    );
    let (a, b) = (
        weights(&epoch(&logs, "ref", 1)),
        weights(&epoch(&logs, "r", 1)),
    );
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs after resuming from the remote");
    }
    drop(srv);
    let _ = std::fs::remove_dir_all(&logs);
}

/// Issue 24 under `--fsdp`, 2 ranks, `--fsdp-checkpoint sharded`, no clipping (the unclipped
/// norm over every shard decides): rank 1's gradients are infinite at steps 3 and 4, and both
/// ranks skip both steps — step 4's checkpoint is step 2's bit for bit, every shard and moment,
/// AdamW counted 2 steps. Then a NaN lands in rank 1's shard alone after step 6: both ranks refuse
/// step 6's checkpoint (rank 1 naming the unit, rank 0 told another rank's weights are not
/// finite), nothing of it is written, and the run stops naming step_4.
#[test]
fn fsdp_skips_non_finite_steps_and_never_saves_a_non_finite_shard() {
    use crate::distributed::{spawn_world_with, wait_all};
    use crate::nonfinite::{files, skipped_counts};
    let logs = tempdir("fsdp-nonfinite");
    let flags = "--dataset-type synthetic --train-num-samples 48 --batch-size 4 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --warmup 2 --log-every-n-steps 1 --seed 3 \
                 --save-every-n-steps 2 --fsdp --fsdp-checkpoint sharded";
    let children = spawn_world_with(2, &|_| cli(flags, "r", &logs, &[]), 60, &|rank, cmd| {
        if rank == 1 {
            cmd.env("CLIP_TRAIN_TEST_INF_GRADS_AT_STEP", "3-4")
                .env("CLIP_TRAIN_TEST_NAN_WEIGHT_AT_STEP", "6");
        }
    });
    let outs = wait_all(children);
    let ckpts = logs.join("r/checkpoints");
    let step4 = ckpts.join("step_4.safetensors");
    // Rank 0, which wrote the indexes, names the newest; rank 1 names the unit it found.
    let why = "after step 6: the run diverged, stopping; newest finite checkpoint: ";
    let newest = format!("{why}{}", step4.display());
    for (rank, out) in outs.iter().enumerate() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "rank {rank}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("checkpoint step_6.safetensors not written: "))
            .expect(&err);
        let ok = match rank {
            0 => {
                line.contains(": another rank's weights are not finite ") && line.ends_with(&newest)
            }
            _ => line.contains("] holds a NaN or an inf ") && line.contains(why),
        };
        assert!(ok, "rank {rank}: {line}");
    }
    let log = std::fs::read_to_string(logs.join("r/out.log")).unwrap();
    assert_eq!(skipped_counts(&log), [0, 0, 1, 2, 2, 2], "{log}");
    let names = [
        "step_2.safetensors",
        "step_2.shards",
        "step_4.safetensors",
        "step_4.shards",
    ];
    assert_eq!(files(&ckpts), names);
    let state = clip_train::checkpoint::peek_state(&step4).unwrap();
    assert_eq!((state.step, state.optimizer_step), (4, Some(2)));
    let (at2, at4) = (weights(&ckpts.join("step_2.safetensors")), weights(&step4));
    assert_eq!(at2.len(), at4.len());
    for ((ka, a), (kb, b)) in at2.iter().zip(&at4) {
        assert_eq!(ka, kb);
        assert!(a.equal(b), "{ka} changed in a skipped step");
    }
    let _ = std::fs::remove_dir_all(&logs);
}
