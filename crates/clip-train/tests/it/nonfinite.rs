//! Nothing non-finite gets in or out (issue 24), end to end on the tiny model: a step whose
//! gradients are not finite is skipped (weights and moments untouched, the optimizer's count behind
//! the run's, the log line's `Skipped steps:`; with other `--opt`s too) and training goes on; a state holding a NaN is never
//! checkpointed — nothing written, nothing deleted, nothing synced, the error naming the newest
//! finite checkpoint; `--resume latest` skips a NaN checkpoint, local or remote; and
//! `CLIP_TRAIN_MAX_SKIPPED` (8) skipped steps in a row stop every rank naming the newest finite
//! checkpoint. The test hooks: `CLIP_TRAIN_TEST_INF_GRADS_AT_STEP` (the loss back-propagated times
//! inf: a finite loss, non-finite gradients) and `CLIP_TRAIN_TEST_NAN_WEIGHT_AT_STEP` (a NaN
//! weight after a step's update, as an overflowing update would leave).
use crate::common::{assert_bitwise_equal, cli, resume_latest, tempdir, weights};
use crate::distributed::{spawn_world_with, wait_all};
use crate::s3_server::{s3s_fs_or_skip, S3Server};
use clip_train::checkpoint::{self, Snapshot};
use std::path::Path;
use std::process::{Command, Output};

/// Every tensor of a checkpoint file is finite (weights and optimizer moments).
fn assert_finite(path: &Path) {
    for (k, t) in weights(path) {
        let bad = t
            .isfinite()
            .logical_not()
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        assert_eq!(bad, 0, "{k} of {} is not finite", path.display());
    }
}

/// The checkpoint file names in `dir`, sorted (temp files included: there must be none).
pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `Skipped steps: N` of every `Train Epoch:` line of a log, in order.
pub(crate) fn skipped_counts(log: &str) -> Vec<i64> {
    log.lines()
        .filter(|l| l.contains("Train Epoch:"))
        .map(|l| {
            let n = l.split("Skipped steps: ").nth(1).expect(l);
            n.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect()
}

fn clip_train(args: &[String], env: &[(String, String)], hooks: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clip-train"));
    cmd.args(args).env("CLIP_S3_MAX_ATTEMPTS", "2");
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.envs(hooks.iter().copied());
    cmd.output().unwrap()
}

/// Rewrites the checkpoint at `path` with a NaN in its first model weight, its checksum valid:
/// a file no verification tells from a good one, only its values.
fn plant_nan(path: &Path) {
    let loaded = checkpoint::load(path).unwrap();
    let _ = loaded.model[0].1.view([-1]).get(0).fill_(f64::NAN);
    Snapshot::take(&loaded.model, &loaded.optimizer, &loaded.state)
        .unwrap()
        .write(path)
        .unwrap();
}

/// One run of 9 steps (3 epochs of 3), a checkpoint every 2 steps and every epoch (the previous
/// epoch's deleted), `epoch_latest`, synced to S3: steps 3 and 4 have infinite gradients and are
/// skipped, and step 9's update leaves a NaN weight. Then the same run resumed from its newest
/// checkpoint, planted with a NaN by hand locally and on the remote.
#[test]
fn non_finite_steps_are_skipped_and_non_finite_states_never_saved_nor_resumed() {
    let Some(bin) = s3s_fs_or_skip() else { return };
    let logs = tempdir("nonfinite");
    let srv = S3Server::start(&bin, logs.join("s3"));
    let flags = "--dataset-type synthetic --train-num-samples 24 --batch-size 8 --epochs 3 \
                 --model clip_tiny_test --lr 1e-3 --warmup 2 --log-every-n-steps 1 --seed 3 \
                 --save-every-n-steps 2 --delete-previous-checkpoint --save-most-recent \
                 --remote-sync s3://ci-bucket/runs --remote-sync-frequency 1";
    let args = cli(flags, "r", &logs, &[]);
    let hooks = [
        ("CLIP_TRAIN_TEST_INF_GRADS_AT_STEP", "3-4"),
        ("CLIP_TRAIN_TEST_NAN_WEIGHT_AT_STEP", "9"),
    ];
    let out = clip_train(&args, &srv.env, &hooks);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let ckpts = logs.join("r/checkpoints");
    let ckpt = |name: &str| ckpts.join(format!("{name}.safetensors"));

    // Steps 3 and 4 were skipped: step 4's checkpoint (and epoch 1's, after step 3) is step 2's
    // bit for bit, moments included, and AdamW counted 2 steps of 4; training went on after.
    assert_bitwise_equal(&ckpt("step_2"), &ckpt("step_4"));
    let state = checkpoint::peek_state(&ckpt("step_4")).unwrap();
    assert_eq!((state.step, state.optimizer_step), (4, Some(2)));
    let (w4, w6) = (weights(&ckpt("step_4")), weights(&ckpt("step_6")));
    assert!(w4.iter().zip(&w6).any(|(a, b)| !a.1.equal(&b.1)));
    let log = std::fs::read_to_string(logs.join("r/out.log")).unwrap();
    assert_eq!(skipped_counts(&log), [0, 0, 1, 2, 2, 2, 2, 2, 2], "{log}");

    // Step 9's NaN weight: epoch_3 is refused — not written, epoch_2 not deleted, epoch_latest
    // still epoch 2's — and the run stops naming step_8, the newest finite checkpoint.
    let refused = err
        .lines()
        .find(|l| l.contains("checkpoint epoch_3.safetensors not written: "))
        .expect(&err);
    let why = format!(
        " holds a NaN or an inf after step 9: the run diverged, stopping; newest finite checkpoint: {}",
        ckpt("step_8").display()
    );
    assert!(refused.ends_with(&why), "{refused}");
    assert!(log.contains(&why), "{log}");
    let want = [
        "epoch_2",
        "epoch_latest",
        "step_2",
        "step_4",
        "step_6",
        "step_8",
    ];
    let want: Vec<String> = want.iter().map(|n| format!("{n}.safetensors")).collect();
    assert_eq!(files(&ckpts), want);
    assert_eq!(
        checkpoint::peek_state(&ckpt("epoch_latest")).unwrap().step,
        6
    );
    // The remote holds every local checkpoint as it is on disk, no epoch_3, nothing non-finite.
    let remote = srv.data.join("ci-bucket/runs/r/checkpoints");
    let on_remote = files(&remote);
    for name in &want {
        assert!(on_remote.contains(name), "{on_remote:?}");
        assert_eq!(
            std::fs::read(remote.join(name)).unwrap(),
            std::fs::read(ckpts.join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(
        !on_remote.iter().any(|n| n.starts_with("epoch_3")),
        "{on_remote:?}"
    );
    for name in on_remote.iter().chain(&want) {
        let path = [&remote, &ckpts].map(|d| d.join(name));
        path.iter()
            .filter(|p| p.exists())
            .for_each(|p| assert_finite(p));
    }

    // A NaN planted by hand in the newest checkpoint, here and on the remote: `--resume latest`
    // skips both copies and continues from step_6, to a finite end.
    plant_nan(&ckpt("step_8"));
    std::fs::copy(ckpt("step_8"), remote.join("step_8.safetensors")).unwrap();
    let out = clip_train(&resume_latest(&args), &srv.env, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let skipped = format!(
        "skipping checkpoint: {}: not finite (NaN or inf in ",
        ckpt("step_8").display()
    );
    assert!(err.contains(&skipped), "{err}");
    assert!(
        err.contains("skipping remote checkpoint checkpoints/step_8.safetensors: ")
            && err.contains("step_8.safetensors: not finite (NaN or inf in "),
        "{err}"
    );
    let resumed = format!("=> resuming checkpoint '{}'", ckpt("step_6").display());
    assert!(err.contains(&resumed), "{err}");
    // Steps 7 to 9 trained again: step_8 rewritten, finite, and the run's end.
    assert_finite(&ckpt("step_8"));
    assert_finite(&ckpt("epoch_3"));
    drop(srv);
    let _ = std::fs::remove_dir_all(&logs);
}

/// Two ranks, gradient clipping on: rank 1's gradients are infinite for steps 3 to 10. The
/// averaged gradients are infinite on both ranks, so both skip the same steps (rank 0 logs the
/// count), the checkpoints written during the streak are step 2's weights, and at the 8th
/// skipped step in a row both ranks stop (exit 1, not the watchdog's 70) naming step_8.
#[test]
fn eight_skipped_steps_in_a_row_stop_every_rank() {
    let logs = tempdir("nonfinite-ddp");
    let flags = "--dataset-type synthetic --train-num-samples 96 --batch-size 4 --epochs 1 \
                 --model clip_tiny_test --lr 1e-3 --warmup 2 --log-every-n-steps 1 --seed 3 \
                 --grad-clip-norm 1.0 --save-every-n-steps 2";
    let children = spawn_world_with(2, &|_| cli(flags, "s", &logs, &[]), 60, &|rank, cmd| {
        if rank == 1 {
            cmd.env("CLIP_TRAIN_TEST_INF_GRADS_AT_STEP", "3-10:1");
        }
    });
    let outs = wait_all(children);
    let ckpts = logs.join("s/checkpoints");
    let step8 = ckpts.join("step_8.safetensors");
    for (rank, out) in outs.iter().enumerate() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "rank {rank}: {err}");
        let why = "8 steps in a row were skipped for non-finite gradients (steps 3 to 10, epoch 0; CLIP_TRAIN_MAX_SKIPPED): the run diverged, stopping";
        assert!(err.contains(why), "rank {rank}: {err}");
    }
    let log = std::fs::read_to_string(logs.join("s/out.log")).unwrap();
    let newest = format!("newest finite checkpoint: {}", step8.display());
    assert!(log.contains(&newest), "{log}");
    assert_eq!(skipped_counts(&log), [0, 0, 1, 2, 3, 4, 5, 6, 7], "{log}");
    let names = ["step_2", "step_4", "step_6", "step_8"];
    let want: Vec<String> = names.iter().map(|n| format!("{n}.safetensors")).collect();
    assert_eq!(files(&ckpts), want);
    assert_bitwise_equal(&ckpts.join("step_2.safetensors"), &step8);
    let _ = std::fs::remove_dir_all(&logs);
}

/// Whatever the `--opt`, a step with non-finite gradients is skipped on the device: with Lion
/// (foreach updates on copies written back by `torch.where`) and Muon (Newton–Schulz on the
/// matrices, its AdamW fallback on the rest), steps 3 and 4 of 4 leave step 2's checkpoint bit
/// for bit, optimizer state included, the optimizer counting 2 steps and the log 0, 0, 1, 2
/// skipped. (The library test `optim_golden` skips a step with every optimizer.)
#[test]
fn other_optimizers_skip_non_finite_steps_too() {
    let logs = tempdir("nonfinite-opt");
    for opt in ["timm/lion", "timm/muon"] {
        let name = opt.replace('/', "-");
        let flags = "--dataset-type synthetic --train-num-samples 16 --batch-size 4 --epochs 1 \
                     --model clip_tiny_test --lr 1e-3 --warmup 1 --log-every-n-steps 1 --seed 3 \
                     --save-every-n-steps 2";
        let args = cli(flags, &name, &logs, &["--opt", opt]);
        let out = clip_train(&args, &[], &[("CLIP_TRAIN_TEST_INF_GRADS_AT_STEP", "3-4")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{opt}: {err}");
        let ckpt = |n: &str| {
            logs.join(&name)
                .join(format!("checkpoints/{n}.safetensors"))
        };
        assert_bitwise_equal(&ckpt("step_2"), &ckpt("step_4"));
        let state = checkpoint::peek_state(&ckpt("step_4")).unwrap();
        assert_eq!((state.step, state.optimizer_step), (4, Some(2)), "{opt}");
        let log = std::fs::read_to_string(logs.join(&name).join("out.log")).unwrap();
        assert_eq!(skipped_counts(&log), [0, 0, 1, 2], "{opt}: {log}");
    }
    let _ = std::fs::remove_dir_all(&logs);
}
